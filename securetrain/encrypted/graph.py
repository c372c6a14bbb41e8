"""The whole forward pass, traced with ``torch.fx``: computations written as function calls.

Module hooks see only submodules; ``F.relu(x)``, ``torch.relu(x)``, ``x.relu()``,
``F.max_pool2d(x, 2)``, ``torch.flatten(x, 1)`` or ``F.softmax(x, 1)`` written in
``forward`` are invisible to them. :func:`trace` records the forward as a graph (submodules
of ``torch.nn``, the CKKS layers of :data:`~securetrain.encrypted.layers.CKKS_LAYERS` and
the zoo's polynomial activations stay single calls); :func:`find_calls` lists every call
CKKS cannot run, each with the graph node's name and, where one exists, the equivalent
module; :func:`modularize` rewrites the graph so that each such call becomes that module
(``F.relu`` -> ``nn.ReLU``, ``F.max_pool2d(x, 2)`` -> ``nn.MaxPool2d(2)``,
``torch.flatten(x, 1)`` -> ``nn.Flatten(1)``, ...), after which the module-level fixes of
:func:`~securetrain.encrypted.make_he_friendly` apply, and refuses, naming the node, a
call that has no module equivalent (``torch.exp``, a pooling that returns indices, an
activation whose arguments are computed in ``forward``).

A forward that ``torch.fx`` cannot trace (control flow on tensor values) is reported by
:func:`trace` returning ``None``; the compiler's own chain check still applies then.

Example:
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from torch import nn
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = nn.Linear(4, 2)
    ...     def forward(self, x):
    ...         return self.fc(F.relu(torch.flatten(x, 1)))
    >>> [(c.node, c.target) for c in find_calls(Net())]
    [('flatten', 'torch.flatten'), ('relu', 'torch.nn.functional.relu')]
    >>> converted = modularize(Net())
    >>> [type(m).__name__ for m in converted.children()]
    ['Linear', 'Flatten', 'ReLU']
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from securetrain.encrypted.layers import get_layer_rule
from securetrain.errors import ModelError

logger = logging.getLogger(__name__)

ModuleBuilder = Callable[[dict[str, Any]], nn.Module]


@dataclass(frozen=True)
class CallRule:
    """A function or method call, its module equivalent, and what CKKS makes of it.

    ``kind``: ``"activation"`` (not a polynomial), ``"maxpool"``, ``"softmax"`` (each with a
    module fix in :func:`~securetrain.encrypted.make_he_friendly`), ``"reshape"`` (harmless,
    made a module so the compiled chain sees it) or ``"unsupported"`` (``build`` is None).
    ``params``: the names of the call's arguments after the input, in order.
    """

    label: str
    kind: str
    build: ModuleBuilder | None
    params: tuple[str, ...] = ()
    refused: tuple[tuple[str, object], ...] = ()
    """``(argument, value)`` pairs with no module equivalent (e.g. ``return_indices=True``)."""


def _simple(cls: type[nn.Module]) -> ModuleBuilder:
    return lambda kw: cls(**kw)


def _pool(cls: type[nn.Module]) -> ModuleBuilder:
    def build(kw: dict[str, Any]) -> nn.Module:
        kw = dict(kw)
        kw.pop("return_indices", None)
        return cls(**kw)

    return build


_POOL_PARAMS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_ACTIVATIONS: list[tuple[tuple[Any, ...], tuple[str, ...], type[nn.Module], tuple[str, ...]]] = [
    # (function targets, method names, module, argument names after the input)
    ((F.relu, torch.relu, F.relu_, torch.relu_), ("relu", "relu_"), nn.ReLU, ("inplace",)),
    ((F.relu6,), (), nn.ReLU6, ("inplace",)),
    ((F.leaky_relu, F.leaky_relu_), (), nn.LeakyReLU, ("negative_slope", "inplace")),
    ((F.elu, F.elu_), (), nn.ELU, ("alpha", "inplace")),
    ((F.selu, torch.selu), (), nn.SELU, ("inplace",)),
    ((F.celu,), (), nn.CELU, ("alpha", "inplace")),
    ((F.gelu,), (), nn.GELU, ("approximate",)),
    ((F.silu,), (), nn.SiLU, ("inplace",)),
    ((F.mish,), (), nn.Mish, ("inplace",)),
    ((torch.sigmoid, F.sigmoid), ("sigmoid", "sigmoid_"), nn.Sigmoid, ()),
    ((torch.tanh, F.tanh), ("tanh", "tanh_"), nn.Tanh, ()),
    ((F.softplus,), (), nn.Softplus, ("beta", "threshold")),
    ((F.softsign,), (), nn.Softsign, ()),
    ((F.hardtanh, F.hardtanh_), (), nn.Hardtanh, ("min_val", "max_val", "inplace")),
    ((F.hardswish,), (), nn.Hardswish, ("inplace",)),
    ((F.hardsigmoid,), (), nn.Hardsigmoid, ("inplace",)),
    ((F.logsigmoid,), (), nn.LogSigmoid, ()),
    ((F.tanhshrink,), (), nn.Tanhshrink, ()),
]
_UNSUPPORTED_FUNCTIONS: tuple[Any, ...] = (
    torch.exp,
    torch.log,
    torch.sqrt,
    torch.rsqrt,
    torch.abs,
    torch.clamp,
    torch.max,
    torch.min,
    torch.maximum,
    torch.minimum,
    torch.where,
    torch.sort,
    torch.topk,
    torch.argmax,
    torch.sign,
    F.layer_norm,
    F.batch_norm,
    F.group_norm,
    F.normalize,
)
_UNSUPPORTED_METHODS = ("exp", "log", "sqrt", "rsqrt", "abs", "clamp", "max", "min", "sign", "sort", "argmax", "topk")


def _qualname(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or "torch"
    name = getattr(fn, "__name__", repr(fn))
    if module.startswith("torch._C") or module == "torch.functional":
        module = "torch"
    return f"{module}.{name}"


def _build_tables() -> tuple[dict[Any, CallRule], dict[str, CallRule]]:
    functions: dict[Any, CallRule] = {}
    methods: dict[str, CallRule] = {}
    for targets, method_names, cls, params in _ACTIVATIONS:
        for fn in targets:
            functions[fn] = CallRule(_qualname(fn), "activation", _simple(cls), params)
        for m in method_names:
            methods[m] = CallRule(f"Tensor.{m}", "activation", _simple(cls), params)
    pools = {
        1: (nn.MaxPool1d, (F.max_pool1d, torch.max_pool1d)),
        2: (nn.MaxPool2d, (F.max_pool2d, torch.max_pool2d)),
        3: (nn.MaxPool3d, (F.max_pool3d, torch.max_pool3d)),
    }
    for cls, fns in pools.values():
        for fn in fns:
            functions[fn] = CallRule(
                _qualname(fn), "maxpool", _pool(cls), _POOL_PARAMS, refused=(("return_indices", True),)
            )
    adaptive = {
        F.adaptive_max_pool1d: nn.AdaptiveMaxPool1d,
        F.adaptive_max_pool2d: nn.AdaptiveMaxPool2d,
        F.adaptive_max_pool3d: nn.AdaptiveMaxPool3d,
    }
    for fn, cls in adaptive.items():
        functions[fn] = CallRule(
            _qualname(fn), "maxpool", _pool(cls), ("output_size", "return_indices"), refused=(("return_indices", True),)
        )
    functions[torch.flatten] = CallRule("torch.flatten", "reshape", _flatten, ("start_dim", "end_dim"))
    methods["flatten"] = CallRule("Tensor.flatten", "reshape", _flatten, ("start_dim", "end_dim"))
    soft = ("dim", "_stacklevel", "dtype")
    for fn, cls in ((F.softmax, nn.Softmax), (torch.softmax, nn.Softmax), (F.log_softmax, nn.LogSoftmax)):
        functions[fn] = CallRule(_qualname(fn), "softmax", _softmax(cls), soft)
    functions[torch.log_softmax] = CallRule("torch.log_softmax", "softmax", _softmax(nn.LogSoftmax), soft)
    methods["softmax"] = CallRule("Tensor.softmax", "softmax", _softmax(nn.Softmax), soft)
    methods["log_softmax"] = CallRule("Tensor.log_softmax", "softmax", _softmax(nn.LogSoftmax), soft)
    for fn in (
        F.max_pool1d_with_indices,
        F.max_pool2d_with_indices,
        F.max_pool3d_with_indices,
        F.adaptive_max_pool1d_with_indices,
        F.adaptive_max_pool2d_with_indices,
        F.adaptive_max_pool3d_with_indices,
    ):
        functions[fn] = CallRule(_qualname(fn), "maxpool", None)
    for fn in _UNSUPPORTED_FUNCTIONS:
        functions[fn] = CallRule(_qualname(fn), "unsupported", None)
    for m in _UNSUPPORTED_METHODS:
        methods[m] = CallRule(f"Tensor.{m}", "unsupported", None)
    return functions, methods


def _flatten(kw: dict[str, Any]) -> nn.Module:
    return nn.Flatten(int(kw.get("start_dim", 0)), int(kw.get("end_dim", -1)))


def _softmax(cls: type[nn.Module]) -> ModuleBuilder:
    def build(kw: dict[str, Any]) -> nn.Module:
        if kw.get("dim") is None:
            raise ValueError("a softmax without an explicit dim")
        if kw.get("dtype") is not None:
            raise ValueError("a softmax with a dtype")
        return cls(dim=kw["dim"])

    return build


FUNCTION_RULES, METHOD_RULES = _build_tables()
"""Rules by function object (``call_function`` nodes) and by tensor method name (``call_method``)."""


class _Tracer(fx.Tracer):
    """Keeps ``torch.nn`` modules and every module with a CKKS layer rule as single calls."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return super().is_leaf_module(m, module_qualified_name) or get_layer_rule(m) is not None


def trace(model: nn.Module) -> fx.GraphModule | None:
    """``model``'s forward as an ``fx.GraphModule`` sharing its submodules, or ``None`` if it cannot be traced."""
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except (fx.proxy.TraceError, RuntimeError, TypeError, AttributeError, NotImplementedError, ValueError) as exc:
        logger.info("torch.fx could not trace %s (%s): calls in its forward are not checked", type(model).__name__, exc)
        return None
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


@dataclass(frozen=True)
class Call:
    """One call in the traced forward that CKKS cannot run as it is."""

    node: str
    """The ``torch.fx`` node's name (unique in the graph)."""
    target: str
    """What is called: ``torch.nn.functional.relu``, ``Tensor.relu``, ``torch.exp``, ..."""
    kind: str
    module: nn.Module | None
    """The equivalent module (``None``: no automatic fix)."""
    reason: str = ""
    """Why there is no module equivalent (empty when there is one)."""


def _rule(node: fx.Node) -> CallRule | None:
    if node.op == "call_function":
        try:
            return FUNCTION_RULES.get(node.target)
        except TypeError:  # an unhashable target
            return None
    if node.op == "call_method" and isinstance(node.target, str):
        return METHOD_RULES.get(node.target)
    return None


def _call_of(node: fx.Node, rule: CallRule) -> Call:
    if rule.build is None:
        reason = "it returns indices" if rule.kind == "maxpool" else "it has no polynomial or linear equivalent"
        return Call(node.name, rule.label, rule.kind, None, reason)
    rest = node.args[1:]
    if len(rest) > len(rule.params):
        return Call(node.name, rule.label, rule.kind, None, "it is called with more arguments than expected")
    kw: dict[str, Any] = dict(zip(rule.params, rest))
    for k, v in node.kwargs.items():
        if k not in rule.params:
            return Call(node.name, rule.label, rule.kind, None, f"its argument {k!r} has no module equivalent")
        kw[k] = v
    if any(isinstance(v, fx.Node) for v in kw.values()):
        return Call(node.name, rule.label, rule.kind, None, "its arguments are computed in forward()")
    for name, bad in rule.refused:
        if kw.get(name) == bad:
            return Call(node.name, rule.label, rule.kind, None, f"{name}={bad!r} has no module equivalent")
    kw.pop("inplace", None)
    try:
        module = rule.build(kw)
    except (TypeError, ValueError) as exc:
        return Call(node.name, rule.label, rule.kind, None, f"no module equivalent ({exc})")
    return Call(node.name, rule.label, rule.kind, module)


def _calls(graph: fx.Graph) -> list[tuple[fx.Node, Call]]:
    found = []
    for node in graph.nodes:
        rule = _rule(node)
        if rule is not None:
            found.append((node, _call_of(node, rule)))
        elif node.op == "call_function" and node.target is operator.truediv and isinstance(node.args[1], fx.Node):
            found.append((node, Call(node.name, "division by a tensor", "unsupported", None, "CKKS cannot divide")))
    return found


def find_calls(model: nn.Module) -> list[Call]:
    """Every call in ``model``'s traced forward that CKKS cannot run as it is (empty if untraceable)."""
    gm = trace(model)
    return [] if gm is None else [c for _, c in _calls(gm.graph)]


def modularize(model: nn.Module) -> nn.Module:
    """``model`` with every call of :func:`find_calls` made a submodule (``model`` itself if there is none).

    The result is an ``fx.GraphModule`` sharing ``model``'s submodules and parameters; a
    new submodule is named after its graph node (``relu``, ``max_pool2d_1``, ...). Raises
    :class:`~securetrain.errors.ModelError` naming the first node that has no module
    equivalent.
    """
    gm = trace(model)
    if gm is None:
        return model
    calls = _calls(gm.graph)
    if not calls:
        return model
    refused = [c for _, c in calls if c.module is None]
    if refused:
        lines = "\n".join(f"- node {c.node!r} ({c.target}): {c.reason}" for c in refused)
        raise ModelError(
            "make_he_friendly cannot convert these calls in the model's forward() (found by torch.fx):\n"
            + lines
            + "\nrewrite them with modules that CKKS supports, or remove them"
        )
    taken = {n for n, _ in gm.named_modules()}
    for node, call in calls:
        assert call.module is not None
        name = node.name
        while name in taken:
            name = f"{name}_fn"
        taken.add(name)
        gm.add_submodule(name, call.module)
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return gm


__all__ = ["FUNCTION_RULES", "METHOD_RULES", "Call", "CallRule", "find_calls", "modularize", "trace"]
