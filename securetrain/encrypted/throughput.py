"""Throughput packing: the batch across the slots, one ciphertext per input feature.

Slot ``t`` of ciphertext ``i`` holds feature ``i`` of sample ``t``. Every affine map is
then a set of sums of ciphertext-times-scalar (zero weights skipped, so a convolution
costs its kernel size per output, not the full input width), a square is one
ciphertext multiplication per feature, and no rotation is ever needed: the public
context carries no Galois keys. Batches larger than the slot count are split into
chunks. Outputs that do not depend on the input (rows of zeros) are computed in
plaintext and encrypted by the server with the public key.

The server program runs on SEAL's evaluator (``tenseal.sealapi``), not on TenSEAL's vector
operations: products are summed before one rescale per output (TenSEAL would rescale every
product: a rescale costs several times a product) and the program streams, taking the input
ciphertexts one at a time and holding only the partial sums still open
(:class:`ThroughputStream`). SEAL tracks each ciphertext's exact scale; weights are encoded at
the scale that brings every layer's outputs back to the plan's, so outputs decode exactly.

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

from collections.abc import Iterator
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
    # per ciphertext input of the stage: the outputs it feeds and the weights (CSC columns)
    columns: list[tuple[np.ndarray, np.ndarray]]
    counts: np.ndarray  # per output: how many ciphertext terms it sums (0: a plaintext constant)
    const: np.ndarray  # per output: the plaintext constant added before the rescale


@dataclass
class _SquareStage:
    size: int


class ThroughputProgram(Program):
    """The server side of the throughput packing for one model and plan.

    Evaluation streams: :meth:`open` returns a :class:`ThroughputStream` that takes the input
    ciphertexts one at a time, in feature order, and keeps only the partial sums still open (see
    :attr:`peak_open`), so a server never holds a whole request's ciphertexts.
    """

    def __init__(
        self,
        compiled: CompiledModel,
        plan: EncryptionPlan,
        *,
        start: int = 0,
        inputs: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        # compiler imports torch: imported when a model is laid out, not with the package
        from securetrain.encrypted.compiler import Affine

        self.scale = plan.scale
        self.plan = plan
        self.compiled = compiled
        min_prime = min(plan.rescale_primes()[: max(plan.depth, 1)])
        if inputs is None:  # the whole model, every input a ciphertext
            is_ct = np.ones(compiled.input_size, dtype=bool)
            const_val = np.zeros(compiled.input_size)
        else:  # the model from op ``start`` on: which of its inputs are ciphertexts, the others' values
            is_ct, const_val = inputs[0].astype(bool), inputs[1].astype(np.float64)
        self.input_is_ct = is_ct.copy()
        self.ct_inputs = int(is_ct.sum())  # inputs a stream is fed (the others are plaintext constants)
        # when each stage value is complete, in units of "inputs received" (for the memory bound)
        ready = np.arange(len(is_ct), dtype=np.int64)
        self.stages: list[_AffineStage | _SquareStage] = []
        self.macs = 0  # ciphertext-times-scalar products summed into partial sums
        self.squares = 0
        self.rescales = 0
        self.peak_open: list[int] = []  # per affine stage: most partial sums open at once
        self.open_levels: list[int] = []  # per affine stage: rescales done before it (its ciphertexts' level)
        level = start
        for op in compiled.ops[start:]:
            if isinstance(op, Affine):
                w = op.weight.tocsr()
                consts = op.bias.astype(np.float64).copy()
                rows: list[np.ndarray] = []
                cols: list[np.ndarray] = []
                vals: list[np.ndarray] = []
                counts = np.zeros(op.out_features, dtype=np.int64)
                first = np.full(op.out_features, np.iinfo(np.int64).max)
                last = np.full(op.out_features, -1)
                for j in range(op.out_features):
                    idx = w.indices[w.indptr[j] : w.indptr[j + 1]]
                    val = w.data[w.indptr[j] : w.indptr[j + 1]].astype(np.float64)
                    cmask = ~is_ct[idx]
                    consts[j] += float(np.dot(val[cmask], const_val[idx[cmask]]))
                    ci, cv = idx[~cmask], val[~cmask]
                    # a weight that encodes to zero would make a transparent ciphertext: below 1/q it is dropped
                    keep = np.abs(cv) * min_prime >= 1.0
                    ci, cv = ci[keep].astype(np.int64), cv[keep]
                    counts[j] = len(ci)
                    if len(ci):
                        first[j], last[j] = int(ready[ci].min()), int(ready[ci].max())
                    rows.append(np.full(len(ci), j, dtype=np.int64))
                    cols.append(ci)
                    vals.append(cv)
                all_rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
                all_cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
                all_vals = np.concatenate(vals) if vals else np.zeros(0)
                order = np.lexsort((all_rows, all_cols))
                all_rows, all_cols, all_vals = all_rows[order], all_cols[order], all_vals[order]
                bounds = np.searchsorted(all_cols, np.arange(len(is_ct) + 1))
                columns = [
                    (all_rows[bounds[i] : bounds[i + 1]], all_vals[bounds[i] : bounds[i + 1]])
                    for i in range(len(is_ct))
                ]
                self.macs += int(counts.sum())
                new_ct = counts > 0
                self.rescales += int(new_ct.sum())
                self.peak_open.append(_peak_open(first[new_ct], last[new_ct]))
                self.open_levels.append(level)
                self.stages.append(_AffineStage(columns, counts, consts))
                is_ct, const_val = new_ct, np.where(new_ct, 0.0, consts)
                ready = np.where(new_ct, last, -1)
                level += 1
            else:
                self.stages.append(_SquareStage(op.size))
                self.squares += int(is_ct.sum())
                const_val = const_val * const_val
                level += 1
        self.multiplications = self.macs + self.squares  # kept for callers counting all products
        self.output_is_ct = is_ct
        self.output_const = const_val
        # SEAL tracks each ciphertext's exact scale, so outputs decode to the values themselves
        self.output_factors = [1.0] * len(is_ct)
        self.levels = level

    def open(self, context: Any, samples: int) -> ThroughputStream:
        """A stream evaluating one chunk of ``samples`` samples under (public) ``context``."""
        return ThroughputStream(self, context, samples)

    def run(self, context: Any, group: Group) -> Group:
        stream = self.open(context, group.samples)
        for vector in group.vectors:
            stream.feed(vector)
        return stream.finish()


def _peak_open(first: np.ndarray, last: np.ndarray) -> int:
    """Most intervals ``[first, last]`` open at one time (partial sums a stream holds at once)."""
    if not len(first):
        return 0
    events = np.concatenate([np.stack([first, np.ones_like(first)], 1), np.stack([last + 1, -np.ones_like(last)], 1)])
    events = events[np.lexsort((events[:, 1], events[:, 0]))]  # a close before an open at the same time
    return int(np.cumsum(events[:, 1]).max())


class ThroughputStream:
    """One chunk's evaluation, fed input ciphertexts in feature order (see :class:`ThroughputProgram`).

    Every product of a ciphertext and a weight is added, unrescaled, into its output's partial
    sum; a partial sum is rescaled once, when its last term has arrived, and passed straight on
    (squared, relinearised and rescaled; then into the next layer's partial sums). Weights are
    encoded at ``prime * scale / input scale``, so every layer's outputs come back to the plan's
    scale and SEAL's exact scale bookkeeping needs no correction.
    """

    def __init__(self, program: ThroughputProgram, context: Any, samples: int) -> None:
        from securetrain.encrypted.sealbridge import SealTools

        self.program = program
        self.context = context
        self.samples = int(samples)
        self.tools = SealTools(context)
        self.partial: list[dict[int, Any]] = [{} for _ in program.stages]
        self.left = [s.counts.copy() if isinstance(s, _AffineStage) else np.zeros(0) for s in program.stages]
        self.outputs: dict[int, Any] = {}
        self.received = 0
        self._tmp = self.tools.new_ciphertext()

    @property
    def open_sums(self) -> int:
        """Partial sums held right now (each one ciphertext)."""
        return sum(len(p) for p in self.partial)

    def feed(self, vector: Any) -> None:
        """Take the next input feature's ciphertext (a TenSEAL vector)."""
        from securetrain.encrypted.sealbridge import seal_ciphertext

        self.feed_seal(self.received, seal_ciphertext(vector))

    def feed_seal(self, index: int, ciphertext: Any) -> None:
        """Take input ``index``'s ciphertext (a SEAL ciphertext, consumed); inputs come in order,
        the plaintext ones (see :attr:`ThroughputProgram.input_is_ct`) skipped."""
        n_inputs = self.program.ct_inputs
        if self.received >= n_inputs:
            raise EncryptionError(f"the chunk already holds all {n_inputs} input ciphertexts")
        if not 0 <= index < len(self.program.input_is_ct) or not self.program.input_is_ct[index]:
            raise EncryptionError(f"input {index} is not a ciphertext input of this program")
        self.received += 1
        self._push(0, index, ciphertext)

    def _push(self, k: int, index: int, ct: Any) -> None:
        stages = self.program.stages
        if k == len(stages):
            self.outputs[index] = ct
            return
        stage = stages[k]
        ev, tools = self.tools.evaluator, self.tools
        if isinstance(stage, _SquareStage):
            ev.square_inplace(ct)
            ev.relinearize_inplace(ct, tools.relin_keys)
            ev.rescale_to_next_inplace(ct)
            self._push(k + 1, index, ct)
            return
        outs, wts = stage.columns[index]
        if not len(outs):
            return
        prime = tools.prime(ct)
        w_scale = prime * self.program.scale / float(ct.scale)
        partial, left = self.partial[k], self.left[k]
        for j, w in zip(outs.tolist(), wts.tolist()):
            pt = tools.scalar(w, ct, w_scale)
            acc = partial.get(j)
            if acc is None:
                acc = tools.new_ciphertext()
                ev.multiply_plain(ct, pt, acc)
                partial[j] = acc
            else:
                ev.multiply_plain(ct, pt, self._tmp)
                ev.add_inplace(acc, self._tmp)
            left[j] -= 1
            if left[j] == 0:
                del partial[j]
                c = float(stage.const[j])
                if c != 0.0:
                    ev.add_plain_inplace(acc, tools.scalar(c, acc, float(acc.scale)))
                ev.rescale_to_next_inplace(acc)
                self._push(k + 1, j, acc)

    def finish(self) -> Group:
        """The chunk's output ciphertexts (TenSEAL vectors), once every input has been fed."""
        import tenseal as ts

        from securetrain.encrypted.sealbridge import vector_from_seal

        n_inputs = self.program.ct_inputs
        if self.received != n_inputs:
            raise EncryptionError(f"the chunk ended after {self.received} of {n_inputs} input ciphertexts")
        result = []
        for j, (is_ct, c) in enumerate(zip(self.program.output_is_ct, self.program.output_const)):
            if is_ct:
                result.append(vector_from_seal(self.context, self.outputs.pop(j), self.samples))
            else:
                result.append(ts.ckks_vector(self.context, [float(c)] * self.samples))
        return Group(self.samples, result)


class BlobStream:
    """One streamed chunk's evaluation, fed serialised ciphertexts (bytes) in feature order."""

    samples: int
    received: int

    def feed_blob(self, blob: bytes) -> None:
        """Check and take the next input feature's serialised ciphertext."""
        raise NotImplementedError

    def finish(self) -> Group:
        """The chunk's output ciphertexts (TenSEAL vectors), once every input has been fed."""
        raise NotImplementedError


class SealBlobStream(BlobStream):
    """A :class:`ThroughputStream` fed blobs: each loaded as a TenSEAL vector and checked."""

    def __init__(self, stream: ThroughputStream) -> None:
        self.stream = stream
        self.samples = stream.samples

    @property
    def received(self) -> int:  # type: ignore[override]
        return self.stream.received

    @property
    def open_sums(self) -> int:
        """Partial sums the SEAL program holds right now."""
        return self.stream.open_sums

    def feed_blob(self, blob: bytes) -> None:
        from securetrain.encrypted.packing import fresh_level_check
        from securetrain.encrypted.wire import load_vector

        plan = self.stream.program.plan
        vector = load_vector(blob, self.stream.context)
        index = self.stream.received
        if vector.size() != self.samples:
            raise EncryptionError(
                f"ciphertext {index} holds {vector.size()} values, the chunk has {self.samples} samples"
            )
        fresh_level_check(vector, plan.depth, plan.scale, f"ciphertext {index}")
        self.stream.feed(vector)

    def finish(self) -> Group:
        return self.stream.finish()


class ThroughputPacking(Packing):
    """One ciphertext per input feature; each slot is one sample."""

    name = "throughput"
    variants = ("batch",)

    def cost(self, compiled: CompiledModel, slots: int, variant: str) -> LayoutCost:
        from securetrain.encrypted.compiler import Affine

        return LayoutCost(
            depth=compiled.depth,
            galois_keys=False,
            # the error bound counts every product as separately rescaled (TenSEAL's way); the program
            # rescales once per output, so the bound is conservative
            rescales_per_output=tuple(
                int(np.max(np.diff(op.weight.indptr))) if op.weight.nnz else 0
                for op in compiled.ops
                if isinstance(op, Affine)
            ),
            notes=(f"{slots} samples per chunk; {compiled.input_size} input ciphertexts per chunk",),
        )

    def layout(self, compiled: CompiledModel, plan: EncryptionPlan) -> dict[str, Any]:
        from securetrain.encrypted.fusable import fusable

        prog = ThroughputProgram(compiled, plan)
        return {
            "kind": self.name,
            "features": compiled.input_size,
            "outputs": compiled.output_size,
            "slots": plan.slots,
            "output_factors": prog.output_factors,
            # streamed frames: complete ciphertexts where the server runs the fused
            # residue program, else SEAL's seeded form (half the bytes)
            "frames": "full" if fusable(compiled, plan) else "seeded",
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

    def encrypt_features(self, context: Any, layout: dict[str, Any], x: np.ndarray) -> Iterator[bytes]:
        """One chunk's serialised ciphertexts, one per feature in order, each made when asked for
        (streaming), encrypted with the secret key: complete where the layout's ``frames`` is ``"full"``
        (the server computes on their residues, see :mod:`securetrain.encrypted.fused`), else in
        SEAL's seeded form (half the bytes)."""
        from securetrain.encrypted.sealbridge import SeededEncryptor

        if not 1 <= x.shape[0] <= int(layout["slots"]):
            raise EncryptionError(f"a chunk holds 1 to {layout['slots']} samples, got {x.shape[0]}")
        encryptor = SeededEncryptor(context)
        if layout.get("frames", "seeded") == "full":
            for f in range(x.shape[1]):
                yield encryptor.encrypt_complete(x[:, f].tolist())
            return
        for f in range(x.shape[1]):
            yield encryptor.encrypt(x[:, f].tolist())

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
        if layout.get("frames", "seeded") not in ("seeded", "full"):
            raise EncryptionError(f"malformed throughput layout in the spec (frames {layout.get('frames')!r})")

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

__all__ = ["BlobStream", "SealBlobStream", "ThroughputPacking", "ThroughputProgram", "ThroughputStream"]
