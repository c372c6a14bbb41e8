"""What a plan will cost before anything is encrypted: time per sample and per batch, sizes.

:func:`measure_primitives` times TenSEAL's primitive operations at a plan's parameters on this
machine (a fresh context, a few repetitions of each: about a second); :func:`estimate_plan`
counts the operations the server program of an :class:`~securetrain.encrypted.server.EncryptedModel`
performs and multiplies. Primitives are timed on fresh (top-level) ciphertexts, which are the
slowest, so estimates lean high.

Example:
    >>> import torch
    >>> from securetrain.models import build_model
    >>> from securetrain.encrypted.server import EncryptedModel
    >>> em = EncryptedModel.build(build_model("he", (1, 8, 8), 10, hidden=4), calibration=torch.rand(8, 1, 8, 8))
    >>> est = estimate_plan(em, samples=100)
    >>> est.requests, est.request_bytes > 0, est.total_s > 0
    (1, True, True)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from securetrain.encrypted.keys import naf

if TYPE_CHECKING:
    from securetrain.encrypted.latency import LatencyProgram
    from securetrain.encrypted.params import EncryptionPlan
    from securetrain.encrypted.server import EncryptedModel
    from securetrain.encrypted.throughput import ThroughputProgram


@dataclass(frozen=True)
class Primitives:
    """Seconds per primitive operation and bytes per object at one plan's parameters."""

    encrypt_s: float
    mul_scalar_s: float
    mul_vector_s: float
    add_s: float
    square_s: float
    rotate_s: float
    decrypt_s: float
    mul_plain_s: float
    """A product by a pre-encoded plaintext (SEAL's ``multiply_plain``), plus one addition."""
    ciphertext_bytes: int
    base_context_bytes: int
    galois_key_bytes: int
    mac_s: float = 0.0
    """SEAL: one ciphertext-times-scalar product added into a partial sum (no rescale)."""
    rescale_s: float = 0.0
    """SEAL: one rescale."""
    seeded_encrypt_s: float = 0.0
    """One secret-key encryption in SEAL's seeded form, serialised (a streamed request's frame)."""
    seeded_bytes: int = 0
    """Bytes of one such frame."""
    full_encrypt_s: float = 0.0
    """One secret-key encryption with both polynomials, serialised (a frame the fused residue program reads)."""
    residue_term_s: float = 0.0
    """Residues: one input ciphertext times one weight inside a matrix product, all primes."""
    residue_square_s: float = 0.0
    """Residues: one ciphertext squared (three polynomials), all primes."""
    relin_s: float = 0.0
    """SEAL: one relinearisation at the top level."""
    full_bytes: int = 0
    """Bytes of one complete secret-key frame."""


def _best(fn: Any, reps: int = 3) -> float:
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


@lru_cache(maxsize=8)
def _measure(n: int, bits: tuple[int, ...], scale_bits: int) -> Primitives:
    import tenseal as ts
    from tenseal import sealapi

    from securetrain.encrypted.keys import public_context_bytes
    from securetrain.encrypted.sealbridge import SealTools, SeededEncryptor, seal_ciphertext

    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=n, coeff_mod_bit_sizes=list(bits))
    ctx.global_scale = 2.0**scale_bits
    if not ctx.has_relin_keys():
        ctx.generate_relin_keys()
    slots = n // 2
    values = np.random.default_rng(0).uniform(-1, 1, slots).tolist()
    v = ts.ckks_vector(ctx, values)
    w = ts.ckks_vector(ctx, values)
    encrypt_s = _best(lambda: ts.ckks_vector(ctx, values))
    mul_scalar_s = _best(lambda: v * 0.5)
    mul_vector_s = _best(lambda: v * values)
    add_s = _best(lambda: v + w)
    square_s = _best(lambda: v.square())
    decrypt_s = _best(lambda: v.decrypt(), reps=2)
    base = public_context_bytes(ctx, None)
    with_key = public_context_bytes(ctx, [1])
    ctx_one = ts.context_from(with_key)
    evaluator = sealapi.Evaluator(ctx_one.seal_context().data)
    keys = ctx_one.galois_keys().data
    ct = ts.ckks_vector(ctx_one, values).ciphertext()[0]
    out = sealapi.Ciphertext()
    rotate_s = _best(lambda: evaluator.rotate_vector(ct, 1, keys, out))
    plain = sealapi.Plaintext()
    sealapi.CKKSEncoder(ctx_one.seal_context().data).encode(values, ct.parms_id(), 2.0**scale_bits, plain)
    mul_plain_s = _best(lambda: evaluator.multiply_plain(ct, plain, out)) + _best(lambda: evaluator.add(ct, ct, out))
    tools = SealTools(ctx)
    fresh = seal_ciphertext(v)
    weight = tools.scalar(0.5, fresh, float(tools.prime(fresh)))
    acc, tmp = tools.new_ciphertext(), tools.new_ciphertext()
    tools.evaluator.multiply_plain(fresh, weight, acc)

    def mac() -> None:
        tools.evaluator.multiply_plain(fresh, weight, tmp)
        tools.evaluator.add_inplace(acc, tmp)

    def product_and_rescale() -> None:
        tools.evaluator.multiply_plain(fresh, weight, tmp)
        tools.evaluator.rescale_to_next_inplace(tmp)

    mac_s = _best(mac)
    rescale_s = max(0.0, _best(product_and_rescale) - mac_s)
    seeded = SeededEncryptor(ctx)
    seeded_encrypt_s = _best(lambda: seeded.encrypt(values))
    full_encrypt_s = _best(lambda: seeded.encrypt_complete(values))
    residue_term_s, residue_square_s = _residue_costs(ctx)
    big = tools.new_ciphertext()
    tools.evaluator.square(fresh, big)
    relin_out = tools.new_ciphertext()
    relin_s = _best(lambda: tools.evaluator.relinearize(big, tools.relin_keys, relin_out))
    return Primitives(
        encrypt_s=encrypt_s,
        mul_scalar_s=mul_scalar_s,
        mul_vector_s=mul_vector_s,
        add_s=add_s,
        square_s=square_s,
        rotate_s=rotate_s,
        decrypt_s=decrypt_s,
        mul_plain_s=mul_plain_s,
        ciphertext_bytes=len(v.serialize()),
        base_context_bytes=len(base),
        galois_key_bytes=max(0, len(with_key) - len(base)),
        mac_s=mac_s,
        rescale_s=rescale_s,
        seeded_encrypt_s=seeded_encrypt_s,
        seeded_bytes=len(seeded.encrypt(values)),
        full_encrypt_s=full_encrypt_s,
        full_bytes=len(seeded.encrypt_complete(values)),
        residue_term_s=residue_term_s,
        residue_square_s=residue_square_s,
        relin_s=relin_s,
    )


def _residue_costs(ctx: Any) -> tuple[float, float]:
    """Seconds per input-ciphertext-times-weight term of a residue matrix product (a 64 x 64
    block, all primes, float64 limbs) and per residue square of one ciphertext."""
    from securetrain.encrypted import rns

    data = ctx.seal_context().data
    top = data.get_context_data(data.first_parms_id())
    primes = [int(m.value()) for m in top.parms().coeff_modulus()]
    n = int(top.parms().poly_modulus_degree())
    rng = np.random.default_rng(0)
    block = 64
    w = rng.integers(-(2**18), 2**18, size=(block, block)).astype(np.float64)
    x = rng.integers(0, primes[-1], size=(block, 2 * n), dtype=np.uint64)
    plans = [rns.LimbPlan.for_modulus(q, 2**18, 845) for q in primes]

    def products() -> None:
        for q, lp in zip(primes, plans):
            parts = rns.split_limbs(x, lp)
            rns.join_limbs([w @ part for part in parts], q, lp)

    c = x[:1]

    def squares() -> None:
        for q in primes:
            rns.square(c[:, :n], c[:, n:], q)

    return _best(products, reps=2) / (block * block), _best(squares)


def measure_primitives(plan: EncryptionPlan) -> Primitives:
    """Time the primitives at ``plan``'s ring and modulus chain (cached per parameters)."""
    return _measure(plan.poly_modulus_degree, tuple(plan.coeff_mod_bit_sizes), plan.scale_bits)


@dataclass(frozen=True)
class PlanEstimate:
    """The cost of serving ``samples`` samples under one plan, worked out before encrypting."""

    mode: str
    variant: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    depth: int
    galois_keys: int
    public_context_bytes: int
    samples: int
    samples_per_request: int
    requests: int
    request_bytes: int
    response_bytes: int
    request_s: float
    operations: dict[str, int]
    choice: str = ""
    """Why the planner chose this variant (its estimated cost against the others), if it chose by cost."""
    server_memory_bytes: int = 0
    """Ciphertexts a server holds at once for one request (throughput streams: the open partial sums)."""

    @property
    def per_sample_s(self) -> float:
        return self.total_s / max(self.samples, 1)

    @property
    def total_s(self) -> float:
        return self.request_s * self.requests

    def lines(self) -> list[str]:
        """The plan and the estimate, one fact per line (what ``securetrain encrypt`` prints)."""
        ops = ", ".join(f"{k} {v}" for k, v in self.operations.items() if v)
        return (
            [
                f"plan                  CKKS {self.mode} ({self.variant}), N={self.poly_modulus_degree}, "
                f"chain {list(self.coeff_mod_bit_sizes)}, depth {self.depth}",
                f"keys                  public context ~{self.public_context_bytes / 1e6:.1f} MB "
                f"({self.galois_keys} Galois keys)",
                f"per request           {self.samples_per_request} samples, ~{self.request_bytes / 1e6:.1f} MB up, "
                f"~{self.response_bytes / 1e6:.1f} MB down, ~{self.request_s:.2f} s ({ops})",
                f"estimate              ~{self.per_sample_s * 1e3:.2f} ms per sample, ~{self.total_s:.1f} s for "
                f"{self.samples} samples in {self.requests} requests",
            ]
            + (
                [
                    f"server memory         ~{self.server_memory_bytes / 1e6:.0f} MB of ciphertexts per request (streamed)"
                ]
                if self.server_memory_bytes
                else []
            )
            + ([f"choice                {self.choice}"] if self.choice else [])
        )


def _latency_ops(program: LatencyProgram, slots: int) -> dict[str, int]:
    ops = {"vector products": 0, "rotations": 0, "squares": 0}
    for step in program.steps:
        if step[0] == "square":
            ops["squares"] += 1
        elif step[0] == "expanded":
            rows = int(step[3])
            ops["vector products"] += 2
            ops["rotations"] += int(math.log2(slots // rows))
        else:
            period = len(step[1])
            ops["vector products"] += period
            ops["rotations"] += sum(len(naf(i)) for i in range(1, period))
    return ops


def _seal_program_s(program: ThroughputProgram, p: Primitives) -> float:
    """Seconds of a throughput program on SEAL's evaluator: unrescaled products added into partial
    sums, one rescale per output, squares (relinearised and rescaled)."""
    return program.macs * p.mac_s + program.rescales * p.rescale_s + program.squares * p.square_s


def estimate_plan(em: EncryptedModel, samples: int, *, primitives: Primitives | None = None) -> PlanEstimate:
    """Estimate time and sizes for ``samples`` samples under ``em``'s plan (see the module docstring)."""
    from securetrain.encrypted.bsgs import BSGSProgram
    from securetrain.encrypted.fused import FusedProgram
    from securetrain.encrypted.latency import LatencyProgram
    from securetrain.encrypted.throughput import ThroughputProgram

    plan = em.plan
    p = primitives if primitives is not None else measure_primitives(plan)
    samples = max(1, int(samples))
    outputs = em.compiled.output_size
    memory = 0
    fused = FusedProgram.build(em.compiled, plan) if isinstance(em.program, ThroughputProgram) else None
    if fused is not None:
        terms = fused.cost_terms()
        tail = fused.tail_program
        features = em.compiled.input_size
        ops = {
            **terms,
            "scalar products": tail.macs,
            "rescales": 3 * fused.widths[2] + tail.rescales,
            "squares": tail.squares,
        }
        per_request = min(samples, plan.slots)
        # streamed: complete secret-key frames; the first three steps on residues, the rest on SEAL's evaluator
        request_s = (
            features * p.full_encrypt_s
            + (terms["step-1 terms"] + 1.5 * terms["step-3 terms"]) * p.residue_term_s
            + terms["residue squares"] * p.residue_square_s
            + terms["loaded into SEAL"] * (3 * p.rescale_s + p.relin_s)
            + _seal_program_s(tail, p)
            + outputs * p.decrypt_s
        )
        request_bytes = features * p.full_bytes
        response_bytes = outputs * p.ciphertext_bytes
        memory = fused.memory_bytes()
        keys = 0
    elif isinstance(em.program, ThroughputProgram):
        prog = em.program
        features = em.compiled.input_size
        ops = {"scalar products": prog.macs, "rescales": prog.rescales, "squares": prog.squares}
        per_request = min(samples, plan.slots)
        # streamed: seeded encryption on the client, products summed before one rescale on the server
        request_s = features * p.seeded_encrypt_s + _seal_program_s(prog, p) + outputs * p.decrypt_s
        request_bytes = features * p.seeded_bytes
        response_bytes = outputs * p.ciphertext_bytes
        data_primes = len(plan.coeff_mod_bit_sizes) - 1
        memory = sum(
            n * 2 * (data_primes - level) * plan.poly_modulus_degree * 8
            for n, level in zip(prog.peak_open, prog.open_levels)
        )
        keys = 0
    elif isinstance(em.program, BSGSProgram):
        structure = em.program.structure
        ops = structure.operations()
        per_request = 1
        cts = ops["input ciphertexts"]
        request_s = (
            cts * p.encrypt_s
            + ops["plain products"] * p.mul_plain_s
            + ops["rotations"] * (p.rotate_s + p.add_s)
            + ops["squares"] * p.square_s
            + p.decrypt_s
        )
        request_bytes = cts * p.ciphertext_bytes
        response_bytes = p.ciphertext_bytes
        keys = len(structure.galois_steps)
    elif isinstance(em.program, LatencyProgram):
        ops = _latency_ops(em.program, plan.slots)
        per_request = 1
        request_s = (
            p.encrypt_s
            + ops["vector products"] * (p.mul_vector_s + p.add_s)
            + ops["rotations"] * p.rotate_s
            + ops["squares"] * p.square_s
            + p.decrypt_s
        )
        request_bytes = response_bytes = p.ciphertext_bytes
        keys = len(em.layout.get("galois_steps") or ())
    else:  # a packing registered by someone else: no operation count to go by
        raise TypeError(f"no cost model for the {plan.mode} packing's program")
    return PlanEstimate(
        mode=plan.mode,
        variant=plan.variant,
        poly_modulus_degree=plan.poly_modulus_degree,
        coeff_mod_bit_sizes=tuple(plan.coeff_mod_bit_sizes),
        depth=plan.depth,
        galois_keys=keys,
        public_context_bytes=p.base_context_bytes + keys * p.galois_key_bytes,
        samples=samples,
        samples_per_request=per_request,
        requests=math.ceil(samples / per_request),
        request_bytes=request_bytes,
        response_bytes=response_bytes,
        request_s=request_s,
        operations=ops,
        choice=plan.choice,
        server_memory_bytes=memory,
    )


__all__ = ["PlanEstimate", "Primitives", "estimate_plan", "measure_primitives"]
