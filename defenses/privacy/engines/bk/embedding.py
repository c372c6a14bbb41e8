"""``nn.Embedding`` (no ``max_norm``, dense, without ``scale_grad_by_freq``): ghost norms.

Example:
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk.embedding import EmbeddingLayer
    >>> EmbeddingLayer.check(nn.Embedding(10, 4, sparse=True))
    'sparse=True'
    >>> EmbeddingLayer.check(nn.Embedding(10, 4)) is None
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from defenses.privacy.engines.bk.blocks import Block, Call, EmbeddingBlock
from defenses.privacy.engines.bk.chooser import Policy
from defenses.privacy.engines.bk.layer import Layer
from defenses.privacy.engines.bk.registry import register_layer


@register_layer(nn.Embedding)
class EmbeddingLayer(Layer[nn.Embedding]):
    """``nn.Embedding``: all calls' indices and output gradients in one :class:`EmbeddingBlock`."""

    @staticmethod
    def check(module: nn.Module) -> str | None:
        emb = cast(nn.Embedding, module)
        if emb.max_norm is not None:
            return "max_norm is set (the layer rewrites its weights in forward)"
        if emb.sparse:
            return "sparse=True"
        if emb.scale_grad_by_freq:
            return "scale_grad_by_freq=True (the gradient depends on the whole batch)"
        return None

    def block(self, calls: Sequence[Call], policy: Policy, max_bytes: int) -> Block:
        m = self.module
        B = calls[0].activation.shape[0]
        I = torch.cat([a.reshape(B, -1) for a, _ in calls], 1)
        G = torch.cat([g.reshape(B, -1, m.embedding_dim) for _, g in calls], 1)
        if m.padding_idx is not None:
            G = G * I.ne(m.padding_idx).unsqueeze(-1).to(G.dtype)
        return EmbeddingBlock(cast(nn.Parameter, m.weight), I, G)
