"""Throughput packing: the batch across the slots, one ciphertext per input feature.

Slot ``t`` of ciphertext ``i`` holds feature ``i`` of sample ``t``. Every affine map is
then a set of sums of ciphertext-times-scalar (zero weights skipped, so a convolution
costs its kernel size per output, not the full input width), a square is one
ciphertext multiplication per feature, and no rotation is ever needed: the public
context carries no Galois keys. Batches larger than the slot count are split into
chunks. Outputs that do not depend on the input (rows of zeros) are computed in
plaintext and encrypted by the server with the public key.

TenSEAL resets a ciphertext's scale to the global scale after each rescale although the
prime it divided by is not exactly ``2^s``; the program folds the exact prime ratios into
the weights, so the result is exact up to CKKS noise at any scale.

Example:
    >>> import numpy as np, torch
    >>> from securetrain.models import build_model
    >>> from securetrain.encrypted.compiler import compile_model
    >>> from securetrain.encrypted.planner import plan
    >>> cm = compile_model(build_model("he", (1, 8, 8), 10), (1, 8, 8), calibration=torch.rand(4, 1, 8, 8))
    >>> layout = ThroughputPacking().layout(cm, plan(cm, "throughput"))
    >>> layout["features"], layout["outputs"], layout["slots"]
    (64, 10, 4096)
    >>> cost = ThroughputPacking().cost(cm, 4096, "batch")
    >>> cost.depth, cost.galois_keys, cost.rescales_per_output
    (3, False, (64, 32))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from securetrain.encrypted.packing import PACKINGS, Group, LayoutCost, Packing, Program
from securetrain.errors import EncryptionError

if TYPE_CHECKING:
    from securetrain.encrypted.compiler import CompiledModel
    from securetrain.encrypted.params import EncryptionPlan


@dataclass
class _AffineStage:
    # per output: (indices of ciphertext inputs, compensated weights) and the plaintext constant
    terms: list[tuple[np.ndarray, np.ndarray]]
    const: np.ndarray


@dataclass
class _SquareStage:
    size: int


class ThroughputProgram(Program):
    """The server side of the throughput packing for one model and plan."""

    def __init__(self, compiled: CompiledModel, plan: EncryptionPlan) -> None:
        # compiler imports torch: imported when a model is laid out, not with the package
        from securetrain.encrypted.compiler import Affine

        scale = plan.scale
        primes = plan.rescale_primes()
        is_ct = np.ones(compiled.input_size, dtype=bool)
        const_val = np.zeros(compiled.input_size)
        factor = 1.0  # decoded ciphertext value = factor * true value
        level = 0
        self.stages: list[_AffineStage | _SquareStage] = []
        self.multiplications = 0  # ciphertext products of all kinds (scalar products and squares)
        self.squares = 0
        for op in compiled.ops:
            if isinstance(op, Affine):
                ratio = primes[level] / scale / factor
                w = op.weight.tocsr()
                terms: list[tuple[np.ndarray, np.ndarray]] = []
                consts = op.bias.astype(np.float64).copy()
                for j in range(op.out_features):
                    idx = w.indices[w.indptr[j] : w.indptr[j + 1]]
                    val = w.data[w.indptr[j] : w.indptr[j + 1]]
                    cmask = ~is_ct[idx]
                    consts[j] += float(np.dot(val[cmask], const_val[idx[cmask]]))
                    ci, cv = idx[~cmask], val[~cmask] * ratio
                    keep = (
                        np.abs(cv) * scale >= 0.5
                    )  # a weight that encodes to zero would make a transparent ciphertext
                    terms.append((ci[keep].astype(np.int64), cv[keep].astype(np.float64)))
                self.multiplications += sum(len(t[0]) for t in terms)
                new_ct = np.array([len(t[0]) > 0 for t in terms], dtype=bool)
                self.stages.append(_AffineStage(terms, consts))
                is_ct, const_val, factor = new_ct, np.where(new_ct, 0.0, consts), 1.0
                level += 1
            else:
                self.stages.append(_SquareStage(op.size))
                self.multiplications += int(is_ct.sum())
                self.squares += int(is_ct.sum())
                const_val = const_val * const_val
                factor = factor * factor * scale / primes[level]
                level += 1
        self.output_is_ct = is_ct
        self.output_const = const_val
        self.output_factors = [factor if c else 1.0 for c in is_ct]
        self.levels = level

    def run(self, context: Any, group: Group) -> Group:
        import tenseal as ts

        xs: list[Any] = list(group.vectors)
        for stage in self.stages:
            if isinstance(stage, _SquareStage):
                xs = [v.square_() if not isinstance(v, float) else v * v for v in xs]
                continue
            out: list[Any] = []
            for (idx, wts), c in zip(stage.terms, stage.const):
                acc = None
                for i, w in zip(idx.tolist(), wts.tolist()):
                    term = xs[i] * w
                    if acc is None:
                        acc = term
                    else:
                        acc += term
                if acc is None:
                    out.append(float(c))
                else:
                    if c != 0.0:
                        acc += float(c)
                    out.append(acc)
            xs = out
        result = [v if not isinstance(v, float) else ts.ckks_vector(context, [v] * group.samples) for v in xs]
        return Group(group.samples, result)


class ThroughputPacking(Packing):
    """One ciphertext per input feature; each slot is one sample."""

    name = "throughput"
    variants = ("batch",)

    def cost(self, compiled: CompiledModel, slots: int, variant: str) -> LayoutCost:
        from securetrain.encrypted.compiler import Affine

        return LayoutCost(
            depth=compiled.depth,
            galois_keys=False,
            # every ciphertext-times-scalar is rescaled on its own before the sum
            rescales_per_output=tuple(
                int(np.max(np.diff(op.weight.indptr))) if op.weight.nnz else 0
                for op in compiled.ops
                if isinstance(op, Affine)
            ),
            notes=(f"{slots} samples per chunk; {compiled.input_size} input ciphertexts per chunk",),
        )

    def layout(self, compiled: CompiledModel, plan: EncryptionPlan) -> dict[str, Any]:
        prog = ThroughputProgram(compiled, plan)
        return {
            "kind": self.name,
            "features": compiled.input_size,
            "outputs": compiled.output_size,
            "slots": plan.slots,
            "output_factors": prog.output_factors,
        }

    def program(self, compiled: CompiledModel, plan: EncryptionPlan) -> Program:
        return ThroughputProgram(compiled, plan)

    def encrypt(
        self, context: Any, layout: dict[str, Any], x: np.ndarray, *, chunk_size: int | None = None
    ) -> list[Group]:
        import tenseal as ts

        slots = int(layout["slots"])
        size = slots if chunk_size is None else int(chunk_size)
        if not 1 <= size <= slots:
            raise EncryptionError(f"chunk_size must be between 1 and the slot count {slots}, got {chunk_size}")
        groups = []
        for start in range(0, x.shape[0], size):
            part = x[start : start + size]
            groups.append(
                Group(int(part.shape[0]), [ts.ckks_vector(context, part[:, f].tolist()) for f in range(part.shape[1])])
            )
        return groups

    def decrypt(self, context: Any, layout: dict[str, Any], groups: list[Group]) -> np.ndarray:
        factors = np.asarray(layout["output_factors"], dtype=np.float64)
        parts = []
        for g in groups:
            if len(g.vectors) != int(layout["outputs"]):
                raise EncryptionError(
                    f"expected {layout['outputs']} output ciphertexts per chunk, got {len(g.vectors)}"
                )
            cols = [np.asarray(v.decrypt(), dtype=np.float64)[: g.samples] for v in g.vectors]
            parts.append(np.stack(cols, axis=1) / factors)
        return np.concatenate(parts, axis=0) if parts else np.zeros((0, int(layout["outputs"])))

    def check_layout(self, layout: dict[str, Any], plan: EncryptionPlan) -> None:
        super().check_layout(layout, plan)
        factors = layout.get("output_factors")
        if (
            not isinstance(factors, list)
            or len(factors) != int(layout["outputs"])
            or not all(isinstance(f, (int, float)) and np.isfinite(f) and f != 0 for f in factors)
        ):
            raise EncryptionError("malformed throughput layout in the spec (output_factors)")

    def check_group(self, layout: dict[str, Any], group: Group) -> None:
        if not 1 <= group.samples <= int(layout["slots"]):
            raise EncryptionError(f"a chunk holds 1 to {layout['slots']} samples, got {group.samples}")
        if len(group.vectors) != int(layout["features"]):
            raise EncryptionError(
                f"a throughput chunk needs one ciphertext per input feature ({layout['features']}), got {len(group.vectors)}"
            )
        for i, v in enumerate(group.vectors):
            if v.size() != group.samples:
                raise EncryptionError(f"ciphertext {i} holds {v.size()} values, the chunk has {group.samples} samples")


PACKINGS.add("throughput", ThroughputPacking())

__all__ = ["ThroughputPacking", "ThroughputProgram"]
