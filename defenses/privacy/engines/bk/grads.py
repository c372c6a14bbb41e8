""":class:`BKGrads`: per-sample gradients of one or more groups of samples, kept as blocks.

Blocks hold *raw* gradients (of a mean loss: ``1/B`` each); the per-sample gradient of
a group of ``B`` samples is ``B`` times its raw gradient.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk.blocks import PerSampleBlock
    >>> from defenses.privacy.engines.bk.grads import BKGrads, BlockGroup
    >>> bias = nn.Parameter(torch.zeros(1))
    >>> raw = torch.tensor([[0.5], [1.0]])  # two samples of a mean loss
    >>> psg = BKGrads([BlockGroup(2, [PerSampleBlock({bias: raw})])], [bias])
    >>> psg.sq_norms()
    tensor([1., 4.])
    >>> psg.materialize()[bias]
    tensor([[1.],
            [2.]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from defenses.privacy.engines.base import PerSampleGrads
from defenses.privacy.engines.bk.blocks import Block, ParamGrads
from defenses.privacy.engines.bk.blocks.base import plus


@dataclass(frozen=True)
class BlockGroup:
    """The blocks of every recorded layer for one group of ``batch`` samples."""

    batch: int
    blocks: list[Block]


class BKGrads(PerSampleGrads):
    """Per-sample gradients of one or more groups of samples, kept as layer blocks."""

    def __init__(
        self, groups: Sequence[BlockGroup], params: Sequence[nn.Parameter], autograd_writes_grad: bool = True
    ) -> None:
        self._groups = list(groups)
        self._params = list(params)
        self._autograd_writes_grad = autograd_writes_grad
        self.batch_size = sum(g.batch for g in self._groups)
        self.groups = len(self._groups)

    def sq_norms(self) -> torch.Tensor:
        parts = []
        for grp in self._groups:
            raw: torch.Tensor | None = None
            for blk in grp.blocks:
                raw = plus(raw, blk.sq_norms())
            if raw is None:
                ref = self._params[0] if self._params else None
                raw = torch.zeros(grp.batch, device=ref.device if ref is not None else None)
            parts.append(raw * float(grp.batch * grp.batch))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def add_weighted(self, weights: torch.Tensor, out: ParamGrads) -> None:
        start = 0
        for grp in self._groups:
            w = weights[start : start + grp.batch] * float(grp.batch)
            start += grp.batch
            for blk in grp.blocks:
                blk.add_weighted(w, out)

    def implied_grads(self) -> dict[nn.Parameter, torch.Tensor | None]:
        totals: ParamGrads = {p: torch.zeros_like(p) for p in self._params}
        if self._autograd_writes_grad:  # else autograd computed no batch gradient of these
            for grp in self._groups:
                for blk in grp.blocks:
                    for p, g in blk.implied().items():
                        totals[p] = totals[p] + g
        return {p: t for p, t in totals.items()}

    def materialize(self) -> ParamGrads:
        parts: dict[nn.Parameter, list[torch.Tensor]] = {p: [] for p in self._params}
        for grp in self._groups:
            got: ParamGrads = {}
            for blk in grp.blocks:
                for p, g in blk.materialize().items():
                    got[p] = got[p] + g if p in got else g
            for p in self._params:
                mine = got.get(p)
                parts[p].append(
                    mine * float(grp.batch)
                    if mine is not None
                    else torch.zeros((grp.batch, *p.shape), dtype=p.dtype, device=p.device)
                )
        return {p: torch.cat(v) for p, v in parts.items()}
