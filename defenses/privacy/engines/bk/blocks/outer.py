"""Outer-product block: ``nn.Linear`` on ``(B, features)`` inputs, called once.

Sample ``i``'s weight gradient is the outer product ``g_i a_i^T``, whose norm is
``|g_i| |a_i|``; nothing per-sample is ever formed.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk.blocks.outer import OuterBlock
    >>> layer = nn.Linear(2, 1, bias=False)
    >>> block = OuterBlock(layer.weight, None, torch.tensor([[3.0, 4.0]]), torch.tensor([[2.0]]))
    >>> block.sq_norms()  # |g|^2 |a|^2 = 4 * 25
    tensor([100.])
"""

from __future__ import annotations

import torch
from torch import nn

from defenses.privacy.engines.bk.blocks.base import Block, Mode, ParamGrads, sq_rows


class OuterBlock(Block):
    """``nn.Linear`` on ``(B, features)`` inputs ``a`` with output gradients ``g``, called once."""

    mode: Mode = "outer"

    def __init__(
        self, weight: nn.Parameter | None, bias: nn.Parameter | None, a: torch.Tensor, g: torch.Tensor
    ) -> None:
        self.weight, self.bias, self.a, self.g = weight, bias, a, g

    def sq_norms(self) -> torch.Tensor:
        g2 = sq_rows(self.g)
        if self.weight is None:
            return g2
        total = g2 * sq_rows(self.a)
        return total + g2 if self.bias is not None else total

    def add_weighted(self, w: torch.Tensor, out: ParamGrads) -> None:
        if self.weight is not None:
            out[self.weight].addmm_(self.g.t(), self.a * w[:, None])
        if self.bias is not None:
            out[self.bias].addmv_(self.g.t(), w)

    def implied(self) -> ParamGrads:
        res: ParamGrads = {}
        if self.weight is not None:
            res[self.weight] = self.g.t() @ self.a
        if self.bias is not None:
            res[self.bias] = self.g.sum(0)
        return res

    def materialize(self) -> ParamGrads:
        res: ParamGrads = {}
        if self.weight is not None:
            res[self.weight] = self.g[:, :, None] * self.a[:, None, :]
        if self.bias is not None:
            res[self.bias] = self.g
        return res
