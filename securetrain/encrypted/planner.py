"""Choose CKKS parameters from a compiled model's depth and value range, before any encryption.

Every affine map and every square uses one level of the coefficient-modulus chain
(one rescale by one prime). A chain for depth ``d`` is ``[q0, s, ..., s (d times), q0]``:
``s`` bits per level (the scale), ``q0 = s + integer bits`` for the final value, and a
special prime for key switching, as large as ``q0`` and larger where rotations follow a
rescale (the latency packing's expanded layer) so their noise stays below the scale's. At 128-bit security the total is
capped (HE standard): 109 bits at N=4096, 218 at 8192, 438 at 16384, 881 at 32768. The
planner takes the smallest ring whose cap fits the depth with a scale of at least
``min_scale_bits`` and then the largest scale that fits (for each ring and layout variant the
packing prices the layout once, :meth:`~securetrain.encrypted.packing.Packing.cost`); the
result is an :class:`~securetrain.encrypted.params.EncryptionPlan`. If nothing fits it raises
:class:`EncryptionError` naming the depth, the cap and what to change, so "scale out of
bounds" never surfaces halfway through an encrypted forward pass.

Example:
    >>> import torch
    >>> from securetrain.models import build_model
    >>> from securetrain.encrypted.compiler import compile_model
    >>> cm = compile_model(build_model("he", (1, 8, 8), 10), (1, 8, 8), calibration=torch.rand(8, 1, 8, 8))
    >>> p = plan(cm, "throughput")
    >>> p.poly_modulus_degree, p.depth, sum(p.coeff_mod_bit_sizes) <= 218, p.security_bits
    (8192, 3, True, 128)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from securetrain.encrypted.compiler import Affine, CompiledModel
from securetrain.encrypted.costmodel import relative_seconds
from securetrain.encrypted.packing import get_packing
from securetrain.encrypted.params import (
    MAX_COEFF_BITS_128,
    MAX_PRIME_BITS,
    SECURITY_BITS,
    EncryptionPlan,
    ckks_primes,
)
from securetrain.errors import EncryptionError


def value_bounds(compiled: CompiledModel, input_bound: float | None) -> float:
    """Largest magnitude of any intermediate value: measured (calibration) or interval arithmetic."""
    if compiled.calibration is not None:
        return compiled.calibration.value_bound
    if input_bound is None:
        raise EncryptionError(
            "the planner needs the range of the values: compile with calibration=x (a few samples of real "
            "inputs) or pass input_bound=max |input value|"
        )
    b = np.full(compiled.input_size, float(abs(input_bound)))
    worst = float(b.max())
    for op in compiled.ops:
        if isinstance(op, Affine):
            b = np.asarray(abs(op.weight) @ b).ravel() + np.abs(op.bias)
        else:
            b = b * b
        worst = max(worst, float(b.max()) if b.size else 0.0)
    return worst


def estimate_error(
    compiled: CompiledModel,
    poly_modulus_degree: int,
    scale_bits: int,
    *,
    extra_first_level: bool = False,
    key_switches: list[int] | None = None,
    input_bound: float | None = None,
    special_bits: int | None = None,
    rotation_amplification: float = 0.0,
    rescale_terms: list[int] | None = None,
    product_widths: list[int] | None = None,
    safety: float = 6.0,
) -> float:
    """A heuristic bound on the absolute error of each decrypted output.

    Each operation (fresh encryption, rescale, relinearisation, rotation) adds noise of
    about ``N / 2^s`` per slot (measured on this stack: the largest error of a fresh
    ciphertext over all slots), and weights are rounded to ``2^-(s+1)``. Noise is pushed
    through the chain as random noise: an affine map scales it by the largest L2 norm of a
    row of ``W``, a square by twice the largest value it squares (from the calibration
    data); an output summed from ``k`` separately rescaled products gains ``sqrt(k)`` times
    the per-operation noise; the weights' rounding enters once per slot a product multiplies
    (``product_widths``; default the map's input features). Key switches done after a rescale add ``N * 3.2 * levels / P`` each (``P`` the
    special prime), times ``rotation_amplification`` for rotate-and-sum. The result is
    multiplied by ``safety``. An estimate, not a guarantee; the tests compare it with
    measured errors.
    """
    eta = poly_modulus_degree / 2.0**scale_bits
    quant = 2.0 ** -(scale_bits + 1)
    cal = compiled.calibration
    in_max = cal.input_max if cal is not None else float(abs(input_bound or 1.0))
    op_max = cal.op_max if cal is not None else None
    delta = eta + in_max * quant
    prev_max = in_max
    switches = list(key_switches or [])
    affine_idx = 0
    for k, op in enumerate(compiled.ops):
        cur_max = op_max[k] if op_max is not None else prev_max
        if isinstance(op, Affine):
            ks = switches[affine_idx] if affine_idx < len(switches) else 0
            terms = rescale_terms[affine_idx] if rescale_terms and affine_idx < len(rescale_terms) else 1
            width = product_widths[affine_idx] if product_widths and affine_idx < len(product_widths) else 0
            width = max(width, op.in_features)
            w = op.weight
            row_l2 = float(np.sqrt(np.max(np.asarray(w.multiply(w).sum(axis=1)).ravel()))) if w.nnz else 0.0
            delta = (
                row_l2 * delta + (math.sqrt(max(terms, 1)) + math.sqrt(ks)) * eta + math.sqrt(width) * prev_max * quant
            )
            if extra_first_level and affine_idx == 0:
                delta += eta + cur_max * quant
                if rotation_amplification and special_bits:
                    levels = len(compiled.ops) + 2
                    delta += rotation_amplification * poly_modulus_degree * 3.2 * levels / 2.0**special_bits
            affine_idx += 1
        else:
            delta = 2.0 * prev_max * delta + delta * delta + eta
        prev_max = cur_max
    return safety * delta


def plan(
    compiled: CompiledModel,
    mode: str = "throughput",
    *,
    poly_modulus_degree: int | None = None,
    max_poly_modulus_degree: int = 32768,
    min_scale_bits: int = 26,
    max_scale_bits: int = 50,
    headroom_bits: int = 2,
    input_bound: float | None = None,
    variants: Sequence[str] | None = None,
) -> EncryptionPlan:
    """The CKKS parameters for ``compiled`` under packing ``mode`` at 128-bit security.

    Each of the packing's ``variants`` (default: all) is laid out in the smallest ring it fits;
    when the packing counts its operations the variant with the lowest estimated cost
    (:func:`~securetrain.encrypted.costmodel.relative_seconds`) wins and the plan records why
    (:attr:`~securetrain.encrypted.params.EncryptionPlan.choice`), else the first that fits.

    ``headroom_bits`` of margin are kept above the largest value seen in calibration
    (inputs far outside the calibration range can overflow silently, as in any CKKS
    deployment). Raises :class:`EncryptionError` before anything is encrypted if no ring
    fits.
    """
    packing = get_packing(mode)
    if not 20 <= min_scale_bits <= max_scale_bits <= MAX_PRIME_BITS - 1:
        raise EncryptionError(
            f"need 20 <= min_scale_bits <= max_scale_bits <= {MAX_PRIME_BITS - 1}, got {min_scale_bits} and {max_scale_bits}"
        )
    if poly_modulus_degree is not None and poly_modulus_degree not in MAX_COEFF_BITS_128:
        raise EncryptionError(
            f"poly_modulus_degree must be one of {sorted(MAX_COEFF_BITS_128)}, got {poly_modulus_degree}"
        )
    bound = value_bounds(compiled, input_bound)
    if not math.isfinite(bound):
        raise EncryptionError("the model's intermediate values are unbounded (non-finite); check the weights")
    int_bits = max(1, math.ceil(math.log2(max(bound, 1e-12)))) + headroom_bits + 1
    if int_bits + min_scale_bits > MAX_PRIME_BITS:
        raise EncryptionError(
            f"values reach {bound:.3g}, which needs {int_bits} integer bits on top of a {min_scale_bits}-bit scale: "
            f"more than the {MAX_PRIME_BITS} bits of one prime. Rescale the model's inputs or weights (e.g. "
            "normalise inputs to [0, 1]) or lower min_scale_bits"
        )
    candidates = (
        [poly_modulus_degree]
        if poly_modulus_degree
        else [n for n in sorted(MAX_COEFF_BITS_128) if n <= max_poly_modulus_degree]
    )
    if not candidates:
        raise EncryptionError(f"max_poly_modulus_degree={max_poly_modulus_degree} is below the smallest ring (4096)")
    allowed = packing.variants if variants is None else tuple(variants)
    unknown = [v for v in allowed if v not in packing.variants]
    if unknown or not allowed:
        raise EncryptionError(
            f"{packing.name} packing has no variant {(unknown or [''])[0]!r}; choose from {', '.join(packing.variants)}"
        )
    reasons: list[str] = []
    depth = None
    # per variant, the smallest ring it fits in; with operation counts the cheapest variant wins
    fits: dict[str, tuple[float, EncryptionPlan]] = {}
    for n in candidates:
        slots = n // 2
        limit = MAX_COEFF_BITS_128[n]
        for variant in allowed:
            if variant in fits:
                continue
            cost = packing.cost(compiled, slots, variant)  # the layout, worked out once per ring and variant
            if cost.reason is not None:
                reasons.append(f"N={n} ({variant}): {cost.reason}")
                continue
            depth = cost.depth
            amp = cost.rotation_amplification
            # special prime: at least q0, and large enough that key switching after a rescale stays
            # below the scale's noise (see estimate_error)
            ks_bits = math.ceil(math.log2(3.2 * (depth + 2) * amp)) + 1 if amp > 0 else 0
            extra = max(int_bits, ks_bits)
            s = min(max_scale_bits, MAX_PRIME_BITS - extra, (limit - int_bits - extra) // (depth + 2))
            if s < max(min_scale_bits, math.ceil(math.log2(2 * n)) + 6):
                reasons.append(f"N={n} ({variant}): depth {depth} leaves a {s}-bit scale")
                continue
            q0 = s + int_bits
            bits = (q0, *([s] * depth), s + extra)
            try:
                ckks_primes(n, bits)
            except EncryptionError as exc:
                reasons.append(f"N={n} ({variant}): {exc}")
                continue
            err = estimate_error(
                compiled,
                n,
                s,
                extra_first_level=cost.extra_first_level,
                key_switches=list(cost.key_switches),
                input_bound=input_bound,
                special_bits=s + extra,
                rotation_amplification=amp,
                rescale_terms=list(cost.rescales_per_output),
                product_widths=list(cost.product_widths),
            )
            result = EncryptionPlan(
                mode=packing.name,
                poly_modulus_degree=n,
                coeff_mod_bit_sizes=bits,
                scale_bits=s,
                depth=depth,
                int_bits=int_bits,
                value_bound=bound,
                estimated_error=err,
                galois_keys=cost.galois_keys,
                variant=variant,
                notes=cost.notes,
            )
            result.check()
            if not cost.operations:  # no cost model: the first variant that fits, in order of preference
                return result
            fits[variant] = (relative_seconds(n, depth, dict(cost.operations)), result)
    if fits:
        ranked = sorted(fits.items(), key=lambda kv: (kv[1][0], allowed.index(kv[0])))
        best = ranked[0][1][1]
        if len(ranked) == 1:
            return best
        others = ", ".join(f"{v} ~{c:.3g} s at N={p.poly_modulus_degree}" for v, (c, p) in ranked[1:])
        choice = (
            f"{best.variant}: cheapest by estimated cost (~{ranked[0][1][0]:.3g} s per request on the reference "
            f"machine; {others})"
        )
        return dataclasses.replace(best, choice=choice)
    base = compiled.depth
    if depth is None:
        raise EncryptionError(
            f"{packing.name} packing cannot lay out this model in any allowed ring ({'; '.join(reasons)}); "
            "use mode='throughput' or a larger max_poly_modulus_degree"
        )
    n = candidates[-1]
    limit = MAX_COEFF_BITS_128[n]
    max_depth = max(0, (limit - 2 * (min_scale_bits + int_bits)) // min_scale_bits)
    raise EncryptionError(
        f"the model needs multiplicative depth {depth} ({compiled.n_affine} affine maps + {compiled.n_square} squares"
        f"{' + 1 packing level' if depth > base else ''}), but at 128-bit security the largest allowed ring "
        f"(N={n}) has {limit} modulus bits: enough for depth {max_depth} at a {min_scale_bits}-bit scale with "
        f"{int_bits} integer bits. Reduce the depth (fewer activations or non-adjacent linear layers; adjacent "
        f"linear layers fuse for free), lower min_scale_bits (less precision) or allow a larger "
        f"max_poly_modulus_degree"
    )


# EncryptionPlan and the caps live in securetrain.encrypted.params; re-exported here, where they were first defined.
__all__ = [
    "MAX_COEFF_BITS_128",
    "MAX_PRIME_BITS",
    "SECURITY_BITS",
    "EncryptionPlan",
    "ckks_primes",
    "estimate_error",
    "plan",
    "value_bounds",
]
