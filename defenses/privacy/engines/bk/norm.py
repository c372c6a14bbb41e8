"""``nn.LayerNorm`` and ``nn.GroupNorm``: small per-sample gradients of the affine parameters.

The normalised input ``x_hat`` is recomputed from the kept input; sample ``i``'s weight
gradient is ``g_i * x_hat_i`` and its bias gradient ``g_i``, each summed over the
positions the parameter is shared by.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk.blocks import Call
    >>> from defenses.privacy.engines.bk.norm import GroupNormLayer
    >>> norm = nn.GroupNorm(2, 4)
    >>> block = GroupNormLayer(norm, "gn").block([Call(torch.randn(3, 4, 5), torch.ones(3, 4, 5))], "auto", 0)
    >>> block.grads[norm.bias]  # the output gradient summed over the 5 positions
    tensor([[5., 5., 5., 5.],
            [5., 5., 5., 5.],
            [5., 5., 5., 5.]])
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from defenses.privacy.engines.bk.blocks import Block, Call, ParamGrads, PerSampleBlock
from defenses.privacy.engines.bk.chooser import Policy
from defenses.privacy.engines.bk.layer import Layer
from defenses.privacy.engines.bk.registry import register_layer

N = TypeVar("N", nn.LayerNorm, nn.GroupNorm)

_native_group_norm_out = cast(
    Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]], torch.ops.aten.native_group_norm.out
)


class AffineNormLayer(Layer[N]):
    """A normalisation with an elementwise affine map: ``y = x_hat * weight + bias``."""

    @abstractmethod
    def normalize(self, a: torch.Tensor) -> torch.Tensor:
        """``x_hat``: the input normalised, before the affine map (may be a work tensor of the step)."""

    @abstractmethod
    def shared_dims(self, a: torch.Tensor) -> tuple[int, ...]:
        """The dimensions of ``a`` over which one parameter entry is shared (summed)."""

    def block(self, calls: Sequence[Call], policy: Policy, max_bytes: int) -> Block:
        w, b = self.param("weight"), self.param("bias")
        grads: ParamGrads = {}
        for a, g in calls:
            reduce = self.shared_dims(a)
            if w is not None:
                if reduce:  # x_hat * g in place, summed: no temporary as large as the activation
                    gw = self.normalize(a).mul_(g).sum(reduce)
                else:
                    gw = g * self.normalize(a)
                grads[w] = grads[w] + gw if w in grads else gw
            if b is not None:
                gb = g.sum(reduce) if reduce else g
                grads[b] = grads[b] + gb if b in grads else gb
        return PerSampleBlock(grads)


@register_layer(nn.LayerNorm)
class LayerNormLayer(AffineNormLayer[nn.LayerNorm]):
    """``nn.LayerNorm``: parameters of the normalised shape, shared over the leading positions."""

    def normalize(self, a: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(a, tuple(self.module.normalized_shape), eps=self.module.eps)

    def shared_dims(self, a: torch.Tensor) -> tuple[int, ...]:
        return tuple(range(1, a.dim() - len(self.module.normalized_shape)))


@register_layer(nn.GroupNorm)
class GroupNormLayer(AffineNormLayer[nn.GroupNorm]):
    """``nn.GroupNorm``: one parameter entry per channel, shared over the spatial positions."""

    def normalize(self, a: torch.Tensor) -> torch.Tensor:
        """``x_hat`` written into a work tensor kept from step to step (fresh large tensors cost page faults)."""
        m = self.module
        a = a.contiguous()
        N, C = a.shape[:2]
        out = self.buffer("xhat", a.shape, a)
        mean = self.buffer("mean", (N, m.num_groups), a)
        rstd = self.buffer("rstd", (N, m.num_groups), a)
        _native_group_norm_out(
            a, None, None, N, C, a[0, 0].numel(), m.num_groups, m.eps, out0=out, out1=mean, out2=rstd
        )
        return out

    def shared_dims(self, a: torch.Tensor) -> tuple[int, ...]:
        return tuple(range(2, a.dim()))
