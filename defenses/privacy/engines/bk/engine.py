""":class:`BKEngine` (``bk``) and :class:`GhostEngine` (``ghost``): the book-keeping engines.

The engine wraps the model in a :class:`~defenses.privacy.engines.bk.wrapper.BKModule`,
puts a forward hook on every trained module with a registered
:class:`~defenses.privacy.engines.bk.layer.Layer`, records one
:class:`~defenses.privacy.engines.bk.capture.Capture` per call, and after the backward
pass turns each layer's calls into a block per group of samples
(:class:`~defenses.privacy.engines.bk.grads.BKGrads`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk.engine import BKEngine
    >>> engine = BKEngine(policy="materialize")
    >>> model = engine.attach(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
    >>> model(torch.randn(5, 3)).sum().div(5).backward()
    >>> psg = engine.collect()
    >>> psg.batch_size, psg.sq_norms().shape
    (5, torch.Size([5]))
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from defenses.privacy.engines.base import (
    EmptyGrads,
    Engine,
    PerSampleGrads,
    StepTap,
    trainable_leaf_modules,
)
from defenses.privacy.engines.bk.blocks import Block, PerSampleBlock
from defenses.privacy.engines.bk.capture import Capture, LayerCalls, calls_by_group
from defenses.privacy.engines.bk.chooser import (
    DEFAULT_MAX_MATERIALIZE_BYTES,
    check_policy,
)
from defenses.privacy.engines.bk.grads import BKGrads, BlockGroup
from defenses.privacy.engines.bk.layer import Layer
from defenses.privacy.engines.bk.registry import layer_for
from defenses.privacy.engines.bk.wrapper import BKModule, grad_source
from securetrain.errors import EngineUnsupported


class BKEngine(Engine):
    """Per-sample clipping from activations and output gradients (``bk`` and ``ghost`` modes).

    ``policy``: ``"auto"`` picks, per layer, materialised per-sample gradients or ghost norms
    by speed, and the one that needs less memory when materialising would exceed
    ``max_bytes``; ``"ghost"`` always picks the one that needs less memory (memory-lean);
    ``"materialize"`` never uses ghost norms; ``"ghost-only"`` always does (for checks);
    see :mod:`defenses.privacy.engines.bk.chooser`.
    ``skip_param_grads`` (default): autograd does not compute the parameters' batch
    gradients (see :class:`BKModule`); the output of a trained layer whose input needs no
    gradient (the first layer, an embedding of integer inputs) is made to receive one.
    """

    name: ClassVar[str] = "bk"
    description: ClassVar[str] = "book-keeping: norms from activations and output gradients, one backward"

    def __init__(
        self, policy: str = "auto", max_bytes: int = DEFAULT_MAX_MATERIALIZE_BYTES, *, skip_param_grads: bool = True
    ) -> None:
        super().__init__()
        self.policy = check_policy(policy)
        self.max_bytes = int(max_bytes)
        self.skip_param_grads = bool(skip_param_grads)
        self._anchors: dict[torch.device, torch.Tensor] = {}  # one per device (see grad_source)
        self._captures: list[Capture] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._layers: list[Layer[Any]] = []
        self._unbatched: dict[str, tuple[int, ...]] = {}
        self.tap: StepTap | None = None

    @classmethod
    def unsupported(cls, model: nn.Module) -> dict[str, str]:
        """``{module name: reason}`` for every trainable module ``bk`` cannot handle."""
        bad: dict[str, str] = {}
        for name, m in trainable_leaf_modules(model):
            handler = layer_for(m)
            if handler is None:
                bad[name or "(root)"] = f"{type(m).__name__} has no bk handler"
                continue
            why = handler.check(m)
            if why:
                bad[name or "(root)"] = f"{type(m).__name__}: {why}"
        return bad

    def attach(self, model: nn.Module) -> nn.Module:
        bad = self.unsupported(model)
        if bad:
            raise EngineUnsupported(
                "bk cannot compute per-sample gradients of: " + "; ".join(f"{k} ({v})" for k, v in bad.items()),
                list(bad),
            )
        self.plain = model
        trained = [p for _, m in trainable_leaf_modules(model) for p in m.parameters(recurse=False) if p.requires_grad]
        wrapper = BKModule(model, trained, self.skip_param_grads)
        self.wrapped = wrapper
        self.tap = wrapper.tap
        for name, m in trainable_leaf_modules(model):
            handler = layer_for(m)
            assert handler is not None
            layer = handler(m, name)
            self._layers.append(layer)
            self._handles.append(m.register_forward_hook(self._make_hook(layer)))
        return wrapper

    def _anchor(self, device: torch.device) -> torch.Tensor:
        """The scalar that :func:`grad_source` ties an output on ``device`` to (made once per device)."""
        anchor = self._anchors.get(device)
        if anchor is None:
            anchor = self._anchors[device] = torch.zeros((), device=device, requires_grad=True)
        return anchor

    def _make_hook(self, layer: Layer[Any]) -> Callable[[nn.Module, tuple[Any, ...], Any], torch.Tensor | None]:
        """The forward hook recording ``layer``'s calls (batched, on the per-sample path) as captures."""

        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> torch.Tensor | None:
            tap = self.tap
            if tap is None or not tap.recording or not isinstance(output, torch.Tensor):
                return None
            a = inputs[0]
            expected = tap.group_batch.get(tap.group)
            if expected is None or a.dim() == 0 or a.shape[0] != expected:
                self._unbatched[layer.name] = tuple(a.shape)
                return None
            replaced = None
            if not output.requires_grad:
                if not self.skip_param_grads or not output.is_floating_point():
                    return None
                # parameters are off and the input needs no gradient: the output starts the backward pass
                output = replaced = grad_source(output, self._anchor(output.device))
            capture = Capture(layer, layer.prepare(a), tap.group, self.policy, self.max_bytes, source=weakref.ref(a))
            output.register_hook(capture.add_grad)
            self._captures.append(capture)
            return replaced

        return hook

    def detach(self) -> nn.Module:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.clear()
        assert self.plain is not None
        return self.plain

    def clear(self) -> None:
        self._captures.clear()
        for layer in self._layers:
            layer.release()
        if self.tap is not None:
            self.tap.reset()

    def _raise_unrecorded(self) -> None:
        """Layers that saw an unbatched input: :class:`EngineUnsupported`."""
        if self._unbatched:
            names = sorted(self._unbatched)
            detail = ", ".join(f"{n} got input of shape {self._unbatched[n]}" for n in names)
            self._unbatched.clear()
            raise EngineUnsupported(
                f"per-sample gradients need every trainable layer to see the batch dimension first; {detail}. "
                "Index such layers with a batched tensor (e.g. self.pos(positions.expand(x.shape[0], -1)))",
                names,
            )

    def collect(self) -> PerSampleGrads:
        self._raise_unrecorded()
        assert self.tap is not None
        params = self.params()
        groups: list[BlockGroup] = []
        for gid, layers in sorted(calls_by_group(self._captures).items()):
            batch = self.tap.group_batch.get(gid, 0)
            if batch:
                blocks = [self._block(layer, rec) for layer, rec in layers.items()]
                groups.append(BlockGroup(batch, blocks))
        if not groups:
            device = params[0].device if params else torch.device("cpu")
            return EmptyGrads(params, device)
        return BKGrads(groups, params, autograd_writes_grad=not self.skip_param_grads)

    def _block(self, layer: Layer[Any], rec: LayerCalls) -> Block:
        """One layer's block: its kept calls combined, or the gradients formed during the backward pass summed."""
        if not rec.reduced:
            return layer.block(rec.calls, self.policy, self.max_bytes)
        parts = list(rec.reduced)
        for a, g in rec.calls:  # some calls were kept (e.g. ghost-sized): form theirs too, norms need the sum
            more = layer.reduce(a, g, self.policy, self.max_bytes, force=True)
            assert more is not None
            parts.append(more)
        total = parts[0]
        for more in parts[1:]:
            total = {p: t + more[p] for p, t in total.items()}
        return PerSampleBlock(total)


class GhostEngine(BKEngine):
    """``bk`` that always picks, per layer, the norm computation needing less memory (memory-lean)."""

    name: ClassVar[str] = "ghost"
    description: ClassVar[str] = "book-keeping with the least memory per layer"

    def __init__(self, max_bytes: int = DEFAULT_MAX_MATERIALIZE_BYTES, *, skip_param_grads: bool = True) -> None:
        super().__init__(policy="ghost", max_bytes=max_bytes, skip_param_grads=skip_param_grads)
