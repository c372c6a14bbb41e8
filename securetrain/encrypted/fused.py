"""The throughput packing's first layers on the ciphertexts' residues, in numpy.

In the throughput packing every affine map is a weighted sum of whole ciphertexts. SEAL's
evaluator computes one ciphertext-times-scalar product per weight (he-mnist: ~106 000 of them
per chunk), each a pass over all of a ciphertext's residues. On the residues themselves the same
sums are a few matrix products per prime, which BLAS computes exactly (see
:mod:`securetrain.encrypted.rns`). A model whose compiled program begins ``affine, square,
affine`` (a convolution or dense layer, the square activation, the next layer: every CryptoNets
or LoLa-shaped network) runs those three steps here, without rescaling in between:

1. ``y = W1 x + b1`` with ``W1`` rounded at the scale ``s1`` (inputs at the plan's scale ``D``):
   ``y`` at scale ``D s1``; the products are summed as the inputs stream in, a few at a time,
   and each output is finished as soon as its last input has arrived (a convolution holds only
   the outputs whose windows are open);
2. ``y^2`` coefficient by coefficient, left unrelinearised (three polynomials), scale
   ``(D s1)^2``;
3. ``z = W2 y^2 + b2`` with ``W2`` rounded at the scale ``s2``, summed into partial sums as the
   squares are finished.

``s1^2 s2 = D p1 p2 p3 / D^2`` (``p1..p3`` the three primes the three steps' rescales divide by),
split evenly (~2^19.3 each for he-mnist), so after the three rescales SEAL makes, the outputs are
back at the plan's scale with its levels left, exactly as if each step had been rescaled. Each
``z`` is then loaded into SEAL (uncompressed), relinearised once (at the top level, where its
noise is negligible), rescaled three times and handed to the rest of the program on SEAL's
evaluator (:class:`~securetrain.encrypted.throughput.ThroughputStream` from op 3 on). Relinearisations per chunk: one per output of step 3 instead of one per output of
step 1 (he-mnist: 100 instead of 845).

The inputs must be complete ciphertexts: SEAL's seeded form (what symmetric encryption saves)
cannot be expanded outside SEAL, so a throughput layout that this program can run asks the
client for complete secret-key ciphertexts (``layout["frames"] == "full"``); a seeded frame
still works, loaded and re-serialised through SEAL (slower).

Example:
    >>> import torch
    >>> from securetrain.models import build_model
    >>> from securetrain.encrypted.compiler import compile_model
    >>> from securetrain.encrypted.planner import plan
    >>> cm = compile_model(build_model("he-mnist", (1, 28, 28), 10), (1, 28, 28), calibration=torch.rand(4, 1, 28, 28))
    >>> fused = FusedProgram.build(cm, plan(cm, "throughput"))
    >>> fused.widths, fused.groups.window < 784     # a convolution holds only the inputs its open windows read
    ((784, 845, 100), True)
    >>> small = compile_model(build_model("he", (1, 8, 8), 10), (1, 8, 8), calibration=torch.rand(4, 1, 8, 8))
    >>> FusedProgram.build(small, plan(small, "throughput")) is None   # too few levels to skip two rescales
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from securetrain.encrypted import rns
from securetrain.encrypted.fusable import (
    STEP3_BATCH,
    WINDOW_SLACK,
    StepOneGroups,
    fusable,
    plan_groups,
    stream_bytes,
)
from securetrain.encrypted.packing import Group
from securetrain.encrypted.throughput import BlobStream, ThroughputProgram, ThroughputStream
from securetrain.errors import EncryptionError

if TYPE_CHECKING:
    from securetrain.encrypted.compiler import CompiledModel
    from securetrain.encrypted.params import EncryptionPlan


@dataclass(frozen=True)
class _Weights:
    """Integer weights and constants of the three fused steps for one set of primes."""

    s1: float
    s2: float
    w1: Any  # scipy CSR, int64, rows: step 1's ciphertext outputs
    w2: np.ndarray  # int64, rows: step 3's ciphertext outputs, columns: step 1's ciphertext outputs
    b1: np.ndarray  # per step-1 ciphertext output, float
    b2: np.ndarray  # per step-3 ciphertext output, float (plaintext step-1 outputs folded in)
    out1: np.ndarray  # indices of step 1's ciphertext outputs
    out3: np.ndarray  # indices of step 3's ciphertext outputs
    const3: np.ndarray  # per step-3 output: its value where it is a plaintext constant
    groups: StepOneGroups  # over the rows of ``w1``


class FusedProgram:
    """The first three steps (affine, square, affine) of a throughput program on residues, then the
    rest on SEAL's evaluator. :meth:`build` returns ``None`` where the model or plan does not fit."""

    def __init__(self, compiled: CompiledModel, plan: EncryptionPlan) -> None:
        from securetrain.encrypted.compiler import Affine

        if not fusable(compiled, plan):
            raise EncryptionError("this model and plan cannot run fused (see fusable); use FusedProgram.build")
        a1, a2 = compiled.ops[0], compiled.ops[2]
        if not (isinstance(a1, Affine) and isinstance(a2, Affine)):  # fusable checked it; for the type checker
            raise EncryptionError("the fused program needs affine steps 1 and 3")
        self.compiled = compiled
        self.plan = plan
        self.a1, self.a2 = a1, a2
        self.widths = (compiled.input_size, a1.out_features, a2.out_features)
        self._cache: dict[tuple[int, ...], _Weights] = {}
        self.groups = plan_groups(a1.weight)  # on the float weights: for the estimate and the scale split
        self.tail_program = ThroughputProgram(
            compiled, plan, start=3, inputs=(np.ones(a2.out_features, dtype=bool), np.zeros(a2.out_features))
        )

    def cost_terms(self) -> dict[str, int]:
        """What one chunk costs, in units the estimate times: input ciphertexts times weights in the
        step-1 and step-3 products (dense blocks; step 3's have three polynomials), squares on
        residues, ciphertexts loaded into SEAL (each rescaled three times and relinearised once)."""
        return {
            "step-1 terms": self.groups.terms,
            "step-3 terms": self.widths[1] * self.widths[2],
            "residue squares": self.widths[1],
            "loaded into SEAL": self.widths[2],
        }

    def memory_bytes(self) -> int:
        """Bytes of residues one stream holds at most (see :func:`securetrain.encrypted.fusable.stream_bytes`)."""
        return stream_bytes(self.plan, self.groups.window, self.groups.largest, self.widths[2])

    @classmethod
    def build(cls, compiled: CompiledModel, plan: EncryptionPlan) -> FusedProgram | None:
        """The fused program for ``compiled`` under ``plan``, or ``None`` where it does not apply
        (see :func:`securetrain.encrypted.fusable.fusable`)."""
        return cls(compiled, plan) if fusable(compiled, plan) else None

    def weights(self, primes: list[int], input_scale: float) -> _Weights:
        """The integer weights for a context's top-level ``primes`` (cached)."""
        key = (*primes, int(input_scale))
        if key not in self._cache:
            self._cache[key] = self._weights(primes, input_scale)
        return self._cache[key]

    def _weights(self, primes: list[int], input_scale: float) -> _Weights:
        p1, p2, p3 = primes[-1], primes[-2], primes[-3]
        target = float(self.plan.scale) * p1 * p2 * p3 / (input_scale * input_scale)
        w1 = self.a1.weight.tocsr().astype(np.float64)
        s1, s2 = _split_scale(
            target,
            primes,
            (_max_abs(w1.data) or 1.0, _max_abs(self.a2.weight.data) or 1.0),
            (self.groups.span, self.widths[1]),
            (self.groups.terms, 1.5 * self.widths[1] * self.widths[2]),
        )
        w1_int = w1.copy()
        w1_int.data = np.rint(w1_int.data * s1)
        w1_int.eliminate_zeros()
        w1_int = w1_int.astype(np.int64)
        counts = np.diff(w1_int.indptr)
        out1 = np.flatnonzero(counts > 0)
        const1 = np.flatnonzero(counts == 0)
        b1_all = self.a1.bias.astype(np.float64)
        w2 = self.a2.weight.toarray().astype(np.float64)
        b2_all = self.a2.bias.astype(np.float64) + w2[:, const1] @ (b1_all[const1] ** 2)
        w2_int = np.rint(w2[:, out1] * s2).astype(np.int64)
        has = (w2_int != 0).any(axis=1)
        out3 = np.flatnonzero(has)
        const3 = np.where(has, 0.0, b2_all)
        w1_rows = w1_int[out1]
        return _Weights(
            s1=s1,
            s2=s2,
            w1=w1_rows.tocsr(),
            w2=w2_int[out3],
            b1=b1_all[out1],
            b2=b2_all[out3],
            out1=out1,
            out3=out3,
            const3=const3,
            groups=plan_groups(w1_rows),
        )

    def tail(self, weights: _Weights) -> ThroughputProgram:
        """The program from op 3 on (SEAL's evaluator), its inputs the step-3 outputs."""
        is_ct = np.zeros(self.widths[2], dtype=bool)
        is_ct[weights.out3] = True
        return ThroughputProgram(self.compiled, self.plan, start=3, inputs=(is_ct, weights.const3))

    def open(self, context: Any, samples: int) -> FusedStream:
        """A stream evaluating one chunk of ``samples`` samples under (public) ``context``."""
        return FusedStream(self, context, samples)


class FusedStream(BlobStream):
    """One chunk through :class:`FusedProgram`: :meth:`feed_blob` each input's serialised
    ciphertext in feature order, then :meth:`finish`.

    Inputs are kept (as float64 limbs) only while a step-1 group still to be computed reads them;
    a group of step-1 outputs is computed once, from all its inputs, when its last one has
    arrived (see :func:`plan_groups`), squared and multiplied into step 3's sums, which
    accumulate unreduced (exact: the limb widths allow every term) until :meth:`finish`.
    """

    def __init__(self, program: FusedProgram, context: Any, samples: int) -> None:
        from securetrain.encrypted.sealbridge import SealTools

        self.program = program
        self.context = context
        self.samples = int(samples)
        self.received = 0
        self.tools = SealTools(context)
        seal_context = self.tools.seal_context
        top = seal_context.get_context_data(seal_context.first_parms_id())
        p = [int(v) for v in seal_context.first_parms_id()]
        self.parms_id = (p[0], p[1], p[2], p[3])
        self.primes = [int(m.value()) for m in top.parms().coeff_modulus()]
        self.degree = int(top.parms().poly_modulus_degree())
        if len(self.primes) != program.plan.depth + 1:
            raise EncryptionError("the context's levels do not match the plan")
        w = self.w = program.weights(self.primes, float(program.plan.scale))
        n3 = len(w.out3)
        self._limbs1 = [rns.LimbPlan.for_modulus(q, int(_max_abs(w.w1.data)), w.groups.span) for q in self.primes]
        self._limbs2 = [rns.LimbPlan.for_modulus(q, int(_max_abs(w.w2)), max(len(w.out1), 1)) for q in self.primes]
        # the inputs' limbs, per prime: inputs base .. base + count - 1, compacted when full
        rows = w.groups.window + WINDOW_SLACK
        self._inputs = [np.zeros((rows, lp.limbs * 2 * self.degree), dtype=np.float64) for lp in self._limbs1]
        self._base = 0
        self._count = 0
        self._partial3 = [
            [np.zeros((n3, 3 * self.degree), dtype=np.float64) for _ in range(lp.limbs)] for lp in self._limbs2
        ]
        self._next_group = 0
        self._squares: list[tuple[np.ndarray, np.ndarray]] = []  # step-1 outputs squared, not yet in step 3
        self._held_squares = 0
        self.input_scale: float | None = None
        self.version = (4, 1)  # SEAL's serialisation version, taken from the inputs
        self.peak_held = 0  # most inputs held at once

    def feed_blob(self, blob: bytes) -> None:
        from securetrain.encrypted.sealformat import SeededCiphertext, check_residues, ciphertext_bytes, read_vector

        index = self.received
        if index >= self.program.widths[0]:
            raise EncryptionError(f"the chunk already holds all {self.program.widths[0]} input ciphertexts")
        try:  # nothing larger than a fresh ciphertext of this context is inflated
            raw = read_vector(blob, max_bytes=ciphertext_bytes(2, len(self.primes), self.degree))
        except SeededCiphertext:
            raw = self._expand_seeded(blob)
        if raw.values != self.samples:
            raise EncryptionError(f"ciphertext {index} holds {raw.values} values, the chunk has {self.samples} samples")
        if raw.parms_id != self.parms_id or raw.data.shape != (2, len(self.primes), self.degree):
            raise EncryptionError(
                f"ciphertext {index} is not a fresh ciphertext at the top level of this context's parameters "
                f"(shape {raw.data.shape}); send freshly encrypted inputs"
            )
        if not np.isclose(raw.scale, self.program.plan.scale, rtol=1e-9):
            raise EncryptionError(
                f"ciphertext {index} has scale 2^{np.log2(raw.scale):.2f}, the plan uses 2^{np.log2(self.program.plan.scale):.0f}"
            )
        check_residues(raw.data, self.primes)
        if self.input_scale is None:
            self.input_scale, self.version = raw.scale, raw.version
        self._store(raw.data)
        self.received += 1
        groups = self.w.groups
        while self._next_group < len(groups.last) and groups.last[self._next_group] < self.received:
            self._finish_group(self._next_group)
            self._next_group += 1

    def _store(self, data: np.ndarray) -> None:
        """Append one input's limbs, first dropping the inputs no group still to come reads."""
        groups = self.w.groups
        if self._count == self._inputs[0].shape[0]:
            pending = groups.first[self._next_group :]
            keep_from = int(pending.min()) if len(pending) else self._base + self._count
            drop = keep_from - self._base
            if drop <= 0:
                raise EncryptionError("the fused program's input window is too small (a bug)")
            for buf in self._inputs:
                buf[: self._count - drop] = buf[drop : self._count]
            self._base += drop
            self._count -= drop
        row = self._count
        for level in range(len(self.primes)):
            parts = rns.split_limbs(data[:, level, :].reshape(-1), self._limbs1[level])
            self._inputs[level][row] = np.concatenate(parts)
        self._count += 1
        self.peak_held = max(self.peak_held, self._count)

    def _expand_seeded(self, blob: bytes) -> Any:
        """A seeded ciphertext, expanded by SEAL and read back (slow: SEAL re-serialises it)."""
        from securetrain.encrypted.sealformat import read_vector
        from securetrain.encrypted.wire import load_vector

        return read_vector(load_vector(blob, self.context).serialize())

    def _finish_group(self, k: int) -> None:
        w = self.w
        assert self.input_scale is not None
        scale1 = self.input_scale * w.s1
        members = w.groups.members[k]
        lo, hi = int(w.groups.first[k]), int(w.groups.last[k]) + 1
        sub = w.w1[members][:, lo:hi].toarray().astype(np.float64)
        n = len(members)
        sq = np.empty((n, 3, len(self.primes), self.degree), dtype=np.uint64)
        for level, q in enumerate(self.primes):
            lp = self._limbs1[level]
            prod = sub @ self._inputs[level][lo - self._base : hi - self._base]  # n x (limbs * 2N)
            width = 2 * self.degree
            parts = [prod[:, i * width : (i + 1) * width] for i in range(lp.limbs)]
            y = rns.join_limbs(parts, q, lp).reshape(n, 2, self.degree)
            bias = np.array([rns.constant_residue(w.b1[r], scale1, q) for r in members], dtype=np.uint64)
            c0 = rns.addmod(y[:, 0, :], bias[:, None], q)
            s0, s1, s2 = rns.square(c0, y[:, 1, :], q)
            sq[:, 0, level, :], sq[:, 1, level, :], sq[:, 2, level, :] = s0, s1, s2
        self._squares.append((members, sq))
        self._held_squares += n
        if self._held_squares >= STEP3_BATCH:
            self._flush_squares()

    def _flush_squares(self) -> None:
        """Multiply the held squares into step 3's sums (one product per prime and limb: a sum over
        few terms would read and write all of step 3's sums for little arithmetic)."""
        if not self._squares:
            return
        members = np.concatenate([m for m, _ in self._squares])
        sq = np.concatenate([q for _, q in self._squares])
        self._squares, self._held_squares = [], 0
        weights = self.w.w2[:, members].astype(np.float64)
        for level in range(len(self.primes)):
            pieces = rns.split_limbs(sq[:, :, level, :].reshape(len(members), -1), self._limbs2[level])
            for acc, piece in zip(self._partial3[level], pieces):
                acc += weights @ piece

    def finish(self) -> Group:
        from securetrain.encrypted.sealbridge import seal_ciphertext
        from securetrain.encrypted.sealformat import RawCiphertext, vector_blob
        from securetrain.encrypted.wire import load_vector

        n_in = self.program.widths[0]
        if self.received != n_in:
            raise EncryptionError(f"the chunk ended after {self.received} of {n_in} input ciphertexts")
        assert self.input_scale is not None and self._next_group == len(self.w.groups.last)
        self._flush_squares()
        w = self.w
        scale3 = (self.input_scale * w.s1) ** 2 * w.s2
        tail = ThroughputStream(self.program.tail(w), self.context, self.samples)
        ev, tools = self.tools.evaluator, self.tools
        n3 = len(w.out3)
        z = np.empty((n3, 3, len(self.primes), self.degree), dtype=np.uint64)
        for level, q in enumerate(self.primes):
            z[:, :, level, :] = rns.join_limbs(self._partial3[level], q, self._limbs2[level]).reshape(
                n3, 3, self.degree
            )
            bias = np.array([rns.constant_residue(b, scale3, q) for b in w.b2], dtype=np.uint64)
            rns.addmod(z[:, 0, level, :], bias[:, None], q)
        self._partial3 = []
        for k, out in enumerate(w.out3.tolist()):
            raw = RawCiphertext(
                parms_id=self.parms_id, scale=scale3, data=z[k], values=self.samples, version=self.version
            )
            ct = seal_ciphertext(load_vector(vector_blob(raw), self.context))
            # relinearised at the top level, where its key-switching noise is ~2^-90 of the value; a
            # three-polynomial rescale would also round with the square of the secret key
            ev.relinearize_inplace(ct, tools.relin_keys)
            for _ in range(3):
                ev.rescale_to_next_inplace(ct)
            tail.feed_seal(out, ct)
        return tail.finish()


def _max_abs(values: Any) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.abs(arr).max()) if arr.size else 0.0


MIN_SCALE_BITS = 17.0  # weights rounded at 2^-18 or finer (he-mnist: logit errors ~4e-4 at worst)


def _split_scale(
    target: float, primes: list[int], max_weight: tuple[float, float], terms: tuple[int, int], work: tuple[float, float]
) -> tuple[float, float]:
    """``(s1, s2)`` with ``s1^2 s2 = target``: the split whose limb counts make the least work
    (``work``: each step's terms), both scales at least 2^:data:`MIN_SCALE_BITS`; among equals
    the most even. Narrower weights let a prime's residues go into a product as one limb."""
    log_t = float(np.log2(target))
    best: tuple[float, float, float] | None = None  # (work, -evenness, log2 s1)
    for e1 in np.arange(MIN_SCALE_BITS, log_t / 2.0 + 1e-9, 0.125):
        e2 = log_t - 2.0 * e1
        if e2 < MIN_SCALE_BITS:
            break
        try:
            cost = 0.0
            for q in primes:
                l1 = rns.LimbPlan.for_modulus(q, int(np.ceil(max_weight[0] * 2.0**e1)) + 1, terms[0])
                l2 = rns.LimbPlan.for_modulus(q, int(np.ceil(max_weight[1] * 2.0**e2)) + 1, terms[1])
                cost += l1.limbs * work[0] + l2.limbs * work[1]
        except EncryptionError:
            continue
        key = (cost, -min(e1, e2), float(e1))
        if best is None or key < best:
            best = key
    if best is None:  # no split keeps both scales that fine: the even one
        e1 = log_t / 3.0
        return 2.0**e1, target / 2.0 ** (2.0 * e1)
    e1 = best[2]
    return 2.0**e1, target / 2.0 ** (2.0 * e1)


__all__ = ["FusedProgram", "FusedStream"]
