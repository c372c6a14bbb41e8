"""Convolution geometry in 2-d: padding, patches and the Gram matrix of a sample's patches.

A 1-d convolution is handled as a 2-d one of height 1. Patches are read by one strided
view (no ``F.unfold``), and the Gram matrix of a sample's patches is assembled from the
Gram matrix of its padded pixels, so no patch matrix is formed for ghost norms.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk.blocks.patches import ConvGeometry
    >>> geo = ConvGeometry.of(nn.Conv2d(1, 1, 3, padding=1))
    >>> geo.kernel, geo.padding
    ((3, 3), ((1, 1), (1, 1)))
    >>> a = torch.randn(2, 1, 4, 4)
    >>> patches = geo.unfold(a)
    >>> patches.shape  # (B, C*kh*kw, positions)
    torch.Size([2, 9, 16])
    >>> gram = geo.patch_gram(geo.pad(a))
    >>> torch.allclose(gram, patches.transpose(1, 2) @ patches, atol=1e-5)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from defenses.privacy.engines.bk.workspace import Workspace

Pair = tuple[int, int]


def same_padding(kernel: Sequence[int], dilation: Sequence[int]) -> list[Pair]:
    """``(before, after)`` zero padding per dimension for ``padding="same"`` (PyTorch's split)."""
    out = []
    for k, d in zip(kernel, dilation):
        total = d * (k - 1)
        out.append((total // 2, total - total // 2))
    return out


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel, stride, dilation and ``((top, bottom), (left, right))`` zero padding in 2-d."""

    kernel: Pair
    stride: Pair
    dilation: Pair
    padding: tuple[Pair, Pair]

    @classmethod
    def of(cls, module: nn.Conv1d | nn.Conv2d) -> ConvGeometry:
        """The geometry of ``module`` (a 1-d convolution gets a kernel of height 1)."""
        two_d = isinstance(module, nn.Conv2d)

        def pair(values: tuple[int, ...]) -> Pair:
            return (values[0], values[1]) if two_d else (1, values[0])

        k, s, d = pair(module.kernel_size), pair(module.stride), pair(module.dilation)
        if isinstance(module.padding, str):
            top_bottom, left_right = [(0, 0), (0, 0)] if module.padding == "valid" else same_padding(k, d)
        else:
            p = module.padding if two_d else (0, module.padding[0])
            top_bottom, left_right = (p[0], p[0]), (p[1], p[1])
        return cls(k, s, d, (top_bottom, left_right))

    def symmetric_padding(self) -> Pair | None:
        """``(pad_h, pad_w)`` when padding is the same on both sides, else ``None``."""
        (pt, pb), (pl, pr) = self.padding
        return (pt, pl) if pt == pb and pl == pr else None

    def pad(self, a: torch.Tensor) -> torch.Tensor:
        """``a`` ``(B, C, H, W)`` zero-padded."""
        (pt, pb), (pl, pr) = self.padding
        return F.pad(a, (pl, pr, pt, pb)) if (pt or pb or pl or pr) else a

    def padded_hw(self, a: torch.Tensor) -> Pair:
        """Height and width of the padded ``a``."""
        (pt, pb), (pl, pr) = self.padding
        return a.shape[-2] + pt + pb, a.shape[-1] + pl + pr

    def out_hw(self, a: torch.Tensor) -> Pair:
        """Output height and width for a *padded* input ``a``."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        H, W = a.shape[-2:]
        return (H - dh * (kh - 1) - 1) // sh + 1, (W - dw * (kw - 1) - 1) // sw + 1

    def unfold(self, a: torch.Tensor, workspace: Workspace | None = None) -> torch.Tensor:
        """Patches ``(B, C*kh*kw, L)`` of an (unpadded) input: one strided copy (into ``workspace``'s buffers)."""
        ws = workspace if workspace is not None else Workspace()
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        (pt, pb), (pl, pr) = self.padding
        if pt or pb or pl or pr:
            B, C, H, W = a.shape
            padded = ws.buffer("pad", (B, C, H + pt + pb, W + pl + pr), a)
            if pt:
                padded[:, :, :pt].zero_()
            if pb:
                padded[:, :, H + pt :].zero_()
            if pl:
                padded[:, :, :, :pl].zero_()
            if pr:
                padded[:, :, :, W + pl :].zero_()
            padded[:, :, pt : pt + H, pl : pl + W].copy_(a)
            a = padded
        else:
            a = a.contiguous()
        B, C = a.shape[:2]
        oh, ow = self.out_hw(a)
        st = a.stride()
        view = a.as_strided((B, C, kh, kw, oh, ow), (st[0], st[1], st[2] * dh, st[3] * dw, st[2] * sh, st[3] * sw))
        out = ws.buffer("unfold", (B, C * kh * kw, oh * ow), a)
        out.view(B, C, kh, kw, oh, ow).copy_(view)
        return out

    def patch_gram(self, a: torch.Tensor) -> torch.Tensor:
        """``(B, L, L)``: inner products of every pair of a sample's patches (``a`` padded).

        From the Gram matrix of the sample's pixels ``P`` (one batched product over
        channels): ``<patch_l, patch_m> = sum over kernel offsets o of P[l + o, m + o]``,
        read as one strided view of ``P`` and summed.
        """
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        B, C, H, W = a.shape
        oh, ow = self.out_hw(a)
        flat = a.reshape(B, C, H * W)
        pix = torch.bmm(flat.transpose(1, 2), flat).view(B, H, W, H, W)
        st = pix.stride()
        view = pix.as_strided(
            (B, oh, ow, oh, ow, kh, kw),
            (st[0], st[1] * sh, st[2] * sw, st[3] * sh, st[4] * sw, (st[1] + st[3]) * dh, (st[2] + st[4]) * dw),
        )
        return view.sum((5, 6)).reshape(B, oh * ow, oh * ow)
