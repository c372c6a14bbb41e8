"""The contract of a per-sample gradient engine.

An engine attaches to a model and, after each backward pass, hands the DP optimizer a
:class:`PerSampleGrads`: per-sample gradient norms and weighted sums of the per-sample
gradients, which is all DP-SGD needs (clip factors are weights). Engines differ in how
they get there: Opacus's hooks, ExpandedWeights or functorch materialise every
per-sample gradient; the book-keeping engine (``bk``) computes norms from activations
and output gradients and never materialises what it does not need; ``vmap`` recomputes
the whole model per sample with ``torch.func``.

Each engine wraps the user's module in an ``nn.Module`` that keeps it as ``_module`` (so
:func:`securetrain.modes.unwrap` finds it) and exposes ``hooks_enabled`` /
``disable_hooks()`` / ``enable_hooks()`` (so :func:`securetrain.modes.attack_mode` can
run attacks on it without side effects).

Example:
    >>> from defenses.privacy.engines import ENGINES
    >>> sorted(ENGINES.names())
    ['bk', 'ew', 'functorch', 'ghost', 'hooks', 'vmap']
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

# Re-exported so that ``from defenses.privacy.engines.base import EngineUnsupported`` keeps working:
# there is one EngineUnsupported, securetrain.errors's (a ModelError, hence a ValueError).
from securetrain.errors import EngineUnsupported


class PerSampleGrads(ABC):
    """Per-sample gradients of one backward pass (or several, see ``groups``).

    ``batch_size`` is the number of per-sample gradients (the sum over ``groups``
    backward passes when gradients were accumulated).
    """

    batch_size: int
    groups: int

    @abstractmethod
    def sq_norms(self) -> torch.Tensor:
        """Squared L2 norm over all parameters of each per-sample gradient, shape ``(batch_size,)``."""

    @abstractmethod
    def add_weighted(self, weights: torch.Tensor, out: dict[nn.Parameter, torch.Tensor]) -> None:
        """``out[p] += sum_i weights[i] * grad_i(p)`` for every parameter the engine covers."""

    @abstractmethod
    def implied_grads(self) -> dict[nn.Parameter, torch.Tensor | None]:
        """What autograd's ``p.grad`` must be if the loss is only the per-sample path.

        ``None`` for a parameter means the engine cannot tell (no check for it).
        """

    @abstractmethod
    def materialize(self) -> dict[nn.Parameter, torch.Tensor]:
        """Every per-sample gradient, ``(batch_size, *p.shape)`` (tests and probes only)."""


class EmptyGrads(PerSampleGrads):
    """No sample in this step (an empty Poisson batch): zero norms, nothing to add."""

    def __init__(self, params: Sequence[nn.Parameter], device: torch.device) -> None:
        self.batch_size = 0
        self.groups = 1
        self._params = list(params)
        self._device = device

    def sq_norms(self) -> torch.Tensor:
        return torch.zeros(0, device=self._device)

    def add_weighted(self, weights: torch.Tensor, out: dict[nn.Parameter, torch.Tensor]) -> None:
        return None

    def implied_grads(self) -> dict[nn.Parameter, torch.Tensor | None]:
        return {p: None for p in self._params}

    def materialize(self) -> dict[nn.Parameter, torch.Tensor]:
        return {p: torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype) for p in self._params}


ForwardListener = Callable[[nn.Module, tuple[Any, ...], Any], None]


class Engine(ABC):
    """Attach to a model, collect per-sample gradients after each backward, detach."""

    name: ClassVar[str] = "engine"
    description: ClassVar[str] = ""

    def __init__(self) -> None:
        self.wrapped: nn.Module | None = None
        self.plain: nn.Module | None = None

    @abstractmethod
    def attach(self, model: nn.Module) -> nn.Module:
        """Wrap ``model``; return the module to train with."""

    @abstractmethod
    def detach(self) -> nn.Module:
        """Remove every hook and attribute the engine added; return the plain module."""

    @abstractmethod
    def collect(self) -> PerSampleGrads:
        """Per-sample gradients of everything backpropagated since the last :meth:`clear`."""

    @abstractmethod
    def clear(self) -> None:
        """Forget captured activations and gradients (called after every optimizer step)."""

    def params(self) -> list[nn.Parameter]:
        """The trainable parameters of the plain module, in order (cached at the first call)."""
        assert self.plain is not None
        cached = getattr(self, "_params_cache", None)
        if cached is None or cached[0] is not self.plain:
            cached = (self.plain, [p for p in self.plain.parameters() if p.requires_grad])
            self._params_cache = cached
        return list(cached[1])


def trainable_leaf_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Submodules that own trainable parameters, each parameter counted at its deepest owner.

    A module that only re-exposes its children's parameters under other names (as
    Opacus's ``DPLSTM`` does) owns nothing.
    """
    owner: dict[int, tuple[str, nn.Module]] = {}
    for name, m in model.named_modules():  # pre-order: deeper owners overwrite their parents
        for p in m.parameters(recurse=False):
            if p.requires_grad:
                owner[id(p)] = (name, m)
    seen: set[int] = set()
    for name, m in model.named_modules():
        if id(m) in seen:
            continue
        if any(owner.get(id(p), (None, None))[1] is m for p in m.parameters(recurse=False)):
            seen.add(id(m))
            yield name, m


def first_tensor(obj: Any) -> torch.Tensor | None:
    """The first tensor in a (nested) tuple/list/dict, or ``None``."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        for o in obj:
            t = first_tensor(o)
            if t is not None:
                return t
    if isinstance(obj, dict):
        for o in obj.values():
            t = first_tensor(o)
            if t is not None:
                return t
    return None


class StepTap:
    """Watches the top-level forward passes of a wrapped model between two optimizer steps.

    A forward pass counts when per-sample hooks are on (``wrapper.hooks_enabled``), the
    model is in training mode and autograd is recording; it *contributes* when its output
    later receives a gradient. Forward passes that share one backward pass form a group
    (the same samples seen twice, as in TRADES); a forward pass after a backward pass in
    the same step starts a new group (gradient accumulation).
    """

    def __init__(self, wrapper: nn.Module, *, hooks: bool = True) -> None:
        self.wrapper = wrapper
        self.recording = False  # True while a recorded forward pass runs
        self._handles = (
            [
                wrapper.register_forward_pre_hook(self._on_pre_forward, with_kwargs=True),
                wrapper.register_forward_hook(self._on_forward),
            ]
            if hooks
            else []
        )
        self.reset()

    def reset(self) -> None:
        """Start a new step: no forward pass seen."""
        self.group = 0
        self.forwards = 0
        self.contributing = 0
        self.group_batch: dict[int, int] = {}
        self._backward_seen = False
        self.accumulated = False

    def active(self) -> bool:
        """True when a forward pass now would be recorded."""
        return bool(getattr(self.wrapper, "hooks_enabled", True) and self.wrapper.training and torch.is_grad_enabled())

    def _on_pre_forward(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.active():
            self.before_forward(args if first_tensor(args) is not None else (kwargs,))

    def _on_forward(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self.recording:
            self.after_forward(output)

    def after_forward(self, output: Any) -> None:
        """Register the end of a recorded forward pass (its output's gradient marks the backward)."""
        self.recording = False
        out = first_tensor(output)
        if out is not None and out.requires_grad:
            fired = [False]

            def on_grad(grad: torch.Tensor) -> None:
                if not fired[0]:
                    fired[0] = True
                    self.contributing += 1
                self._backward_seen = True

            out.register_hook(on_grad)  # type: ignore[no-untyped-call]

    def before_forward(self, args: tuple[Any, ...]) -> None:
        """Register the start of one forward pass with positional ``args``."""
        x = first_tensor(args)
        batch = (int(x.shape[0]) if x.dim() > 0 else 1) if x is not None else None
        if self._backward_seen:
            self.group += 1
            self._backward_seen = False
            self.accumulated = True
        elif self.forwards and batch is not None and self.group_batch.get(self.group, batch) != batch:
            self.group += 1  # another batch in the same loss: its samples are different samples
        self.forwards += 1
        self.recording = True
        if batch is not None:
            self.group_batch.setdefault(self.group, batch)

    def remove(self) -> None:
        """Remove the hooks from the wrapper."""
        for h in self._handles:
            h.remove()
        self._handles = []


class HookToggle(nn.Module):
    """Base wrapper: keeps the plain module as ``_module``, a ``hooks_enabled`` switch, and a tap.

    The tap is driven from ``forward`` itself (no module hooks on the wrapper).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._module = module
        self.hooks_enabled = True
        self.tap = StepTap(self, hooks=False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        tap = self.tap
        if not (self.hooks_enabled and self.training and torch.is_grad_enabled()):
            return self._module(*args, **kwargs)
        tap.before_forward(args if first_tensor(args) is not None else (kwargs,))
        try:
            out = self._module(*args, **kwargs)
        except BaseException:
            tap.recording = False
            raise
        tap.after_forward(out)
        return out

    def disable_hooks(self) -> None:
        """Stop recording (attacks and evaluations run with hooks off)."""
        self.hooks_enabled = False

    def enable_hooks(self) -> None:
        """Record again."""
        self.hooks_enabled = True


__all__ = [
    "EmptyGrads",
    "Engine",
    "EngineUnsupported",
    "ForwardListener",
    "HookToggle",
    "PerSampleGrads",
    "StepTap",
    "first_tensor",
    "trainable_leaf_modules",
]
