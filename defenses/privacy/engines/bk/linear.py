"""``nn.Linear`` (any ``(batch, ..., features)`` input, Opacus's ``RNNLinear`` included).

One call on ``(batch, features)`` inputs is an
:class:`~defenses.privacy.engines.bk.blocks.outer.OuterBlock`; anything else (more
positions, several calls) is a
:class:`~defenses.privacy.engines.bk.blocks.matmul.MatmulBlock` over all positions of
all calls.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk.blocks import Call
    >>> from defenses.privacy.engines.bk.linear import LinearLayer
    >>> layer = LinearLayer(nn.Linear(3, 2), "fc")
    >>> layer.block([Call(torch.randn(4, 3), torch.randn(4, 2))], "auto", 2**20).mode
    'outer'
    >>> layer.block([Call(torch.randn(4, 6, 3), torch.randn(4, 6, 2))], "materialize", 2**20).mode
    'mat'
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from defenses.privacy.engines.bk.blocks import Block, Call, MatmulBlock, OuterBlock
from defenses.privacy.engines.bk.chooser import Policy
from defenses.privacy.engines.bk.layer import Layer
from defenses.privacy.engines.bk.registry import register_layer


@register_layer(nn.Linear)
class LinearLayer(Layer[nn.Linear]):
    """``nn.Linear``: outer products for one ``(batch, features)`` call, a matrix product otherwise."""

    def block(self, calls: Sequence[Call], policy: Policy, max_bytes: int) -> Block:
        m = self.module
        if len(calls) == 1 and calls[0].activation.dim() == 2:
            a, g = calls[0]
            return OuterBlock(self.param("weight"), self.param("bias"), a, g)
        B = calls[0].activation.shape[0]
        A = torch.cat([a.reshape(B, -1, m.in_features) for a, _ in calls], 1).transpose(1, 2)
        G = torch.cat([g.reshape(B, -1, m.out_features) for _, g in calls], 1).transpose(1, 2)
        return MatmulBlock(self.param("weight"), self.param("bias"), A, G, policy, max_bytes, self.workspace)
