"""``nn.LayerNorm`` and ``nn.GroupNorm``: small per-sample gradients of the affine parameters.

The normalised input ``x_hat`` is recomputed from the kept input; sample ``i``'s weight
gradient is ``g_i * x_hat_i`` and its bias gradient ``g_i``, each summed over the
positions the parameter is shared by. GroupNorm forms them with PyTorch's own GroupNorm
kernels (the batch folded into the channels, see :meth:`GroupNormLayer.reduce`).

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

import math
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from defenses.privacy.engines.bk.blocks import Block, Call, ParamGrads
from defenses.privacy.engines.bk.chooser import Policy
from defenses.privacy.engines.bk.layer import Layer
from defenses.privacy.engines.bk.registry import register_layer

_native_group_norm_out = cast(Callable[..., object], torch.ops.aten.native_group_norm.out)
_native_group_norm_backward = cast(
    Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]], torch.ops.aten.native_group_norm_backward
)

N = TypeVar("N", nn.LayerNorm, nn.GroupNorm)

STATS_CHUNK_ELEMENTS = 2**18
"""GroupNorm statistics are computed on chunks of samples of about this many input numbers."""


class AffineNormLayer(Layer[N]):
    """A normalisation with an elementwise affine map: ``y = x_hat * weight + bias``.

    A call's per-sample gradients are formed as its output gradient arrives
    (:meth:`reduce`); they are small (``B`` times the parameters).
    """

    @abstractmethod
    def normalize(self, a: torch.Tensor) -> torch.Tensor:
        """``x_hat``: the input normalised, before the affine map."""

    @abstractmethod
    def shared_dims(self, a: torch.Tensor) -> tuple[int, ...]:
        """The dimensions of ``a`` over which one parameter entry is shared (summed)."""

    def weight_grads(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Per-sample weight gradients: ``g * x_hat`` summed over :meth:`shared_dims`."""
        reduce = self.shared_dims(a)
        return self.normalize(a).mul_(g).sum(reduce) if reduce else g * self.normalize(a)

    def reduce(
        self, a: torch.Tensor, g: torch.Tensor, policy: Policy, max_bytes: int, *, force: bool = False
    ) -> ParamGrads:
        w, b = self.param("weight"), self.param("bias")
        res: ParamGrads = {}
        if w is not None:
            res[w] = self.weight_grads(a, g)
        if b is not None:
            reduce = self.shared_dims(a)
            res[b] = g.sum(reduce) if reduce else g
        return res

    def block(self, calls: Sequence[Call], policy: Policy, max_bytes: int) -> Block:
        return self.reduced_block(calls, policy, max_bytes)


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
        return F.group_norm(a, self.module.num_groups, eps=self.module.eps)

    def reduce(
        self, a: torch.Tensor, g: torch.Tensor, policy: Policy, max_bytes: int, *, force: bool = False
    ) -> ParamGrads:
        """Per-sample weight and bias gradients from PyTorch's own GroupNorm kernels, samples as groups.

        The per-group statistics come from the forward kernel (:meth:`group_stats`); the
        batch is then folded into the channels (one "sample" of ``B*C`` channels in ``B*G``
        groups), so the backward kernel's weight and bias gradients *per channel* are each
        sample's. Nothing as large as the activation is allocated.
        """
        w, b = self.param("weight"), self.param("bias")
        res: ParamGrads = {}
        if w is None and b is None:
            return res
        m = self.module
        B, C = a.shape[:2]
        G = m.num_groups
        hw = math.prod(a.shape[2:])
        a3 = a.reshape(B, C, hw)
        mean, rstd = self.group_stats(a3)
        _, gw, gb = _native_group_norm_backward(
            g.reshape(1, B * C, hw),
            a3.reshape(1, B * C, hw),
            mean.view(1, B * G),
            rstd.view(1, B * G),
            self.workspace.constant("weight", (B * C,), a3),  # only read for the input's gradient, not asked for
            1,
            B * C,
            hw,
            B * G,
            [False, w is not None, b is not None],
        )
        if w is not None:
            res[w] = gw.view(B, C)
        if b is not None:
            res[b] = gb.view(B, C)
        return res

    def group_stats(self, a3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample, per-group mean and ``1/std`` ``(B, G)`` of ``a3`` ``(B, C, positions)``.

        From the forward kernel (``torch.var_mean`` is several times slower on CPU), run on
        chunks of samples whose normalised output goes to one small work tensor kept from
        step to step: no activation-sized temporary.
        """
        m = self.module
        B, C, hw = a3.shape
        G = m.num_groups
        mean = self.buffer("mean", (B, G), a3)
        rstd = self.buffer("rstd", (B, G), a3)
        chunk = max(1, min(B, STATS_CHUNK_ELEMENTS // max(C * hw, 1)))
        normed = self.buffer("normed", (chunk, C, hw), a3)
        for start in range(0, B, chunk):
            n = min(chunk, B - start)
            _native_group_norm_out(
                a3[start : start + n],
                None,
                None,
                n,
                C,
                hw,
                G,
                m.eps,
                out0=normed[:n],
                out1=mean[start : start + n],
                out2=rstd[start : start + n],
            )
        return mean, rstd

    def shared_dims(self, a: torch.Tensor) -> tuple[int, ...]:
        return tuple(range(2, a.dim()))
