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

from typing import TYPE_CHECKING

from securetrain.encrypted.rns import MAX_MODULUS_BITS

if TYPE_CHECKING:
    from securetrain.encrypted.compiler import CompiledModel
    from securetrain.encrypted.params import EncryptionPlan

MAX_PARTIAL_BYTES = 1 << 30  # step 3's sums held at once; above it SEAL's program runs instead


def fusable(compiled: CompiledModel, plan: EncryptionPlan) -> bool:
    """True where the throughput program of ``compiled`` under ``plan`` can run fused: it begins
    affine, square, affine with three levels to spend on them, every prime is below 2^51, the top
    level's modulus holds the unrescaled products (the plan's scale times the three primes, with
    the values' integer bits and a margin), and step 3's sums fit :data:`MAX_PARTIAL_BYTES`."""
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
    partial = ops[2].out_features * 2 * 3 * len(data_bits) * plan.poly_modulus_degree * 8
    return partial <= MAX_PARTIAL_BYTES


__all__ = ["MAX_PARTIAL_BYTES", "fusable"]
