"""Compile a PyTorch model into a chain of affine maps and squares that CKKS can evaluate.

The model is traced by running it once with forward hooks on its leaf modules; the trace
must be a plain chain (each layer receives exactly the previous layer's output), which
rules out residual connections and functional non-linearities hidden in ``forward``.
Each linear layer becomes an affine map read off its action on a basis (so convolutions
of any stride/padding, average pooling and padding all compile the same way, and in any
position), polynomial activations are rewritten as a square between two affine maps,
and consecutive affine maps are fused: ``conv -> avgpool -> conv`` costs one level.

The result, :class:`CompiledModel`, is checked against the module on random inputs before
it is returned, and can be run in plaintext (:meth:`CompiledModel.forward`).

Example:
    >>> import torch
    >>> from securetrain.models import build_model
    >>> model = build_model("he", (1, 8, 8), 10)
    >>> cm = compile_model(model, (1, 8, 8))
    >>> [op.kind for op in cm.ops], cm.depth
    (['affine', 'square', 'affine'], 3)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from securetrain.encrypted.activations import PolyActivation
from securetrain.encrypted.layers import get_layer_rule
from securetrain.encrypted.validator import format_issues, validate
from securetrain.errors import EncryptionError, ModelError
from securetrain.modes import eval_mode, unwrap

_BASIS_BATCH = 256


@dataclass
class Affine:
    """``y = W x + b`` on flattened features; ``W`` is sparse ``(out, in)``."""

    weight: sp.csr_matrix
    bias: np.ndarray
    source: str = ""
    kind: str = field(default="affine", init=False)

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def row_abs_sum_max(self) -> float:
        """``max_j sum_i |W_ji|``: how much the layer can amplify an error."""
        if self.weight.nnz == 0:
            return 0.0
        return float(np.max(np.asarray(abs(self.weight).sum(axis=1)).ravel()))

    def apply(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.asarray(self.weight @ x.T).T + self.bias
        return out


@dataclass
class SquareOp:
    """``y = x * x`` elementwise (one ciphertext-ciphertext multiplication)."""

    size: int
    source: str = ""
    kind: str = field(default="square", init=False)

    @property
    def in_features(self) -> int:
        return self.size

    @property
    def out_features(self) -> int:
        return self.size

    def apply(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = x * x
        return out


Op: TypeAlias = Affine | SquareOp


@dataclass
class Calibration:
    """Magnitudes measured by running the compiled model on data (plaintext).

    ``input_max``: max |x|; ``op_max[k]``: max |output| of op k; ``partial_max[k]``:
    max over samples and outputs of ``sum_i |W_ji x_i| + |b_j|`` for affine ops (a bound
    on every partial sum the encrypted evaluation forms), else ``op_max[k]``.
    """

    input_max: float
    op_max: list[float]
    partial_max: list[float]
    samples: int

    @property
    def value_bound(self) -> float:
        """The largest magnitude any encrypted intermediate value reached."""
        return max([self.input_max, *self.op_max, *self.partial_max])

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_max": self.input_max,
            "op_max": self.op_max,
            "partial_max": self.partial_max,
            "samples": self.samples,
        }


@dataclass
class CompiledModel:
    """A model as a chain of :class:`Affine` and :class:`SquareOp` on flat features."""

    ops: list[Op]
    input_shape: tuple[int, ...]
    name: str = "model"
    calibration: Calibration | None = None

    @property
    def input_size(self) -> int:
        return int(math.prod(self.input_shape))

    @property
    def output_size(self) -> int:
        return self.ops[-1].out_features if self.ops else self.input_size

    @property
    def n_affine(self) -> int:
        return sum(1 for op in self.ops if op.kind == "affine")

    @property
    def n_square(self) -> int:
        return sum(1 for op in self.ops if op.kind == "square")

    @property
    def depth(self) -> int:
        """Multiplicative depth: one level per affine map and one per square."""
        return len(self.ops)

    def forward(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Plaintext evaluation of the compiled chain, float64, ``(B, *input_shape) -> (B, out)``."""
        h = _as_features(x, self.input_size)
        for op in self.ops:
            h = op.apply(h)
        return h

    def calibrate(self, x: np.ndarray | torch.Tensor) -> Calibration:
        """Measure the magnitudes of every intermediate value on ``x`` and keep them."""
        h = _as_features(x, self.input_size)
        if h.shape[0] == 0:
            raise EncryptionError("calibration data is empty; pass at least one sample")
        op_max: list[float] = []
        partial: list[float] = []
        input_max = float(np.max(np.abs(h)))
        for op in self.ops:
            if isinstance(op, Affine):
                partial.append(float(np.max(np.asarray(abs(op.weight) @ np.abs(h).T).T + np.abs(op.bias))))
            h = op.apply(h)
            m = float(np.max(np.abs(h)))
            op_max.append(m)
            if isinstance(op, SquareOp):
                partial.append(m)
        if not all(math.isfinite(v) for v in [input_max, *op_max, *partial]):
            raise EncryptionError("calibration produced non-finite values; the model diverges on this data")
        self.calibration = Calibration(input_max, op_max, partial, int(h.shape[0]))
        return self.calibration

    def summary(self) -> list[dict[str, Any]]:
        """One row per op: kind, shape, non-zero weights and the layers it came from."""
        rows = []
        for op in self.ops:
            row: dict[str, Any] = {"kind": op.kind, "in": op.in_features, "out": op.out_features, "from": op.source}
            if isinstance(op, Affine):
                row["nonzeros"] = int(op.weight.nnz)
            rows.append(row)
        return rows


def _as_features(x: np.ndarray | torch.Tensor, size: int) -> np.ndarray:
    arr = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if arr.ndim == 0 or arr.size % size != 0 or (arr.ndim > 1 and int(np.prod(arr.shape[1:])) != size):
        raise EncryptionError(
            f"inputs must have {size} features per sample (shape (batch, ...) with {size} values after the "
            f"batch dimension), got shape {tuple(arr.shape)}"
        )
    return arr.reshape(-1, size) if arr.ndim > 1 else arr.reshape(1, size)


@dataclass
class _Record:
    name: str
    module: nn.Module
    inp: torch.Tensor
    out: torch.Tensor


def _trace(model: nn.Module, probe: torch.Tensor) -> tuple[list[_Record], torch.Tensor]:
    records: list[_Record] = []
    handles = []
    for name, module in model.named_modules():
        if any(True for _ in module.children()):
            continue

        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any, _name: str = name) -> None:
            if len(args) != 1 or not isinstance(args[0], torch.Tensor) or not isinstance(out, torch.Tensor):
                raise EncryptionError(
                    f"layer {_name!r} ({type(mod).__name__}) takes or returns something other than one tensor; "
                    "only chains of single-tensor layers can be compiled"
                )
            records.append(_Record(_name, mod, args[0].detach().clone(), out.detach().clone()))

        handles.append(module.register_forward_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            out = model(probe)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, torch.Tensor):
        raise EncryptionError(f"the model returns {type(out).__name__}, not a tensor of logits")
    return records, out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    a2 = a.reshape(a.shape[0], -1) if a.dim() > 0 else a
    b2 = b.reshape(b.shape[0], -1) if b.dim() > 0 else b
    if a2.shape != b2.shape:
        return False
    scale = max(1.0, float(b2.abs().max()))
    return bool(torch.allclose(a2, b2, rtol=1e-9, atol=1e-9 * scale))


def _affine_of(module: nn.Module, in_shape: tuple[int, ...]) -> tuple[sp.csr_matrix, np.ndarray]:
    n_in = int(math.prod(in_shape))
    with torch.no_grad():
        bias = module(torch.zeros((1, *in_shape), dtype=torch.float64)).reshape(-1)
        blocks = []
        for start in range(0, n_in, _BASIS_BATCH):
            k = min(_BASIS_BATCH, n_in - start)
            basis = torch.zeros((k, n_in), dtype=torch.float64)
            basis[torch.arange(k), torch.arange(start, start + k)] = 1.0
            cols = module(basis.reshape(k, *in_shape)).reshape(k, -1) - bias
            block = sp.csr_matrix(cols.numpy())
            block.eliminate_zeros()
            blocks.append(block)
    weight = sp.vstack(blocks).T.tocsr()
    return weight, bias.numpy().copy()


def _poly_ops(coeffs: tuple[float, float, float], size: int, source: str) -> list[Op]:
    """``c2 x^2 + c1 x + c0`` as affine -> square -> affine (the affines fuse with neighbours)."""
    c0, c1, c2 = coeffs
    eye = sp.identity(size, format="csr", dtype=np.float64)
    if c2 == 0.0:
        return [Affine(eye * c1, np.full(size, c0), source)]
    a = math.sqrt(abs(c2))
    sigma = 1.0 if c2 > 0 else -1.0
    beta = sigma * c1 / (2.0 * a)
    return [
        Affine(eye * a, np.full(size, beta), source),
        SquareOp(size, source),
        Affine(eye * sigma, np.full(size, c0 - sigma * beta * beta), source),
    ]


def _fuse(ops: list[Op]) -> list[Op]:
    out: list[Op] = []
    for op in ops:
        prev = out[-1] if out else None
        if isinstance(op, Affine) and isinstance(prev, Affine):
            out.pop()
            w = (op.weight @ prev.weight).tocsr()
            w.eliminate_zeros()
            b = np.asarray(op.weight @ prev.bias).ravel() + op.bias
            src = "+".join(s for s in (prev.source, op.source) if s)
            out.append(Affine(w, b, src))
        else:
            out.append(op)
    return [op for op in out if not _is_identity(op)]


def _is_identity(op: Op) -> bool:
    if not isinstance(op, Affine) or op.in_features != op.out_features or np.any(op.bias != 0.0):
        return False
    diff = op.weight - sp.identity(op.in_features, format="csr")
    return bool(diff.count_nonzero() == 0)


def compile_model(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    *,
    calibration: np.ndarray | torch.Tensor | None = None,
    name: str | None = None,
    seed: int = 0,
) -> CompiledModel:
    """Compile ``model`` (HE-friendly, see :func:`securetrain.encrypted.validate`) for CKKS.

    ``input_shape`` is one sample's shape (default: ``model.input_shape``). With
    ``calibration`` data the magnitudes of all intermediate values are measured, which lets
    the planner size the modulus tightly.
    """
    inner = unwrap(model)
    shape = tuple(int(s) for s in (input_shape if input_shape is not None else getattr(inner, "input_shape", ())))
    if not shape or any(s < 1 for s in shape):
        raise EncryptionError(
            f"compile_model needs the shape of one input sample; pass input_shape=(...) (got {input_shape!r} "
            f"and the model has no input_shape attribute)"
        )
    issues = validate(inner)
    if issues:
        raise EncryptionError(
            "the model cannot run under CKKS as it is:\n"
            + format_issues(issues)
            + "\nconvert it with securetrain.encrypted.make_he_friendly(model, fine_tune=(x, y)) or train an "
            "HE-friendly zoo model ('he', 'he-cnn')"
        )
    m64 = copy.deepcopy(inner).double()
    gen = torch.Generator().manual_seed(seed)
    probe = torch.rand((4, *shape), generator=gen, dtype=torch.float64) * 2.0 - 1.0
    records, out = _trace(m64, probe)

    prev = probe
    raw: list[Op] = []
    for rec in records:
        if not _same(rec.inp, prev):
            raise EncryptionError(
                f"layer {rec.name!r} ({type(rec.module).__name__}) does not receive the output of the layer before "
                "it: the model's forward() is not a plain chain of layers (residual connections, concatenations "
                "or functional calls such as torch.relu between layers cannot be compiled); express the "
                "computation as a sequence of modules"
            )
        rule = get_layer_rule(rec.module)
        if rule is None:  # validate() should have caught it
            raise EncryptionError(f"layer {rec.name!r} ({type(rec.module).__name__}) is not supported under CKKS")
        size = int(rec.out[0].numel())
        if rule.kind == "linear":
            weight, bias = _affine_of(rec.module, tuple(rec.inp.shape[1:]))
            expect = rec.out.reshape(rec.out.shape[0], -1).numpy()
            got = np.asarray(weight @ rec.inp.reshape(rec.inp.shape[0], -1).numpy().T).T + bias
            if not np.allclose(got, expect, rtol=1e-7, atol=1e-9 * max(1.0, float(np.abs(expect).max()))):
                raise EncryptionError(
                    f"layer {rec.name!r} ({type(rec.module).__name__}) is registered as linear but does not compute "
                    "an affine map of its input; it cannot be compiled"
                )
            raw.append(Affine(weight, bias, rec.name))
        elif rule.kind == "square":
            raw.append(SquareOp(size, rec.name))
        elif rule.kind == "poly":
            assert isinstance(rec.module, PolyActivation)
            raw.extend(_poly_ops(rec.module.coeffs(), size, rec.name))
        prev = rec.out
    if not _same(out, prev):
        raise EncryptionError(
            "the model's output is not the output of its last layer: forward() applies a computation outside "
            "its modules (for example a functional softmax or relu); move it into a module or remove it"
        )
    compiled = CompiledModel(_fuse(raw), shape, name or type(inner).__name__)
    check = compiled.forward(probe)
    expect = out.reshape(out.shape[0], -1).numpy()
    if check.shape != expect.shape or not np.allclose(
        check, expect, rtol=1e-6, atol=1e-8 * max(1.0, float(np.abs(expect).max()))
    ):
        raise EncryptionError("internal error: the compiled chain disagrees with the model; please report this model")
    if calibration is not None:
        compiled.calibrate(calibration)
    if compiled.output_size < 1:
        raise ModelError("the model has no outputs")
    return compiled


__all__ = ["Affine", "Calibration", "CompiledModel", "Op", "SquareOp", "compile_model"]
