"""Opacus's own per-sample gradient modules (``hooks``, ``functorch``, ``ew``) as engines.

They materialise ``p.grad_sample`` for every parameter; this adapter reads it, so the
clipping, noise and accounting around them are the same as for every other engine.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines.opacus_gsm import HooksEngine
    >>> engine = HooksEngine()
    >>> model = engine.attach(nn.Linear(3, 2))
    >>> model(torch.randn(4, 3)).sum().div(4).backward()
    >>> engine.collect().batch_size
    4
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from defenses.privacy.engines.base import (
    EmptyGrads,
    Engine,
    EngineUnsupported,
    PerSampleGrads,
    StepTap,
    first_tensor,
)


class GradSampleGrads(PerSampleGrads):
    """Per-sample gradients read from ``p.grad_sample`` (one tensor per backward pass)."""

    def __init__(
        self,
        grads: dict[nn.Parameter, list[torch.Tensor]],
        batch_sizes: Sequence[int],
        autograd_writes_grad: bool = True,
    ) -> None:
        self._grads = grads
        self.batch_size = int(sum(batch_sizes))
        self.groups = len(batch_sizes)
        self._autograd_writes_grad = autograd_writes_grad

    def sq_norms(self) -> torch.Tensor:
        total: torch.Tensor | None = None
        for parts in self._grads.values():
            g = parts[0] if len(parts) == 1 else torch.cat(parts)
            n = g.reshape(g.shape[0], -1).pow(2).sum(1)
            total = n if total is None else total + n
        assert total is not None
        return total

    def add_weighted(self, weights: torch.Tensor, out: dict[nn.Parameter, torch.Tensor]) -> None:
        for p, parts in self._grads.items():
            g = parts[0] if len(parts) == 1 else torch.cat(parts)
            out[p].view(-1).addmv_(g.reshape(g.shape[0], -1).t().to(out[p].dtype), weights)

    def implied_grads(self) -> dict[nn.Parameter, torch.Tensor | None]:
        if not self._autograd_writes_grad:  # ExpandedWeights: autograd leaves p.grad alone
            return {p: torch.zeros_like(p) for p in self._grads}
        return {p: sum(g.sum(0) / max(g.shape[0], 1) for g in parts) for p, parts in self._grads.items()}  # type: ignore[misc]

    def materialize(self) -> dict[nn.Parameter, torch.Tensor]:
        return {p: parts[0] if len(parts) == 1 else torch.cat(parts) for p, parts in self._grads.items()}


class _GSMEngine(Engine):
    """Common part: wrap with an Opacus ``GradSampleModule`` class, read ``p.grad_sample``."""

    autograd_writes_grad: ClassVar[bool] = True

    def _make(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def attach(self, model: nn.Module) -> nn.Module:
        self.plain = model
        try:
            wrapped = self._make(model)
        except NotImplementedError as exc:  # Opacus: trainable layer with buffers
            raise EngineUnsupported(f"{self.name}: {exc}") from exc
        self.wrapped = wrapped
        self.tap = StepTap(wrapped)
        return wrapped

    def detach(self) -> nn.Module:
        assert self.wrapped is not None and self.plain is not None
        self.tap.remove()
        self.wrapped.cleanup()  # type: ignore[operator]
        for p in self.plain.parameters():
            for attr in ("grad_sample", "_forward_counter", "_current_grad_sample", "summed_grad"):
                if hasattr(p, attr):
                    delattr(p, attr)
        for m in self.plain.modules():
            for attr in ("activations", "max_batch_len"):
                if attr in m.__dict__:
                    delattr(m, attr)
        return self.plain

    def clear(self) -> None:
        assert self.plain is not None
        for p in self.plain.parameters():
            if hasattr(p, "grad_sample"):
                p.grad_sample = None
        for m in self.plain.modules():
            if "activations" in m.__dict__:
                m.__dict__["activations"] = []  # a plain attribute of Opacus's (not a module or tensor)
            if "max_batch_len" in m.__dict__:
                del m.max_batch_len
        self.tap.reset()

    def collect(self) -> PerSampleGrads:
        params = self.params()
        grads: dict[nn.Parameter, list[torch.Tensor]] = {}
        sizes: list[int] | None = None
        for p in params:
            gs = getattr(p, "grad_sample", None)
            if gs is None:
                continue
            parts = list(gs) if isinstance(gs, list) else [gs]
            grads[p] = parts
            if sizes is None:
                sizes = [int(t.shape[0]) for t in parts]
        if sizes is None or sum(sizes) == 0:
            device = params[0].device if params else torch.device("cpu")
            return EmptyGrads(params, device)
        for p in params:  # a parameter the loss did not reach: zero per-sample gradients
            if p not in grads:
                grads[p] = [torch.zeros((s, *p.shape), dtype=p.dtype, device=p.device) for s in sizes]
        return GradSampleGrads(grads, sizes, self.autograd_writes_grad)


class HooksEngine(_GSMEngine):
    """Opacus ``GradSampleModule`` with its per-layer grad samplers (Opacus's default)."""

    name: ClassVar[str] = "hooks"
    description: ClassVar[str] = "Opacus hooks: per-layer grad samplers materialise p.grad_sample"
    force_functorch: ClassVar[bool] = False

    def _make(self, model: nn.Module) -> nn.Module:
        from opacus.grad_sample import GradSampleModule

        wrapped: nn.Module = GradSampleModule(
            model, batch_first=True, loss_reduction="mean", strict=True, force_functorch=self.force_functorch
        )
        return wrapped


class FunctorchEngine(HooksEngine):
    """Opacus ``GradSampleModule`` with ``torch.func`` for every layer."""

    name: ClassVar[str] = "functorch"
    description: ClassVar[str] = "Opacus with torch.func per layer"
    force_functorch: ClassVar[bool] = True


class _EWModule(nn.Module):
    """Opacus's ExpandedWeights module plus a hook switch and empty-batch support."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        from opacus.grad_sample import GradSampleModuleExpandedWeights

        self._gsm = GradSampleModuleExpandedWeights(module, batch_first=True, loss_reduction="mean")
        self._module = module
        self.hooks_enabled = True

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        x = first_tensor(args)
        if not (self.hooks_enabled and self.training and torch.is_grad_enabled()) or x is None or x.shape[0] == 0:
            return self._module(*args, **kwargs)
        return self._gsm(*args, **kwargs)

    def disable_hooks(self) -> None:
        self.hooks_enabled = False

    def enable_hooks(self) -> None:
        self.hooks_enabled = True

    def cleanup(self) -> None:
        self._gsm.cleanup()


class EWEngine(_GSMEngine):
    """PyTorch ExpandedWeights through Opacus (``call_for_per_sample_grads``)."""

    name: ClassVar[str] = "ew"
    description: ClassVar[str] = "ExpandedWeights (torch.nn.utils._per_sample_grad)"
    autograd_writes_grad: ClassVar[bool] = False

    def _make(self, model: nn.Module) -> nn.Module:
        return _EWModule(model)
