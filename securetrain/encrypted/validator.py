"""Which layers of a model cannot run under CKKS, how to fix each one, and the fix itself.

In the spirit of Opacus's ``ModuleValidator``: :func:`validate` lists every problem as an
:class:`Issue` with its fix; :func:`make_he_friendly` applies the fixes to a copy of the
model (non-polynomial activations to a square or a fitted degree-2 polynomial, max- to
average pooling, BatchNorm folded into the preceding linear or convolution layer,
a final softmax removed) and can fine-tune the result so accuracy recovers.

Both see the whole forward pass: besides the submodules, calls written in ``forward``
(``F.relu``, ``torch.relu``, ``x.relu()``, ``F.max_pool2d``, ``torch.flatten``, ``torch.exp``, ...)
are found by tracing it with ``torch.fx`` (:mod:`securetrain.encrypted.graph`); such an
issue is named after its graph node. ``make_he_friendly`` first makes each such call the
equivalent module (``F.relu`` -> ``nn.ReLU``, ``torch.flatten(x, 1)`` -> ``nn.Flatten(1)``)
and then applies the module fixes, or refuses naming the node that has no equivalent.

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> [(i.module_name, i.module_type) for i in validate(model)]
    [('2', 'ReLU')]
    >>> validate(make_he_friendly(model))
    []
    >>> class Functional(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = nn.Linear(4, 2)
    ...     def forward(self, x):
    ...         return self.fc(torch.relu(x))
    >>> [(i.module_name, i.module_type) for i in validate(Functional())]
    [('relu', 'torch.relu')]
    >>> validate(make_he_friendly(Functional(), input_shape=(4,)))
    []
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from securetrain.encrypted.activations import PolyActivation, fit_polynomial
from securetrain.encrypted.graph import Call, find_calls, modularize
from securetrain.encrypted.layers import ChannelAffine, get_layer_rule
from securetrain.errors import ModelError
from securetrain.models.he import Square
from securetrain.modes import eval_mode, train_mode, unwrap
from securetrain.registry import Registry

logger = logging.getLogger(__name__)

NON_POLYNOMIAL_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Tanhshrink,
    nn.LogSigmoid,
    nn.Threshold,
    nn.Hardshrink,
    nn.Softshrink,
)
_MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_ADAPTIVE_MAXPOOL = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_SOFTMAX = (nn.Softmax, nn.LogSoftmax, nn.Softmin)
_FOLD_TARGETS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Issue:
    """One module that cannot run under CKKS, and what to do about it."""

    module_name: str
    module_type: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.module_name} ({self.module_type}): {self.problem}; fix: {self.fix}"


def format_issues(issues: Sequence[Issue]) -> str:
    """The issues as a bulleted list, one per line."""
    return "\n".join(f"- {i}" for i in issues)


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]


def _pool_args(m: nn.Module) -> str:
    return f"kernel_size={m.kernel_size}, stride={m.stride}, padding={m.padding}"


def _issue_for(name: str, m: nn.Module) -> Issue | None:
    if get_layer_rule(m) is not None:
        return None
    t = type(m).__name__
    if isinstance(m, NON_POLYNOMIAL_ACTIVATIONS):
        return Issue(
            name,
            t,
            f"{t} is not a polynomial; CKKS evaluates only additions and multiplications",
            "replace it by Square() or a fitted degree-2 polynomial "
            "(make_he_friendly(model, activation='square' or 'poly'))",
        )
    if isinstance(m, _MAXPOOL):
        avg = t.replace("Max", "Avg")
        if m.dilation not in (1, (1,), (1, 1), (1, 1, 1)):
            return Issue(
                name,
                t,
                "max-pooling needs comparisons, which CKKS cannot evaluate",
                f"replace it by {avg} of the same window (dilated pooling has no automatic fix)",
            )
        return Issue(
            name,
            t,
            "max-pooling needs comparisons, which CKKS cannot evaluate",
            f"replace it by {avg}({_pool_args(m)}) (make_he_friendly does this)",
        )
    if isinstance(m, _ADAPTIVE_MAXPOOL):
        return Issue(
            name,
            t,
            "max-pooling needs comparisons, which CKKS cannot evaluate",
            f"replace it by {t.replace('Max', 'Avg')}(output_size={m.output_size}) (make_he_friendly does this)",
        )
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        if not m.track_running_stats:
            return Issue(
                name,
                t,
                "it normalises with batch statistics even in eval mode",
                "no automatic fix: retrain with track_running_stats=True or without BatchNorm",
            )
        return Issue(
            name,
            t,
            "batch normalisation at inference is a separate affine map that costs a multiplicative level of its own",
            "fold it into the preceding linear or convolution layer (make_he_friendly does this)",
        )
    if isinstance(m, _SOFTMAX):
        return Issue(
            name,
            t,
            f"{t} needs exponentials and a division",
            "remove it: the argmax of the logits is unchanged; apply it after decryption "
            "(make_he_friendly replaces it by Identity)",
        )
    return Issue(
        name,
        t,
        f"{t} is not supported under CKKS",
        "no automatic fix: replace or remove it (a linear layer type can be declared with "
        "securetrain.encrypted.register_layer)",
    )


def _issue_for_call(call: Call) -> Issue | None:
    where = f"{call.target} called in forward()"
    if call.kind == "reshape":
        return None  # a reshape is exact under CKKS; make_he_friendly still makes it a module
    if call.module is None:
        return Issue(
            call.node, call.target, f"{where}: {call.reason}", "no automatic fix: rewrite forward() without it"
        )
    module = type(call.module).__name__
    if call.kind == "activation":
        return Issue(
            call.node,
            call.target,
            f"{where} is not a polynomial; CKKS evaluates only additions and multiplications",
            f"make_he_friendly makes it a {module} module and replaces that by Square() or a fitted "
            "degree-2 polynomial",
        )
    if call.kind == "maxpool":
        return Issue(
            call.node,
            call.target,
            f"{where}: max-pooling needs comparisons, which CKKS cannot evaluate",
            f"make_he_friendly makes it a {module} module and replaces that by average pooling",
        )
    return Issue(
        call.node,
        call.target,
        f"{where} needs exponentials and a division",
        "remove it: the argmax of the logits is unchanged; apply it after decryption "
        f"(make_he_friendly makes it a {module} module and replaces that by Identity)",
    )


def validate(model: nn.Module) -> list[Issue]:
    """Every leaf module of ``model`` and every call in its forward that cannot run under CKKS, with its fix.

    An empty list means nothing was found. Calls written in ``forward`` are found by tracing
    it with ``torch.fx`` (an issue's ``module_name`` is then the graph node's name); a forward
    that cannot be traced is checked later, when the model is compiled.
    """
    inner = unwrap(model)
    issues = [i for n, m in _leaves(inner) if (i := _issue_for(n, m)) is not None]
    return issues + [i for c in find_calls(inner) if (i := _issue_for_call(c)) is not None]


def is_he_friendly(model: nn.Module) -> bool:
    """True if :func:`validate` finds nothing."""
    return not validate(model)


ActivationReplacement = Callable[[nn.Module, "tuple[float, float]"], nn.Module]
ACTIVATION_REPLACEMENTS: Registry[ActivationReplacement] = Registry("HE activation replacement")


@ACTIVATION_REPLACEMENTS.register("square")
def _square(original: nn.Module, interval: tuple[float, float]) -> nn.Module:
    return Square()


@ACTIVATION_REPLACEMENTS.register("poly")
def _poly(original: nn.Module, interval: tuple[float, float]) -> nn.Module:
    with eval_mode(original):
        coeffs = fit_polynomial(lambda t: original(t), interval=interval, degree=2)
    return PolyActivation(coeffs)


@dataclass
class FineTune:
    """Short supervised fine-tuning after conversion (cross-entropy, Adam, gradient clipping)."""

    x: torch.Tensor
    y: torch.Tensor
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or not isinstance(self.y, torch.Tensor):
            raise ModelError("FineTune needs tensors x and y")
        if self.x.shape[0] != self.y.shape[0] or self.x.shape[0] == 0:
            raise ModelError(
                f"FineTune x and y must have the same, non-zero length; got {self.x.shape[0]} and {self.y.shape[0]}"
            )
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ModelError("FineTune needs epochs >= 1, batch_size >= 1 and lr > 0")


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent = root
    *path, last = name.split(".")
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, last, new)


def _call_order(model: nn.Module, example: torch.Tensor) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    calls: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    handles = []
    for name, m in _leaves(model):

        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any, _n: str = name) -> None:
            if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                calls.append((_n, args[0].detach(), out.detach()))

        handles.append(m.register_forward_hook(hook))
    try:
        with eval_mode(model), torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return calls


def _fold(prev: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> bool:
    if not isinstance(prev, _FOLD_TARGETS) or bn.running_mean is None or bn.running_var is None:
        return False
    out_dim = prev.out_features if isinstance(prev, nn.Linear) else prev.out_channels
    if out_dim != bn.num_features:
        return False
    with torch.no_grad():
        g = 1.0 / torch.sqrt(bn.running_var.double() + bn.eps)
        if bn.affine:
            g = g * bn.weight.double()
        shift = -bn.running_mean.double() * g + (bn.bias.double() if bn.affine else 0.0)
        w = prev.weight
        w.copy_((w.double() * g.view(-1, *([1] * (w.dim() - 1)))).to(w.dtype))
        if prev.bias is None:
            prev.bias = nn.Parameter(torch.zeros(out_dim, dtype=w.dtype, device=w.device))
        prev.bias.copy_((prev.bias.double() * g + shift).to(prev.bias.dtype))
    return True


def _bn_as_affine(bn: nn.modules.batchnorm._BatchNorm) -> ChannelAffine:
    with torch.no_grad():
        g = 1.0 / torch.sqrt(bn.running_var.double() + bn.eps)  # type: ignore[union-attr]
        if bn.affine:
            g = g * bn.weight.double()
        shift = -bn.running_mean.double() * g + (bn.bias.double() if bn.affine else 0.0)  # type: ignore[union-attr]
    return ChannelAffine(g.float(), shift.float())


def _example_input(model: nn.Module, input_shape: Sequence[int] | None, x: torch.Tensor | None) -> torch.Tensor | None:
    if x is not None:
        return x[: min(64, x.shape[0])].float()
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None:
        return None
    return torch.rand((2, *[int(s) for s in shape]), generator=torch.Generator().manual_seed(0))


def make_he_friendly(
    model: nn.Module,
    *,
    activation: str = "square",
    fine_tune: FineTune | tuple[torch.Tensor, torch.Tensor] | None = None,
    input_shape: Sequence[int] | None = None,
    poly_interval: tuple[float, float] | None = None,
) -> nn.Module:
    """A converted copy of ``model`` that :func:`validate` accepts (the input is not modified).

    ``activation``: ``"square"`` or ``"poly"`` (a degree-2 least-squares fit of each
    activation on the range its inputs take on the fine-tuning data, or ``poly_interval``,
    or (-4, 4)). ``fine_tune``: ``(x, y)`` or a :class:`FineTune` to train the converted
    model briefly. BatchNorm is folded into the layer that runs just before it, found by
    running the model on the fine-tuning data or a random input of ``input_shape``
    (default ``model.input_shape``); without either, the preceding module in registration
    order is used. Raises :class:`ModelError` for problems without an automatic fix.
    """
    replace_act = ACTIVATION_REPLACEMENTS.get(activation)
    ft = FineTune(*fine_tune) if isinstance(fine_tune, tuple) else fine_tune
    original = copy.deepcopy(unwrap(model))
    converted = modularize(original)  # calls in forward() become modules (or a ModelError names the node)
    shape_attr = getattr(original, "input_shape", None)
    if converted is not original and shape_attr is not None:
        converted.input_shape = shape_attr  # the GraphModule is ours: keep what compile_model reads
        input_shape = input_shape if input_shape is not None else shape_attr
    converted.eval()
    example = _example_input(converted, input_shape, ft.x if ft is not None else None)
    calls = _call_order(converted, example) if example is not None else []
    leaves = dict(_leaves(converted))

    # BatchNorm: fold into the layer whose output it receives.
    order = [c[0] for c in calls] or list(leaves)
    outputs = {c[0]: c[2] for c in calls}
    inputs = {c[0]: c[1] for c in calls}
    for idx, name in enumerate(order):
        bn = leaves.get(name)
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not bn.track_running_stats:
            continue
        prev_name = order[idx - 1] if idx > 0 else None
        prev = leaves.get(prev_name) if prev_name is not None else None
        feeds = (
            prev_name is None
            or not calls
            or (
                prev_name in outputs
                and outputs[prev_name].shape == inputs[name].shape
                and torch.equal(outputs[prev_name], inputs[name])
            )
        )
        if prev is not None and feeds and _fold(prev, bn):
            logger.info("folded %s into %s", name, prev_name)
            _set_module(converted, name, nn.Identity())
        else:
            logger.info("%s has no linear layer right before it; kept as a frozen per-channel affine map", name)
            _set_module(converted, name, _bn_as_affine(bn))

    ranges: dict[str, float] = {}
    if activation == "poly" and poly_interval is None and calls:
        for n, inp, _ in calls:
            if isinstance(leaves.get(n), NON_POLYNOMIAL_ACTIVATIONS):
                ranges[n] = max(float(torch.quantile(inp.abs().flatten().float(), 0.999)), 1e-3)

    for name, m in _leaves(converted):
        if isinstance(m, NON_POLYNOMIAL_ACTIVATIONS):
            r = ranges.get(name)
            interval = poly_interval or ((-r, r) if r is not None else (-4.0, 4.0))
            _set_module(converted, name, replace_act(m, interval))
        elif isinstance(m, _MAXPOOL) and m.dilation in (1, (1,), (1, 1), (1, 1, 1)):
            avg_cls = {nn.MaxPool1d: nn.AvgPool1d, nn.MaxPool2d: nn.AvgPool2d, nn.MaxPool3d: nn.AvgPool3d}[type(m)]
            _set_module(converted, name, avg_cls(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode))
        elif isinstance(m, _ADAPTIVE_MAXPOOL):
            avg_cls = {
                nn.AdaptiveMaxPool1d: nn.AdaptiveAvgPool1d,
                nn.AdaptiveMaxPool2d: nn.AdaptiveAvgPool2d,
                nn.AdaptiveMaxPool3d: nn.AdaptiveAvgPool3d,
            }[type(m)]
            _set_module(converted, name, avg_cls(m.output_size))
        elif isinstance(m, _SOFTMAX):
            _set_module(converted, name, nn.Identity())

    remaining = validate(converted)
    if remaining:
        raise ModelError("make_he_friendly cannot fix every layer:\n" + format_issues(remaining))
    if ft is not None:
        fine_tune_model(converted, ft)
    return converted.eval()


def fine_tune_model(model: nn.Module, ft: FineTune) -> None:
    """Train ``model`` in place on ``(ft.x, ft.y)``: cross-entropy, Adam, gradient clipping,
    shuffled by a generator seeded with ``ft.seed``; the model's mode is restored after.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(4, 2)
        >>> fine_tune_model(m, FineTune(torch.rand(8, 4), torch.randint(0, 2, (8,)), epochs=1))
        >>> m.training, m.weight.grad is None
        (True, True)
    """
    gen = torch.Generator().manual_seed(ft.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    opt = torch.optim.Adam(params, lr=ft.lr)
    x, y = ft.x.float(), ft.y.long()
    with train_mode(model):
        for epoch in range(ft.epochs):
            perm = torch.randperm(x.shape[0], generator=gen)
            total = 0.0
            for start in range(0, x.shape[0], ft.batch_size):
                idx = perm[start : start + ft.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x[idx]), y[idx])
                if not math.isfinite(float(loss.detach())):
                    raise ModelError(
                        "fine-tuning diverged (non-finite loss); lower FineTune.lr or use activation='poly'"
                    )
                torch.autograd.backward(loss)
                torch.nn.utils.clip_grad_norm_(params, ft.max_grad_norm)
                opt.step()
                total += float(loss.detach()) * idx.numel()
            logger.info("fine-tune epoch %d: loss %.4f", epoch + 1, total / x.shape[0])
    for p in params:
        p.grad = None


__all__ = [
    "ACTIVATION_REPLACEMENTS",
    "NON_POLYNOMIAL_ACTIVATIONS",
    "FineTune",
    "Issue",
    "fine_tune_model",
    "format_issues",
    "is_he_friendly",
    "make_he_friendly",
    "validate",
]
