"""``nn.Conv1d`` / ``nn.Conv2d`` with ``groups=1`` and zero padding, handled as 2-d.

Example:
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk.conv import ConvLayer
    >>> ConvLayer.check(nn.Conv2d(4, 4, 3, groups=2))
    'groups=2 (only groups=1 is supported by bk)'
    >>> ConvLayer(nn.Conv1d(2, 3, 5, padding=2), "conv").geometry.kernel
    (1, 5)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias, cast

import torch
from torch import nn

from defenses.privacy.engines.bk.blocks import Block, Call, ConvBlock, ConvGeometry, ParamGrads
from defenses.privacy.engines.bk.blocks.conv import conv_cost, per_sample_weight_grads
from defenses.privacy.engines.bk.chooser import Policy, choose_mode
from defenses.privacy.engines.bk.layer import Layer
from defenses.privacy.engines.bk.registry import register_layer

AnyConv: TypeAlias = nn.Conv1d | nn.Conv2d


@register_layer(nn.Conv1d)
@register_layer(nn.Conv2d)
class ConvLayer(Layer[AnyConv]):
    """``nn.Conv1d`` / ``nn.Conv2d`` with ``groups=1`` and zero padding (see :class:`ConvBlock`)."""

    @staticmethod
    def check(module: nn.Module) -> str | None:
        conv = cast(AnyConv, module)
        if conv.groups != 1:
            return f"groups={conv.groups} (only groups=1 is supported by bk)"
        if conv.padding_mode != "zeros":
            return f"padding_mode={conv.padding_mode!r} (only 'zeros' is supported by bk)"
        return None

    def __init__(self, module: AnyConv, name: str) -> None:
        super().__init__(module, name)
        self.geometry = ConvGeometry.of(module)

    def _as_2d(self, t: torch.Tensor) -> torch.Tensor:
        """A ``(B, C, L)`` tensor of a 1-d convolution as ``(B, C, 1, L)``; 2-d ones unchanged."""
        return t.unsqueeze(-2) if isinstance(self.module, nn.Conv1d) else t

    def prepare(self, a: torch.Tensor) -> torch.Tensor:
        """The input as a 2-d batch ``(B, C, H, W)`` (a 1-d convolution gets a height of 1)."""
        return self._as_2d(a.detach())

    def reduce(
        self, a: torch.Tensor, g: torch.Tensor, policy: Policy, max_bytes: int, *, force: bool = False
    ) -> ParamGrads | None:
        """The call's per-sample gradients, unless ghost norms are the choice for it alone."""
        g = self._as_2d(g)
        if (
            not force
            and choose_mode(conv_cost(self.geometry, [Call(a, g)]), policy, max_bytes, a.element_size()) != "mat"
        ):
            return None
        w, b = self.param("weight"), self.param("bias")
        res: ParamGrads = {}
        if w is not None:
            res[w] = per_sample_weight_grads(self.geometry, a, g, self.workspace).view(a.shape[0], *w.shape)
        if b is not None:
            res[b] = g.sum((2, 3))
        return res

    def block(self, calls: Sequence[Call], policy: Policy, max_bytes: int) -> Block:
        calls2d = [Call(a, self._as_2d(g)) for a, g in calls]
        return ConvBlock(
            self.param("weight"), self.param("bias"), self.geometry, calls2d, policy, max_bytes, self.workspace
        )
