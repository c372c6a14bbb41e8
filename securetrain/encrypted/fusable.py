"""Whether a throughput program can run its first layers on residues (see :mod:`securetrain.encrypted.fused`).

The test needs only the compiled ops and the plan, so the throughput packing can say in its
layout which frames a client should send without importing the fused program.

Example:
    >>> import torch
    >>> from securetrain.models import build_model
    >>> from securetrain.encrypted.compiler import compile_model
    >>> from securetrain.encrypted.planner import plan
    >>> cm = compile_model(build_model("he-mnist", (1, 28, 28), 10), (1, 28, 28), calibration=torch.rand(4, 1, 28, 28))
    >>> fusable(cm, plan(cm, "throughput")), fusable(cm, plan(cm, "latency"))
    (True, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from securetrain.encrypted.rns import MAX_MODULUS_BITS

if TYPE_CHECKING:
    from securetrain.encrypted.compiler import CompiledModel
    from securetrain.encrypted.params import EncryptionPlan

MAX_STREAM_BYTES = 3 << 29  # residues one fused stream may hold (1.5 GiB); above it SEAL's program runs instead
ROW_COST = 64  # reading one input ciphertext into a product, in outputs' worth of arithmetic
STEP3_BATCH = 128  # squared step-1 outputs held before they are multiplied into step 3's sums
WINDOW_SLACK = 32  # extra input rows in the window buffer (fewer compactions)


def fusable(compiled: CompiledModel, plan: EncryptionPlan) -> bool:
    """True where the throughput program of ``compiled`` under ``plan`` can run fused: it begins
    affine, square, affine with three levels to spend on them, every prime is below 2^51, the top
    level's modulus holds the unrescaled products (the plan's scale times the three primes, with
    the values' integer bits and a margin), and a stream's residues fit :data:`MAX_STREAM_BYTES`
    (a convolution holds a window of its inputs; a dense first layer holds them all)."""
    from securetrain.encrypted.compiler import Affine, SquareOp

    ops = compiled.ops
    if plan.mode != "throughput" or len(ops) < 3 or plan.depth < 3:
        return False
    if not (isinstance(ops[0], Affine) and isinstance(ops[1], SquareOp) and isinstance(ops[2], Affine)):
        return False
    bits = list(plan.coeff_mod_bit_sizes)
    data_bits = bits[:-1]  # the last is the special prime
    if max(bits) >= MAX_MODULUS_BITS or len(data_bits) < 4:
        return False
    if plan.scale_bits + sum(data_bits[-3:]) + plan.int_bits + 2 >= sum(data_bits):
        return False
    groups = plan_groups(ops[0].weight)
    return stream_bytes(plan, groups.window, groups.largest, ops[2].out_features) <= MAX_STREAM_BYTES


def stream_bytes(plan: EncryptionPlan, window: int, group: int, outputs: int) -> int:
    """Bytes of residues a fused stream holds at most: the input window (up to two float64 limbs
    per residue, two polynomials), step 3's unreduced sums (two limbs, three polynomials), the
    squares waiting for step 3 and one group's products."""
    words = (len(plan.coeff_mod_bit_sizes) - 1) * plan.poly_modulus_degree
    held = 3 * (STEP3_BATCH + group) + 2 * 2 * group
    return 8 * words * (2 * 2 * (window + WINDOW_SLACK) + 2 * 3 * outputs + held)


@dataclass(frozen=True)
class StepOneGroups:
    """How step 1's outputs are computed: in groups of consecutive outputs (in order of their last
    input), each one dense product over the contiguous span of inputs its outputs read (BLAS reads
    the span in place; gathering only the inputs used measured slower for convolutions)."""

    members: list[np.ndarray]  # per group: row positions in the weight matrix
    first: np.ndarray  # per group: its first input
    last: np.ndarray  # per group: its last input (non-decreasing)
    window: int  # most inputs held at once
    terms: int  # sum over groups of outputs x inputs spanned

    @property
    def span(self) -> int:
        """Most inputs one group's product reads (the terms of its sums)."""
        return int((self.last - self.first).max()) + 1 if len(self.last) else 1

    @property
    def largest(self) -> int:
        """Most outputs in one group."""
        return max((len(m) for m in self.members), default=1)


def plan_groups(weight: Any) -> StepOneGroups:
    """Groups for a sparse weight matrix: the group size, among powers of two, that minimises the
    products' terms plus a cost per input read (:data:`ROW_COST` outputs' worth)."""
    w = weight.tocsr()
    rows = np.flatnonzero(np.diff(w.indptr) > 0)
    if not len(rows):
        return StepOneGroups([], np.zeros(0, np.int64), np.zeros(0, np.int64), 1, 0)
    first = np.minimum.reduceat(w.indices, w.indptr[rows])
    last = np.maximum.reduceat(w.indices, w.indptr[rows])
    sort = np.argsort(last, kind="stable")
    order, first, last = rows[sort], first[sort], last[sort]
    best: tuple[int, int] | None = None
    for size in sorted({16, 32, 64, 128, 256, len(order)}):
        spans = [int(last[i : i + size].max() - first[i : i + size].min() + 1) for i in range(0, len(order), size)]
        cost = sum(sp * (min(size, len(order) - i * size) + ROW_COST) for i, sp in enumerate(spans))
        if best is None or cost < best[0]:
            best = (cost, size)
    assert best is not None
    size = best[1]
    members = [order[i : i + size] for i in range(0, len(order), size)]
    g_first = np.array([int(first[i : i + size].min()) for i in range(0, len(order), size)], dtype=np.int64)
    g_last = np.array([int(last[i : i + size].max()) for i in range(0, len(order), size)], dtype=np.int64)
    # before group k is computed (its last input just in), the inputs from the earliest first
    # input of groups k.. on are held
    suffix = np.minimum.accumulate(g_first[::-1])[::-1]
    window = int((g_last - suffix).max()) + 1
    terms = sum(len(m) * int(b - a + 1) for m, a, b in zip(members, g_first, g_last))
    return StepOneGroups(members, g_first, g_last, window, terms)


__all__ = ["MAX_STREAM_BYTES", "StepOneGroups", "fusable", "plan_groups", "stream_bytes"]
