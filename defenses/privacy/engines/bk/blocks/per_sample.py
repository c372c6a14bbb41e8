"""Per-sample block: small per-sample gradients formed directly (normalisation layers).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk.blocks.per_sample import PerSampleBlock
    >>> bias = nn.Parameter(torch.zeros(2))
    >>> block = PerSampleBlock({bias: torch.tensor([[3.0, 4.0], [0.0, 1.0]])})
    >>> block.sq_norms()
    tensor([25.,  1.])
    >>> block.implied()[bias]
    tensor([3., 5.])
"""

from __future__ import annotations

import torch

from defenses.privacy.engines.bk.blocks.base import (
    Block,
    Mode,
    ParamGrads,
    plus,
    sq_rows,
)


class PerSampleBlock(Block):
    """Per-sample gradients ``(B, *p.shape)`` of each parameter, given."""

    mode: Mode = "mat"

    def __init__(self, grads: ParamGrads) -> None:
        self.grads = grads

    def sq_norms(self) -> torch.Tensor:
        total: torch.Tensor | None = None
        for g in self.grads.values():
            total = plus(total, sq_rows(g.flatten(1)))
        assert total is not None
        return total

    def add_weighted(self, w: torch.Tensor, out: ParamGrads) -> None:
        for p, g in self.grads.items():
            out[p].view(-1).addmv_(g.flatten(1).t(), w)

    def implied(self) -> ParamGrads:
        return {p: g.sum(0) for p, g in self.grads.items()}

    def materialize(self) -> ParamGrads:
        return dict(self.grads)
