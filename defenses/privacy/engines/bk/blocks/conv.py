"""Convolution block: ``nn.Conv1d`` / ``nn.Conv2d`` (``groups=1``, zero padding) as 2-d.

Norms are *materialised* (every sample's weight gradient from one grouped convolution
whose groups are the samples) or *ghost*, where the Gram matrix of each sample's patches is assembled from
the Gram matrix of its padded pixels (see
:meth:`~defenses.privacy.engines.bk.blocks.patches.ConvGeometry.patch_gram`), as
:func:`~defenses.privacy.engines.bk.chooser.choose_mode` decides. Clipped sums are
convolution weight-gradients of the re-weighted output gradients.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk.blocks.base import Call
    >>> from defenses.privacy.engines.bk.blocks.conv import ConvBlock
    >>> from defenses.privacy.engines.bk.blocks.patches import ConvGeometry
    >>> conv = nn.Conv2d(2, 3, 3, padding=1)
    >>> calls = [Call(torch.randn(4, 2, 5, 5), torch.randn(4, 3, 5, 5))]
    >>> geo = ConvGeometry.of(conv)
    >>> ghost = ConvBlock(conv.weight, conv.bias, geo, calls, "ghost-only", 0)
    >>> mat = ConvBlock(conv.weight, conv.bias, geo, calls, "materialize", 0)
    >>> torch.allclose(ghost.sq_norms(), mat.sq_norms(), rtol=1e-4)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn

from defenses.privacy.engines.bk.blocks.base import (
    Block,
    Call,
    Mode,
    ParamGrads,
    plus,
    sq_rows,
)
from defenses.privacy.engines.bk.blocks.patches import ConvGeometry
from defenses.privacy.engines.bk.chooser import NormCost, Policy, choose_mode
from defenses.privacy.engines.bk.workspace import Workspace

_convolution_backward = cast(
    Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]], torch.ops.aten.convolution_backward
)


def per_sample_weight_grads(
    geometry: ConvGeometry, a: torch.Tensor, g: torch.Tensor, workspace: Workspace
) -> torch.Tensor:
    """``(B*O, C, kh, kw)``: each sample's weight gradient for inputs ``a`` ``(B, C, H, W)``
    and output gradients ``g`` ``(B, O, oh, ow)``, from one grouped convolution.

    The batch is folded into the channels (``(1, B*C, H, W)`` inputs, ``(1, B*O, oh, ow)``
    output gradients, ``groups=B``), so group ``b``'s weight gradient is sample ``b``'s. No
    patch matrix is formed.
    """
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.stride, geometry.dilation
    sym = geometry.symmetric_padding()
    if sym is None:
        a, sym = geometry.pad(a), (0, 0)
    B, C = a.shape[:2]
    O = g.shape[1]
    if B == 0:
        return a.new_zeros((0, C, kh, kw))
    # only the weight's shape is read when the weight gradient alone is asked for
    shape_only = workspace.constant("grouped_weight", (B * O, C, kh, kw), a)
    return _convolution_backward(
        g.reshape(1, B * O, *g.shape[-2:]),
        a.reshape(1, B * C, *a.shape[-2:]),
        shape_only,
        None,
        [sh, sw],
        list(sym),
        [dh, dw],
        False,
        [0, 0],
        B,
        [False, True, False],
    )[1]


def conv_cost(geometry: ConvGeometry, calls: Sequence[Call]) -> NormCost:
    """What the calls' norms cost each way (see :meth:`NormCost.conv`)."""
    a0, g0 = calls[0]
    B, C = a0.shape[:2]
    oh, ow = g0.shape[-2:]
    Hp, Wp = geometry.padded_hw(a0)
    return NormCost.conv(B, g0.shape[1], C, geometry.kernel, oh * ow * len(calls), Hp * Wp, len(calls))


class ConvBlock(Block):
    """A 2-d convolution's calls: inputs ``(B, C, H, W)`` (unpadded), output gradients ``(B, O, oh, ow)``.

    Ghost norms are implemented for a convolution called once per group; several calls
    are materialised. ``workspace`` keeps work tensors from step to step.
    """

    def __init__(
        self,
        weight: nn.Parameter | None,
        bias: nn.Parameter | None,
        geometry: ConvGeometry,
        calls: Sequence[Call],
        policy: Policy,
        max_bytes: int,
        workspace: Workspace | None = None,
    ) -> None:
        self.weight, self.bias, self.geometry, self.calls = weight, bias, geometry, list(calls)
        self.workspace = workspace if workspace is not None else Workspace()
        a0, g0 = self.calls[0]
        B, C = a0.shape[:2]
        O = g0.shape[1]
        self.mode: Mode = choose_mode(conv_cost(geometry, self.calls), policy, max_bytes, a0.element_size())
        self.B, self.C, self.O = B, C, O
        self._gs: torch.Tensor | None = None
        self._gb: torch.Tensor | None = None

    def _bias_grads(self) -> torch.Tensor:
        if self._gb is None:
            gb: torch.Tensor | None = None
            for _, g in self.calls:
                gb = plus(gb, g.sum((2, 3)))
            self._gb = gb
        assert self._gb is not None
        return self._gb

    def _per_sample_weight(self) -> torch.Tensor:
        """``(B, O, C*kh*kw)``: every sample's weight gradient, summed over the calls.

        One grouped convolution's weight gradient: the batch is folded into the channels
        (``(1, B*C, H, W)`` inputs, ``(1, B*O, oh, ow)`` output gradients, ``groups=B``),
        so group ``b``'s weight gradient is sample ``b``'s. No patch matrix is formed.
        """
        if self._gs is None:
            gs: torch.Tensor | None = None
            for a, g in self.calls:
                one = per_sample_weight_grads(self.geometry, a, g, self.workspace).view(self.B, self.O, -1)
                gs = one if gs is None else gs + one
            self._gs = gs
        assert self._gs is not None
        return self._gs

    def _weight_grad(self, g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        assert self.weight is not None
        (kh, kw), (sh, sw), (dh, dw) = self.geometry.kernel, self.geometry.stride, self.geometry.dilation
        sym = self.geometry.symmetric_padding()
        if sym is None:
            a, sym = self.geometry.pad(a), (0, 0)
        weight = self.weight.detach().view(self.O, self.C, kh, kw)
        return _convolution_backward(
            g, a, weight, None, [sh, sw], list(sym), [dh, dw], False, [0, 0], 1, [False, True, False]
        )[1]

    def sq_norms(self) -> torch.Tensor:
        total: torch.Tensor | None = None
        if self.weight is not None:
            if self.mode == "mat":
                total = sq_rows(self._per_sample_weight().flatten(1))
            else:
                a, g = self.calls[0]
                aa = self.geometry.patch_gram(self.geometry.pad(a))
                G = g.reshape(self.B, self.O, -1)
                gg = torch.bmm(G.transpose(1, 2), G)
                total = (aa * gg).flatten(1).sum(1).clamp_(min=0)
        if self.bias is not None:
            total = plus(total, sq_rows(self._bias_grads()))
        assert total is not None
        return total

    def add_weighted(self, w: torch.Tensor, out: ParamGrads) -> None:
        if self.weight is not None:
            ow = out[self.weight]
            if self.mode == "mat":
                ow.view(-1).addmv_(self._per_sample_weight().reshape(self.B, -1).t(), w)
            else:
                for a, g in self.calls:
                    ow.add_(self._weight_grad(g * w[:, None, None, None], a).view_as(ow))
        if self.bias is not None:
            out[self.bias].addmv_(self._bias_grads().t(), w)

    def implied(self) -> ParamGrads:
        res: ParamGrads = {}
        if self.weight is not None:
            wg: torch.Tensor | None = None
            for a, g in self.calls:
                wg = plus(wg, self._weight_grad(g, a))
            assert wg is not None
            res[self.weight] = wg.reshape(self.weight.shape)
        if self.bias is not None:
            res[self.bias] = self._bias_grads().sum(0)
        return res

    def materialize(self) -> ParamGrads:
        res: ParamGrads = {}
        if self.weight is not None:
            res[self.weight] = self._per_sample_weight().reshape(self.B, *self.weight.shape).clone()
        if self.bias is not None:
            res[self.bias] = self._bias_grads()
        return res
