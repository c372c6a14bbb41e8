"""Latency packing: one sample per request, evaluated in place in its slots.

Four variants; the planner prices each (operation counts, :mod:`securetrain.encrypted.costmodel`)
in the smallest ring it fits and takes the cheapest, recording why in ``plan.choice``:

* ``"im2col"`` and ``"bsgs"`` (:mod:`securetrain.encrypted.bsgs`): the program runs on SEAL
  ciphertexts. ``im2col``: the client sends the first layer's gathered inputs (a convolution's
  windows) in as many ciphertexts as they need, the server multiplies and sums them with a few
  rotations; ``bsgs``: the client sends its features replicated. Every later affine map is a
  baby-step/giant-step diagonal product (``m`` plaintext products and about ``2 sqrt(m)``
  rotations for ``m`` outputs); plaintexts are encoded once per model; Galois keys for a handful
  of steps.
* ``"expanded"`` and ``"diagonal"`` (:class:`LatencyProgram`, TenSEAL's vector operations): in
  the expanded layout the client places input ``idx[r][c]`` (the ``c``-th input that output ``r``
  reads, a constant 1 for the bias) at slot ``c * rows + r`` of one ciphertext and the server
  sums the ``chunks`` blocks with ``enc_matmul_plain`` (one extra level); every later layer, and
  the first one in the diagonal variant, uses TenSEAL's ``mm`` (the diagonal method: one
  rotation per input). Biases of middle layers are folded into the matrix through a constant-1
  slot; the exact prime ratios of each rescale are folded into the weights.

The layout lists the rotation steps whose Galois keys the program needs (``galois_steps``); the
client makes keys for those only (:mod:`securetrain.encrypted.keys`).

Example:
    >>> import torch
    >>> from securetrain.models import build_model
    >>> from securetrain.encrypted.compiler import compile_model
    >>> from securetrain.encrypted.planner import plan
    >>> cm = compile_model(build_model("he", (1, 8, 8), 10), (1, 8, 8), calibration=torch.rand(4, 1, 8, 8))
    >>> p = plan(cm, "latency")
    >>> p.variant, p.depth, p.choice.split(":")[0]
    ('im2col', 3, 'im2col')
    >>> layout = LatencyPacking().layout(cm, p)
    >>> layout["input"], layout["ciphertexts"], layout["rows"], layout["galois_steps"]
    ('gathered', 1, 32, [1, 4, 16, 32, 64, 128, 256, 512, 1024])
    >>> old = plan(cm, "latency", variants=("expanded",))
    >>> cost = LatencyPacking().cost(cm, old.slots, "expanded")
    >>> cost.depth, cost.galois_keys, cost.extra_first_level, cost.rotation_amplification
    (4, True, True, 128.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from securetrain.encrypted.bsgs import PAD, BSGSProgram, bsgs_structure, gather_index, pack_gathered, pack_replicated
from securetrain.encrypted.keys import keys_for_rotations, naf
from securetrain.encrypted.packing import (
    PACKINGS,
    Group,
    LayoutCost,
    Packing,
    Program,
    next_pow2,
)
from securetrain.errors import EncryptionError

if TYPE_CHECKING:
    from securetrain.encrypted.compiler import CompiledModel
    from securetrain.encrypted.params import EncryptionPlan

CONST = -1
ZERO = -2


@dataclass
class _Structure:
    expanded: bool
    chunks: int
    rows: int
    # per op: ("affine", p_in, m_out, has_const_out, bias_mode) or ("square", size)
    stages: list[tuple[Any, ...]]
    reason: str | None
    diagonals: list[int]


def _const_out_flags(compiled: CompiledModel) -> list[bool]:
    """For each affine (in order): must its output carry the constant-1 slot?"""
    n = compiled.n_affine
    # affine j+1 folds its bias through a constant slot unless it is the last affine
    return [(j + 1) < n - 1 for j in range(n)]


def _structure(compiled: CompiledModel, slots: int, variant: str) -> _Structure:
    # compiler imports torch: imported when a model is laid out, not with the package
    from securetrain.encrypted.compiler import Affine

    ops = compiled.ops
    flags = _const_out_flags(compiled)
    expanded = False
    chunks = rows = 0
    first = ops[0] if ops else None
    if isinstance(first, Affine):
        w = first.weight.tocsr()
        nnz = int(np.max(np.diff(w.indptr))) if w.shape[0] else 0
        chunks = next_pow2(nnz + 1)
        rows = next_pow2(first.out_features + (1 if flags[0] else 0))
        expanded = variant == "expanded" and chunks * rows <= slots
    stages: list[tuple[Any, ...]] = []
    diagonals: list[int] = []
    valid = slots  # slots holding correct, periodic values
    period = compiled.input_size + 1  # replicated client input: features + constant 1
    has_const = True
    aff = 0
    reason = None
    if variant == "expanded" and not expanded:
        reason = (
            f"the expanded first layer needs {chunks} x {rows} = {chunks * rows} slots"
            if chunks
            else "the model does not start with an affine map"
        )
    for k, op in enumerate(ops):
        if isinstance(op, Affine):
            const_out = flags[aff]
            m = op.out_features + (1 if const_out else 0)
            if k == 0 and expanded:
                stages.append(("expanded", chunks, rows, const_out))
                period, valid = rows, slots
                diagonals.append(int(math.log2(slots // rows)))
            else:
                if op.in_features + (1 if has_const else 0) > period:
                    reason = "internal layout error"
                if not has_const and aff < compiled.n_affine - 1:
                    reason = "internal layout error: a middle layer has no constant slot"
                stages.append(("diag", period, m, const_out, has_const))
                valid = valid - (period - 1)
                diagonals.append(min(period, slots))
                if period > slots or m > slots or valid < m:
                    reason = (
                        f"layer {k} maps {op.in_features} to {op.out_features} values: the diagonal method needs "
                        f"{period + m - 1} slots of replicated input but {slots} are available"
                    )
                period = m
            has_const = const_out
            aff += 1
        else:
            stages.append(("square", op.size))
    return _Structure(expanded, chunks, rows, stages, reason, diagonals)


class LatencyProgram(Program):
    """The server side of the latency packing for one model and plan."""

    def __init__(self, compiled: CompiledModel, plan: EncryptionPlan) -> None:
        from securetrain.encrypted.compiler import Affine

        st = _structure(compiled, plan.slots, plan.variant)
        if st.reason:
            raise EncryptionError(st.reason)
        scale = plan.scale
        primes = plan.rescale_primes()
        slots = plan.slots
        level = 0
        factor = 1.0
        self.steps: list[tuple[Any, ...]] = []
        self.index: list[list[int]] | None = None
        self.key_steps: set[int] = set()  # the Galois keys this program's rotations need
        affines = [op for op in compiled.ops if isinstance(op, Affine)]
        aff = 0
        for _op, stage in zip(compiled.ops, st.stages):
            if stage[0] == "square":
                self.steps.append(("square",))
                factor = factor * factor * scale / primes[level]
                level += 1
                continue
            a = affines[aff]
            w = a.weight.tocsr()
            if stage[0] == "expanded":
                _, chunks, rows, const_out = stage
                index = np.full((rows, chunks), ZERO, dtype=np.int64)
                d = np.zeros((rows, chunks))
                for r in range(a.out_features):
                    cols = w.indices[w.indptr[r] : w.indptr[r + 1]]
                    vals = w.data[w.indptr[r] : w.indptr[r + 1]]
                    index[r, : len(cols)] = cols
                    d[r, : len(cols)] = vals
                    index[r, len(cols)] = CONST
                    d[r, len(cols)] = a.bias[r]
                if const_out:
                    index[a.out_features, 0] = CONST
                    d[a.out_features, 0] = 1.0
                weights = np.zeros(slots)
                weights[: chunks * rows] = (d.T.ravel()) * (primes[level] / scale / factor)
                ones = [primes[level + 1] / scale] * (slots // rows)
                self.steps.append(("expanded", weights.tolist(), ones, rows))
                # enc_matmul_plain sums the slots // rows blocks by rotating rows * 2^j (one key each)
                self.key_steps |= keys_for_rotations(rows << j for j in range(int(math.log2(slots // rows))))
                self.index = index.tolist()
                level += 2
            else:
                _, period, m, const_out, has_const = stage
                mat = np.zeros((period, m))
                mat[: a.in_features, : a.out_features] = w.toarray().T
                bias = None
                if has_const:
                    mat[a.in_features, : a.out_features] = a.bias
                    if const_out:
                        mat[a.in_features, a.out_features] = 1.0
                else:
                    bias = a.bias.tolist()
                mat *= primes[level] / scale / factor
                self.steps.append(("diag", mat.tolist(), bias))
                # the diagonal method rotates by 1 .. period - 1: SEAL composes them from their NAF terms
                self.key_steps |= keys_for_rotations(range(1, period), direct=False)
                level += 1
            factor = 1.0
            aff += 1
        self.output_factor = factor
        self.levels = level
        self.structure = st

    def run(self, context: Any, group: Group) -> Group:
        out = []
        for v in group.vectors:
            for step in self.steps:
                if step[0] == "square":
                    v = v.square()
                elif step[0] == "expanded":
                    _, weights, ones, rows = step
                    v = (v * weights).enc_matmul_plain(ones, rows)
                else:
                    _, mat, bias = step
                    v = v.mm(mat)
                    if bias is not None:
                        v = v + bias
            out.append(v)
        return Group(group.samples, out)


def _structure_operations(st: _Structure, slots: int) -> tuple[tuple[str, int], ...]:
    """Operation counts of the TenSEAL-vector program per sample (for the planner's cost model)."""
    products = rotations = squares = 0
    for stage in st.stages:
        if stage[0] == "square":
            squares += 1
        elif stage[0] == "expanded":
            products += 2
            rotations += int(math.log2(slots // int(stage[2])))
        else:
            period = int(stage[1])
            products += period
            rotations += sum(len(naf(i)) for i in range(1, period))
    return (("vector products", products), ("rotations", rotations), ("squares", squares), ("input ciphertexts", 1))


_BSGS_FIRST = {"im2col": "im2col", "bsgs": "replicated"}


class LatencyPacking(Packing):
    """One sample per ciphertext (vector packing); see the module docstring for the variants."""

    name = "latency"
    variants = ("im2col", "bsgs", "expanded", "diagonal")

    def cost(self, compiled: CompiledModel, slots: int, variant: str) -> LayoutCost:
        if variant not in self.variants:
            return LayoutCost(depth=compiled.depth, galois_keys=True, reason=f"unknown latency variant {variant!r}")
        if variant in _BSGS_FIRST:
            return _bsgs_cost(compiled, slots, variant)
        st = _structure(compiled, slots, variant)
        reason = st.reason
        if variant == "diagonal" and compiled.input_size + 1 > slots:
            reason = f"{compiled.input_size} input features (+1 constant) do not fit in {slots} slots"
        if st.expanded:
            note = f"first layer in expanded layout ({st.chunks} chunks x {st.rows} rows, one extra level)"
        else:
            note = "first layer by the diagonal method on replicated input"
        return LayoutCost(
            depth=compiled.depth + (1 if st.expanded else 0),
            galois_keys=True,
            reason=reason,
            extra_first_level=st.expanded,
            key_switches=tuple(st.diagonals),
            rescales_per_output=(1,) * compiled.n_affine,
            # enc_matmul_plain rescales, then rotates and sums slots/rows blocks; the diagonal
            # method rotates before its rescale, where key-switching noise is negligible.
            rotation_amplification=float(slots // st.rows) if st.expanded else 0.0,
            notes=(note,),
            operations=_structure_operations(st, slots) if reason is None else (),
        )

    def layout(self, compiled: CompiledModel, plan: EncryptionPlan) -> dict[str, Any]:
        if plan.variant in _BSGS_FIRST:
            return _bsgs_layout(compiled, plan)
        prog = LatencyProgram(compiled, plan)
        st = prog.structure
        base = {
            "kind": self.name,
            "features": compiled.input_size,
            "outputs": compiled.output_size,
            "slots": plan.slots,
            "output_factor": prog.output_factor,
            "galois_steps": sorted(prog.key_steps),
        }
        if st.expanded:
            return {
                **base,
                "input": "expanded",
                "chunks": st.chunks,
                "rows": st.rows,
                "size": plan.slots,
                "index": prog.index,
            }
        return {**base, "input": "replicated", "size": compiled.input_size + 1}

    def program(self, compiled: CompiledModel, plan: EncryptionPlan) -> Program:
        if plan.variant in _BSGS_FIRST:
            return BSGSProgram(compiled, plan, _BSGS_FIRST[plan.variant])
        return LatencyProgram(compiled, plan)

    def encrypt(
        self, context: Any, layout: dict[str, Any], x: np.ndarray, *, chunk_size: int | None = None
    ) -> list[Group]:
        import tenseal as ts

        groups = []
        feats = int(layout["features"])
        slots = int(layout["slots"])
        if layout["input"] == "gathered":
            index = np.asarray(layout["index"], dtype=np.int64)
            per, cts = int(layout["chunks_per_ciphertext"]), int(layout["ciphertexts"])
            for row in x:
                parts = pack_gathered(row, index, per, cts, slots)
                groups.append(Group(1, [ts.ckks_vector(context, v.tolist()) for v in parts]))
        elif layout["input"] == "tiled":
            for row in x:
                tiled = pack_replicated(row, int(layout["period"]), slots)
                groups.append(Group(1, [ts.ckks_vector(context, tiled.tolist())]))
        elif layout["input"] == "expanded":
            index = np.asarray(layout["index"], dtype=np.int64)
            index = np.where(index == CONST, feats, np.where(index == ZERO, feats + 1, index))
            reps = int(layout["slots"]) // (int(layout["chunks"]) * int(layout["rows"]))
            for row in x:
                ext = np.concatenate([row, [1.0, 0.0]])
                block = ext[index.T].ravel()
                groups.append(Group(1, [ts.ckks_vector(context, np.tile(block, reps).tolist())]))
        else:
            for row in x:
                groups.append(Group(1, [ts.ckks_vector(context, np.concatenate([row, [1.0]]).tolist())]))
        return groups

    def decrypt(self, context: Any, layout: dict[str, Any], groups: list[Group]) -> np.ndarray:
        n = int(layout["outputs"])
        rows = []
        for g in groups:
            for v in g.vectors:
                vals = np.asarray(v.decrypt(), dtype=np.float64)
                if vals.size < n:
                    raise EncryptionError(f"a result ciphertext holds {vals.size} values, expected {n}")
                rows.append(vals[:n] / float(layout["output_factor"]))
        return np.stack(rows) if rows else np.zeros((0, n))

    def check_layout(self, layout: dict[str, Any], plan: EncryptionPlan) -> None:
        super().check_layout(layout, plan)
        feats, slots = int(layout["features"]), int(layout["slots"])
        factor = layout.get("output_factor")
        ok = isinstance(factor, (int, float)) and np.isfinite(factor) and factor != 0
        steps = layout.get("galois_steps")
        if steps is not None:
            ok = ok and (
                isinstance(steps, list)
                and all(isinstance(v, int) and not isinstance(v, bool) and 0 < abs(v) < slots for v in steps)
            )
        if layout.get("input") == "gathered":
            try:
                index = np.asarray(layout["index"], dtype=np.int64)
                rows, per, cts = int(layout["rows"]), int(layout["chunks_per_ciphertext"]), int(layout["ciphertexts"])
            except (KeyError, TypeError, ValueError):
                ok = False
            else:
                ok = ok and (
                    index.ndim == 2
                    and index.shape[0] == rows
                    and 1 <= index.shape[1] <= per * cts
                    and 1 <= cts <= 4096
                    and _pow2(rows)
                    and _pow2(per)
                    and per * rows <= slots
                    and int(layout["size"]) == slots
                    and bool(np.all((index >= PAD) & (index < feats)))
                )
        elif layout.get("input") == "tiled":
            try:
                period = int(layout["period"])
            except (KeyError, TypeError, ValueError):
                ok = False
            else:
                ok = ok and _pow2(period) and feats <= period <= slots and int(layout["size"]) == slots
        elif layout.get("input") == "expanded":
            try:
                index = np.asarray(layout["index"], dtype=np.int64)
                chunks, rows = int(layout["chunks"]), int(layout["rows"])
            except (KeyError, TypeError, ValueError):
                ok = False
            else:
                ok = ok and (
                    index.shape == (rows, chunks)
                    and chunks * rows <= slots
                    and slots % (chunks * rows) == 0
                    and int(layout["size"]) == slots
                    and bool(np.all((index >= ZERO) & (index < feats)))
                )
        elif layout.get("input") == "replicated":
            ok = ok and int(layout.get("size", -1)) == feats + 1 <= slots
        else:
            ok = False
        if not ok:
            raise EncryptionError("malformed latency layout in the spec (input, index, size or output_factor)")

    def check_group(self, layout: dict[str, Any], group: Group) -> None:
        count = int(layout["ciphertexts"]) if layout.get("input") == "gathered" else 1
        if group.samples != 1 or len(group.vectors) != count:
            raise EncryptionError(
                f"this latency layout takes exactly {count} ciphertext{'s' if count > 1 else ''} per sample"
            )
        for v in group.vectors:
            if v.size() != int(layout["size"]):
                raise EncryptionError(f"a latency input ciphertext must hold {layout['size']} values, got {v.size()}")


def _pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _bsgs_cost(compiled: CompiledModel, slots: int, variant: str) -> LayoutCost:
    st = bsgs_structure(compiled, slots, _BSGS_FIRST[variant])
    if st.reason is not None:
        return LayoutCost(depth=compiled.depth, galois_keys=True, reason=st.reason)
    affine = [s for s in st.stages if s.kind != "square"]
    if variant == "im2col":
        first = st.stages[0]
        note = (
            f"first layer from gathered (im2col) inputs: {first.ciphertexts} ciphertext(s) of {first.width} "
            f"chunks x {first.rows} rows; later layers by baby-step/giant-step diagonals"
        )
    else:
        note = "every layer by baby-step/giant-step diagonals on replicated input"
    ops = st.operations()
    return LayoutCost(
        depth=compiled.depth,
        galois_keys=bool(st.galois_steps),
        key_switches=tuple(s.rotations() for s in affine),
        rescales_per_output=(1,) * len(affine),
        product_widths=(slots,) * len(affine),  # slots outside the data hold partial sums, not zeros
        # the baby steps rotate rescaled inputs (chained: the j-th carries j key switches); sizing the
        # special prime for them cut the measured error of tests/encrypted/test_bsgs.py's model tenfold
        rotation_amplification=float(max(s.rotations() for s in affine)),
        notes=(note,),
        operations=tuple(ops.items()),
    )


def _bsgs_layout(compiled: CompiledModel, plan: EncryptionPlan) -> dict[str, Any]:
    st = bsgs_structure(compiled, plan.slots, _BSGS_FIRST[plan.variant])
    if st.reason is not None:
        raise EncryptionError(st.reason)
    base = {
        "kind": "latency",
        "features": compiled.input_size,
        "outputs": compiled.output_size,
        "slots": plan.slots,
        "output_factor": 1.0,
        "galois_steps": st.galois_steps,
        "size": plan.slots,
    }
    if plan.variant == "im2col":
        first = st.stages[0]
        return {
            **base,
            "input": "gathered",
            "rows": first.rows,
            "chunks_per_ciphertext": first.width,
            "ciphertexts": first.ciphertexts,
            "index": gather_index(compiled, st).tolist(),
        }
    return {**base, "input": "tiled", "period": st.input_period}


PACKINGS.add("latency", LatencyPacking())

__all__ = ["LatencyPacking", "LatencyProgram"]
