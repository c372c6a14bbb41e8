"""The latency packing's fast program: im2col first layer and baby-step/giant-step dense layers.

One sample is evaluated on SEAL ciphertexts directly (``tenseal.sealapi``), because TenSEAL's
vector API rotates only inside its own matrix products. Two ways to start:

* ``"im2col"``: the client sends the *gathered* inputs of the first affine map. Output ``r``
  reads inputs ``idx[r][0..C)`` (the layer's public sparsity pattern: a convolution's
  windows); the ``C`` chunks are spread over ``ceil(C / k)`` ciphertexts of ``k`` chunks of
  ``R`` slots (``R`` a power of two holding every output), input ``idx[r][c]`` at slot
  ``(c mod k) R + r`` of ciphertext ``c // k`` and the block tiled over the slots. The server
  multiplies each ciphertext by its weights, adds them up and sums the ``k`` chunks with
  ``log2 k`` rotations: the outputs come out replicated with period ``R``.
* ``"replicated"``: the client sends its features replicated with period
  ``next_pow2(features)`` and the first layer is a dense layer like the others.

Every later affine map is a dense layer by the hybrid diagonal method (Halevi-Shoup for an
``m x n`` matrix, ``m`` and ``n`` powers of two) with baby steps and giant steps: ``m``
plaintext products, ``b - 1`` rotations by one (baby steps, ``b ~ sqrt(m)``), ``m/b - 1``
rotations by ``b`` (giant steps, Horner's scheme) and ``log2(n/m)`` rotations to fold the
blocks; the result is replicated with period ``m``, which the next layer needs. Rotations after
the products run before the rescale, where their key-switching noise is negligible. Biases
are added after the rescale. Each layer's plaintexts are encoded once per model, at the scale
that brings the ciphertext back to exactly the plan's scale (no prime-ratio drift), and the
program needs Galois keys for a handful of steps only (:attr:`BSGSStructure.galois_steps`).

Example:
    >>> import torch
    >>> from securetrain.models import build_model
    >>> from securetrain.encrypted.compiler import compile_model
    >>> cm = compile_model(build_model("he-cnn", (1, 8, 8), 10), (1, 8, 8))
    >>> st = bsgs_structure(cm, 4096, "im2col")
    >>> st.reason is None, st.ciphertexts, [s.kind for s in st.stages]
    (True, 1, ['im2col', 'square', 'dense'])
    >>> st.galois_steps
    [1, 4, 16, 32, 64, 128, 256, 512]
    >>> st.operations()
    {'plain products': 17, 'rotations': 12, 'squares': 1, 'input ciphertexts': 1}
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from securetrain.encrypted.packing import Group, Program, next_pow2
from securetrain.errors import EncryptionError

if TYPE_CHECKING:
    from securetrain.encrypted.compiler import CompiledModel
    from securetrain.encrypted.params import EncryptionPlan

PAD = -1
"""Index of a gathered slot that holds no input (a zero)."""


@dataclass(frozen=True)
class Stage:
    """One step of the program: ``im2col`` (first layer from gathered inputs), ``dense``
    (hybrid BSGS diagonal method) or ``square``."""

    kind: str
    rows: int = 0
    """Output period (a power of two >= the outputs)."""
    width: int = 0
    """``dense``: the square block size ``max(input period, rows)``; ``im2col``: chunks per ciphertext."""
    baby: int = 1
    giants: int = 1
    folds: int = 0
    ciphertexts: int = 1

    def rotations(self) -> int:
        if self.kind == "im2col":
            return self.folds
        if self.kind == "dense":
            return (self.baby - 1) + (self.giants - 1) + self.folds
        return 0

    def steps(self) -> set[int]:
        out: set[int] = set()
        if self.kind == "im2col":
            out |= {self.rows << j for j in range(self.folds)}
        elif self.kind == "dense":
            if self.baby > 1:
                out.add(1)
            if self.giants > 1:
                out.add(self.baby)
            out |= {self.rows << j for j in range(self.folds)}
        return out


@dataclass
class BSGSStructure:
    """How a compiled model lays out under the BSGS program at one slot count (or why it does not)."""

    first: str
    slots: int
    stages: list[Stage] = field(default_factory=list)
    reason: str | None = None
    input_period: int = 0
    chunks: int = 0

    @property
    def ciphertexts(self) -> int:
        """Input ciphertexts per sample."""
        return self.stages[0].ciphertexts if self.stages and self.stages[0].kind == "im2col" else 1

    @property
    def galois_steps(self) -> list[int]:
        steps: set[int] = set()
        for s in self.stages:
            steps |= s.steps()
        return sorted(steps)

    def operations(self) -> dict[str, int]:
        """Operation counts per sample: plaintext products, rotations, squares, input ciphertexts."""
        products = sum(s.rows if s.kind == "dense" else s.ciphertexts for s in self.stages if s.kind != "square")
        return {
            "plain products": products,
            "rotations": sum(s.rotations() for s in self.stages),
            "squares": sum(1 for s in self.stages if s.kind == "square"),
            "input ciphertexts": self.ciphertexts,
        }


def _dense_stage(n_in: int, out: int, slots: int) -> tuple[Stage, str | None]:
    rows = next_pow2(out)
    width = max(n_in, rows)
    baby = 1 << math.ceil(math.log2(rows) / 2) if rows > 1 else 1
    stage = Stage("dense", rows=rows, width=width, baby=baby, giants=rows // baby, folds=int(math.log2(width // rows)))
    reason = None
    if width > slots:
        reason = f"a {out} x {n_in} block of the diagonal method needs {width} slots but {slots} are available"
    return stage, reason


def bsgs_structure(compiled: CompiledModel, slots: int, first: str) -> BSGSStructure:
    """Lay ``compiled`` out for the BSGS program with ``slots`` slots; ``first`` is ``"im2col"`` or
    ``"replicated"`` (see the module docstring)."""
    from securetrain.encrypted.compiler import Affine

    st = BSGSStructure(first, slots)
    ops = compiled.ops
    if not ops or not isinstance(ops[0], Affine):
        st.reason = "the model does not start with an affine map"
        return st
    period = 0
    for k, op in enumerate(ops):
        if not isinstance(op, Affine):
            st.stages.append(Stage("square", rows=period))
            continue
        if k == 0 and first == "im2col":
            w = op.weight.tocsr()
            chunks = max(1, int(np.max(np.diff(w.indptr))) if w.shape[0] else 1)
            rows = next_pow2(op.out_features)
            if rows > slots:
                st.reason = f"the first layer's {op.out_features} outputs do not fit in {slots} slots"
                return st
            per = slots // rows
            cts = math.ceil(chunks / per)
            per_ct = next_pow2(math.ceil(chunks / cts))
            st.chunks = chunks
            st.stages.append(Stage("im2col", rows=rows, width=per_ct, folds=int(math.log2(per_ct)), ciphertexts=cts))
            period = rows
            continue
        if k == 0:
            period = next_pow2(op.in_features)
            st.input_period = period
            if period > slots:
                st.reason = f"{op.in_features} input features do not fit in {slots} slots"
                return st
        stage, reason = _dense_stage(period, op.out_features, slots)
        if reason:
            st.reason = f"layer {k}: {reason}"
            return st
        st.stages.append(stage)
        period = stage.rows
    return st


def gather_index(compiled: CompiledModel, st: BSGSStructure) -> np.ndarray:
    """``(rows, chunks)``: the input each output of the first layer reads per chunk (:data:`PAD`: none)."""
    w = compiled.ops[0].weight.tocsr()  # type: ignore[union-attr]
    rows = st.stages[0].rows
    index = np.full((rows, st.chunks), PAD, dtype=np.int64)
    for r in range(w.shape[0]):
        cols = w.indices[w.indptr[r] : w.indptr[r + 1]]
        index[r, : len(cols)] = cols
    return index


def pack_gathered(x: np.ndarray, index: np.ndarray, per_ct: int, ciphertexts: int, slots: int) -> list[np.ndarray]:
    """Client side of ``im2col``: one sample's features ``x`` as the slot vectors of its ciphertexts."""
    rows, chunks = index.shape
    ext = np.concatenate([np.asarray(x, dtype=np.float64), [0.0]])
    gathered = ext[np.where(index == PAD, ext.size - 1, index)]  # (rows, chunks)
    full = np.zeros((rows, per_ct * ciphertexts))
    full[:, :chunks] = gathered
    reps = slots // (per_ct * rows)
    out = []
    for i in range(ciphertexts):
        block = full[:, i * per_ct : (i + 1) * per_ct].T.ravel()  # slot (c mod k) * rows + r
        out.append(np.tile(block, reps))
    return out


def pack_replicated(x: np.ndarray, period: int, slots: int) -> np.ndarray:
    """Client side of ``replicated``: features padded to ``period`` and tiled over the slots."""
    block = np.zeros(period)
    block[: x.size] = x
    return np.tile(block, slots // period)


def _dense_plaintexts(weight: np.ndarray, stage: Stage, slots: int) -> list[list[np.ndarray]]:
    """The baby-step/giant-step diagonals of ``weight`` (``(out, in)``), pre-rotated for Horner's scheme:
    ``[g][j]`` multiplies the input rotated by ``j`` in giant step ``g``."""
    rows, width = stage.rows, stage.width
    mat = np.zeros((rows, width))
    mat[: weight.shape[0], : weight.shape[1]] = weight
    i = np.arange(slots)
    out = []
    for g in range(stage.giants):
        row = []
        for j in range(stage.baby):
            d = g * stage.baby + j
            diag = mat[i % rows, (i + d) % width]
            row.append(np.roll(diag, g * stage.baby))
        out.append(row)
    return out


def vector_from_ciphertext(context: Any, ciphertext: Any, size: int) -> Any:
    """A TenSEAL ``CKKSVector`` holding a SEAL ``ciphertext`` whose first ``size`` slots are the values."""
    import tenseal as ts

    with tempfile.TemporaryDirectory(prefix="securetrain-ct-") as tmp:  # SEAL saves to a path only
        path = os.path.join(tmp, "ct")
        ciphertext.save(path)
        with open(path, "rb") as fh:
            raw = fh.read()
    sizes = _varint(size)
    proto = (
        b"\x0a"
        + _varint(len(sizes))
        + sizes  # CKKSVectorProto.sizes (packed)
        + b"\x12"
        + _varint(len(raw))
        + raw  # .ciphertexts
        + b"\x19"
        + struct.pack("<d", float(ciphertext.scale))  # .scale
    )
    return ts.ckks_vector_from(context, proto)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class BSGSProgram(Program):
    """The server side of the BSGS latency program for one model and plan."""

    def __init__(self, compiled: CompiledModel, plan: EncryptionPlan, first: str) -> None:
        from securetrain.encrypted.compiler import Affine

        self.structure = bsgs_structure(compiled, plan.slots, first)
        if self.structure.reason:
            raise EncryptionError(self.structure.reason)
        self.plan = plan
        self.outputs = compiled.output_size
        self.index = gather_index(compiled, self.structure) if first == "im2col" else None
        slots = plan.slots
        primes = plan.rescale_primes()
        s = plan.scale
        scale = s  # the ciphertext's scale, tracked exactly as SEAL does
        # per stage: (kind, level, plaintext values, plaintext scale, bias values or None, bias scale)
        self._stages: list[tuple[Any, ...]] = []
        level = 0
        for op, stage in zip(compiled.ops, self.structure.stages):
            q = float(primes[level])
            if stage.kind == "square":
                self._stages.append((stage, level, None, 0.0, None, 0.0))
                scale = (scale * scale) / q
                level += 1
                continue
            assert isinstance(op, Affine)
            pscale = q * s / scale
            w = op.weight.tocsr()
            if stage.kind == "im2col":
                assert self.index is not None
                per, cts, rows = stage.width, stage.ciphertexts, stage.rows
                vals = np.zeros((rows, per * cts))
                for r in range(w.shape[0]):
                    v = w.data[w.indptr[r] : w.indptr[r + 1]]
                    vals[r, : len(v)] = v
                reps = slots // (per * rows)
                plains: Any = [np.tile(vals[:, i * per : (i + 1) * per].T.ravel(), reps) for i in range(cts)]
            else:
                plains = _dense_plaintexts(w.toarray(), stage, slots)
            scale = (scale * pscale) / q
            bias = np.tile(np.pad(op.bias, (0, stage.rows - op.out_features)), slots // stage.rows)
            self._stages.append((stage, level, plains, pscale, bias if np.any(op.bias) else None, scale))
            level += 1
        self.levels = level
        self.output_scale = scale
        self._lock = threading.Lock()
        self._encoded: tuple[Any, list[Any]] | None = None

    @property
    def galois_steps(self) -> list[int]:
        return self.structure.galois_steps

    def _encode(self, context: Any) -> list[Any]:
        """The plaintexts, encoded once per SEAL parameter set (they hold no key)."""
        from tenseal import sealapi

        seal_ctx = context.seal_context().data
        key = tuple(seal_ctx.first_parms_id())
        with self._lock:
            if self._encoded is not None and self._encoded[0] == key:
                return self._encoded[1]
            encoder = sealapi.CKKSEncoder(seal_ctx)
            parms = []
            data = seal_ctx.first_context_data()
            while data is not None:
                parms.append(data.parms_id())
                data = data.next_context_data()

            def enc(values: np.ndarray, level: int, scale: float) -> Any:
                if not np.any(values):
                    return None
                pt = sealapi.Plaintext()
                encoder.encode(values.tolist(), parms[level], scale, pt)
                return pt

            out: list[Any] = []
            for stage, level, plains, pscale, bias, bscale in self._stages:
                if stage.kind == "square":
                    out.append(None)
                    continue
                if stage.kind == "im2col":
                    encoded: Any = [enc(p, level, pscale) for p in plains]
                else:
                    encoded = [[enc(p, level, pscale) for p in row] for row in plains]
                out.append((encoded, None if bias is None else enc(bias, level + 1, bscale)))
            self._encoded = (key, out)
            return out

    def run(self, context: Any, group: Group) -> Group:
        return self.evaluate(context, group)

    def evaluate(self, context: Any, group: Group, *, rotations: Counter[int] | None = None) -> Group:
        """:meth:`run`, counting the rotations by step into ``rotations`` when given."""
        from tenseal import sealapi

        encoded = self._encode(context)
        ev = sealapi.Evaluator(context.seal_context().data)
        gk = context.galois_keys().data if self.galois_steps else None
        rk = context.relin_keys().data

        def rotate(ct: Any, step: int) -> Any:
            out = sealapi.Ciphertext()
            ev.rotate_vector(ct, step, gk, out)
            if rotations is not None:
                rotations[step] += 1
            return out

        cts = [v.ciphertext()[0] for v in group.vectors]
        x = cts[0]
        for (stage, *_), enc in zip(self._stages, encoded):
            if stage.kind == "square":
                ev.square_inplace(x)
                ev.relinearize_inplace(x, rk)
                ev.rescale_to_next_inplace(x)
                continue
            plains, bias = enc
            if stage.kind == "im2col":
                acc = None
                for ct, pt in zip(cts, plains):
                    if pt is None:
                        continue
                    ev.multiply_plain_inplace(ct, pt)
                    if acc is None:
                        acc = ct
                    else:
                        ev.add_inplace(acc, ct)
                if acc is None:
                    raise EncryptionError("the first layer has only zero weights; it cannot be evaluated encrypted")
            else:
                acc = self._dense(ev, rotate, x, plains, stage)
            for j in range(stage.folds):  # before the rescale: key-switching noise stays negligible
                ev.add_inplace(acc, rotate(acc, stage.rows << j))
            ev.rescale_to_next_inplace(acc)
            if bias is not None:
                ev.add_plain_inplace(acc, bias)
            x = acc
        return Group(group.samples, [vector_from_ciphertext(context, x, self.outputs)])

    @staticmethod
    def _dense(ev: Any, rotate: Callable[[Any, int], Any], x: Any, plains: list[list[Any]], stage: Stage) -> Any:
        from tenseal import sealapi

        babies = [x]
        for _ in range(1, stage.baby):  # x rotated by 0 .. baby-1, one step at a time: one Galois key
            babies.append(rotate(babies[-1], 1))
        acc = None
        tmp = sealapi.Ciphertext()
        for g in reversed(range(stage.giants)):  # Horner's scheme: rotations by `baby` only
            u = None
            for j in range(stage.baby):
                if plains[g][j] is None:  # an all-zero diagonal (SEAL refuses a product that is zero)
                    continue
                if u is None:
                    u = sealapi.Ciphertext()
                    ev.multiply_plain(babies[j], plains[g][j], u)
                else:
                    ev.multiply_plain(babies[j], plains[g][j], tmp)
                    ev.add_inplace(u, tmp)
            if acc is not None:
                acc = rotate(acc, stage.baby)
                if u is not None:
                    ev.add_inplace(acc, u)
            else:
                acc = u
        if acc is None:
            raise EncryptionError("a layer of the model has only zero weights; it cannot be evaluated encrypted")
        return acc


__all__ = ["PAD", "BSGSProgram", "BSGSStructure", "Stage", "bsgs_structure", "gather_index", "pack_gathered"]
