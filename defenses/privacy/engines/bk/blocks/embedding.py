"""Embedding block: ghost norms from the indices each sample looked up.

Sample ``i``'s gradient adds its output gradients ``G_i`` (``L x D``) into the rows it
looked up, so its squared norm is ``sum over positions l, m with I_il == I_im of
<G_il, G_im>``; nothing ``V x D`` per sample is formed.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk.blocks.embedding import EmbeddingBlock
    >>> table = nn.Embedding(5, 2)
    >>> I = torch.tensor([[1, 1], [1, 2]])  # sample 0 looks up row 1 twice
    >>> G = torch.ones(2, 2, 2)
    >>> EmbeddingBlock(table.weight, I, G).sq_norms()  # |(2, 2)|^2 and |(1, 1)|^2 + |(1, 1)|^2
    tensor([8., 4.])
"""

from __future__ import annotations

import torch
from torch import nn

from defenses.privacy.engines.bk.blocks.base import Block, Mode, ParamGrads, sq_rows


class EmbeddingBlock(Block):
    """``nn.Embedding``: indices ``I`` ``(B, L)``, output gradients ``G`` ``(B, L, D)``; ghost norms."""

    mode: Mode = "ghost"

    def __init__(self, weight: nn.Parameter, I: torch.Tensor, G: torch.Tensor) -> None:
        self.weight, self.I, self.G = weight, I, G

    def sq_norms(self) -> torch.Tensor:
        I, G = self.I, self.G
        if I.shape[1] == 1:
            return sq_rows(G.flatten(1))
        same = (I[:, :, None] == I[:, None, :]).to(G.dtype)
        return (same * torch.bmm(G, G.transpose(1, 2))).flatten(1).sum(1).clamp_(min=0)

    def add_weighted(self, w: torch.Tensor, out: ParamGrads) -> None:
        D = self.G.shape[2]
        out[self.weight].index_add_(0, self.I.reshape(-1), (self.G * w[:, None, None]).reshape(-1, D))

    def implied(self) -> ParamGrads:
        D = self.G.shape[2]
        z = torch.zeros_like(self.weight)
        return {self.weight: z.index_add_(0, self.I.reshape(-1), self.G.reshape(-1, D))}

    def materialize(self) -> ParamGrads:
        B, _, D = self.G.shape
        V = self.weight.shape[0]
        idx = (self.I + torch.arange(B, device=self.I.device)[:, None] * V).reshape(-1)
        z = torch.zeros(B * V, D, dtype=self.G.dtype, device=self.G.device)
        return {self.weight: z.index_add_(0, idx, self.G.reshape(-1, D)).view(B, V, D)}
