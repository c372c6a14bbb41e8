"""Per-sample gradients of the zoo's own layers for the ``bk`` engine (through its :func:`register_layer`).

:class:`~securetrain.models.standardized.WSConv2d` (a convolution whose weight is
standardised in the forward pass): sample ``i``'s gradient with respect to the
*standardised* weight is ``G_i`` times the unfolded input patches ``A_i``, as for any
convolution; its gradient with respect to the trained weight is that gradient pulled back
through the standardisation
(:func:`~securetrain.models.standardized.standardize_weight_vjp`), a linear map, sample
by sample. The gradients are formed as soon as a call's output gradient arrives, so ghost
norms (which would measure the standardised weight's gradient) are never used.

This module is imported by :mod:`defenses.privacy.modes`, which every private training
goes through, so the handler is registered before any engine is attached.

Example:
    >>> import torch
    >>> from securetrain.models.standardized import WSConv2d
    >>> from defenses.privacy.engines.bk import BKEngine
    >>> from defenses.privacy.layers import WSConvLayer
    >>> conv = WSConv2d(2, 3, 3, padding=1)
    >>> engine = BKEngine()
    >>> model = engine.attach(torch.nn.Sequential(conv, torch.nn.Flatten()))
    >>> model(torch.randn(4, 2, 5, 5)).sum().backward()
    >>> engine.collect().sq_norms().shape
    torch.Size([4])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from defenses.privacy.engines.bk import Block, Call, Layer, register_layer
from defenses.privacy.engines.bk.blocks import ParamGrads
from defenses.privacy.engines.bk.chooser import Policy
from securetrain.models.standardized import WSConv2d, standardize_weight_vjp


@register_layer(WSConv2d)
class WSConvLayer(Layer[WSConv2d]):
    """``WSConv2d``: per-sample gradients of the standardised weight, pulled back to the trained one."""

    def reduce(
        self, a: torch.Tensor, g: torch.Tensor, policy: Policy, max_bytes: int, *, force: bool = False
    ) -> ParamGrads:
        conv = self.module
        w, b = self.param("weight"), self.param("bias")
        res: ParamGrads = {}
        if w is not None:
            patches = F.unfold(a, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # (B, C*kh*kw, L)
            g_hat = torch.einsum("bol,bkl->bok", g.flatten(2), patches).reshape(a.shape[0], *w.shape)
            res[w] = standardize_weight_vjp(w.detach(), g_hat, conv.eps)
        if b is not None:
            res[b] = g.sum((2, 3))
        return res

    def block(self, calls: Sequence[Call], policy: Policy, max_bytes: int) -> Block:
        return self.reduced_block(calls, policy, max_bytes)


__all__ = ["WSConvLayer"]
