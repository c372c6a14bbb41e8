"""Whole-model per-sample gradients with ``torch.func``: the engine of last resort.

After the backward pass, each sample's forward is recomputed alone under ``vmap`` and
differentiated against the gradient its output received. This needs nothing from the
layers: any model whose output for one sample depends on that sample only works,
including layers no hook can see (a position embedding indexed without the batch
dimension, parameters used directly in ``forward``). It costs a second forward and
backward, and dropout masks are drawn anew (``randomness="different"``), so with dropout
the clipped gradient is that of a fresh mask; each sample's contribution still depends on
that sample only, which is what the guarantee needs. For the same reason the engine cannot
tell what autograd's batch gradient must be while dropout is active (``implied_grads`` is
then ``None``: the validity check of loss terms outside the per-sample path is skipped).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines.vmap import VmapEngine
    >>> engine = VmapEngine()
    >>> model = engine.attach(nn.Linear(3, 2))
    >>> model(torch.randn(4, 3)).sum().div(4).backward()
    >>> engine.collect().materialize()[model._module.weight].shape
    torch.Size([4, 2, 3])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils import _pytree as pytree

from defenses.privacy.engines.base import (
    EmptyGrads,
    Engine,
    HookToggle,
    PerSampleGrads,
    first_tensor,
)


class _Materialized(PerSampleGrads):
    """Per-sample gradients held as tensors ``(B, *p.shape)``, raw (times 1/B of a mean loss)."""

    def __init__(
        self,
        groups: list[tuple[int, dict[nn.Parameter, torch.Tensor]]],
        params: Sequence[nn.Parameter],
        *,
        fresh_randomness: bool = False,
    ) -> None:
        self._params = list(params)
        self._fresh_randomness = fresh_randomness
        self._grads: dict[nn.Parameter, torch.Tensor] = {}
        for p in self._params:
            self._grads[p] = torch.cat([g[p] * float(b) for b, g in groups])
        self._raw_sum = {p: sum(g[p].sum(0) for _, g in groups) for p in self._params}
        self.batch_size = sum(b for b, _ in groups)
        self.groups = len(groups)

    def sq_norms(self) -> torch.Tensor:
        total: torch.Tensor | None = None
        for g in self._grads.values():
            n = g.reshape(g.shape[0], -1).pow(2).sum(1)
            total = n if total is None else total + n
        assert total is not None
        return total

    def add_weighted(self, weights: torch.Tensor, out: dict[nn.Parameter, torch.Tensor]) -> None:
        for p, g in self._grads.items():
            out[p].view(-1).addmv_(g.reshape(g.shape[0], -1).t(), weights)

    def implied_grads(self) -> dict[nn.Parameter, torch.Tensor | None]:
        if self._fresh_randomness:  # recomputed with new dropout masks: autograd's gradient used others
            return {p: None for p in self._params}
        return dict(self._raw_sum)  # type: ignore[arg-type]

    def materialize(self) -> dict[nn.Parameter, torch.Tensor]:
        return dict(self._grads)


class VmapEngine(Engine):
    """Recompute each sample's forward under ``torch.func.vmap`` and take its gradient."""

    name: ClassVar[str] = "vmap"
    description: ClassVar[str] = "torch.func over the whole model (any per-sample model; slowest)"

    def __init__(self, chunk_size: int | None = 256) -> None:
        super().__init__()
        self.chunk_size = chunk_size
        self._records: list[list[Any]] = []

    def attach(self, model: nn.Module) -> nn.Module:
        self.plain = model
        wrapper = HookToggle(model)
        self.wrapped = wrapper
        self.tap = wrapper.tap
        self._handle = wrapper.register_forward_hook(self._record, with_kwargs=True)
        return wrapper

    def _record(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if not self.tap.active():
            return
        out = first_tensor(output)
        if out is None or not out.requires_grad:
            return
        detached = pytree.tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, (args, kwargs))
        rec = [detached, None, self.tap.group]

        def on_grad(g: torch.Tensor) -> None:
            rec[1] = g if rec[1] is None else rec[1] + g

        out.register_hook(on_grad)  # type: ignore[no-untyped-call]
        self._records.append(rec)

    def detach(self) -> nn.Module:
        self._handle.remove()
        self.clear()
        assert self.plain is not None
        return self.plain

    def clear(self) -> None:
        self._records.clear()
        self.tap.reset()

    def _per_sample(self, inputs: Any, g: torch.Tensor, batch: int) -> dict[nn.Parameter, torch.Tensor]:
        from torch.func import functional_call, grad, vmap

        assert self.plain is not None
        model = self.plain
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
        buffers = {n: b for n, b in model.named_buffers()}
        leaves, spec = pytree.tree_flatten(inputs)
        is_batched = [isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == batch for t in leaves]
        batched_leaves = [t for t, b in zip(leaves, is_batched) if b]

        def loss_one(prm: dict[str, torch.Tensor], sample: list[torch.Tensor], g_i: torch.Tensor) -> torch.Tensor:
            it = iter(sample)
            rebuilt = [next(it).unsqueeze(0) if b else t for t, b in zip(leaves, is_batched)]
            a, k = pytree.tree_unflatten(rebuilt, spec)
            out = first_tensor(functional_call(model, {**prm, **frozen, **buffers}, tuple(a), dict(k)))
            assert out is not None
            return (out * g_i.unsqueeze(0)).sum()

        fn = vmap(grad(loss_one), in_dims=(None, 0, 0), randomness="different", chunk_size=self.chunk_size)
        res = fn(params, batched_leaves, g)
        by_param = dict(model.named_parameters())
        return {by_param[n]: res[n] for n in names}

    def collect(self) -> PerSampleGrads:
        params = self.params()
        groups: dict[int, list[tuple[Any, torch.Tensor]]] = {}
        for inputs, g, gid in self._records:
            if g is not None:
                groups.setdefault(gid, []).append((inputs, g))
        out: list[tuple[int, dict[nn.Parameter, torch.Tensor]]] = []
        for gid in sorted(groups):
            batch = self.tap.group_batch.get(gid, 0)
            if batch == 0:
                continue
            acc: dict[nn.Parameter, torch.Tensor] = {}
            for inputs, g in groups[gid]:
                for p, t in self._per_sample(inputs, g, batch).items():
                    acc[p] = acc[p] + t if p in acc else t
            for p in params:
                acc.setdefault(p, torch.zeros((batch, *p.shape), dtype=p.dtype, device=p.device))
            out.append((batch, acc))
        if not out:
            device = params[0].device if params else torch.device("cpu")
            return EmptyGrads(params, device)
        return _Materialized(out, params, fresh_randomness=_dropout_active(self.plain))


def _dropout_active(model: nn.Module | None) -> bool:
    """True if a dropout module of ``model`` is in training mode with a non-zero rate."""
    if model is None:
        return False
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0 for m in model.modules())
