"""Weight standardisation: convolutions whose weights are standardised per output channel.

``WSConv2d`` computes ``conv2d(x, (W - mean) / sqrt(var + eps))`` with the mean and (biased)
variance of each output channel's weights (over input channels and kernel positions;
Qiao et al. 2019, "Micro-batch training with batch-channel normalization and weight
standardization"). Together with GroupNorm it replaces BatchNorm where batch statistics
are not allowed (per-sample gradients, DP-SGD): De et al. (2022, "Unlocking high-accuracy
differentially private image classification through scale") train their private
networks this way. The trained parameter stays ``weight``; the standardisation is part of
the forward pass, so a per-sample gradient engine must pull its gradients back through it
(the private training's ``bk`` engine does; see ``docs/privacy.md``).

Example:
    >>> import torch
    >>> from securetrain.models.standardized import WSConv2d, standardize_weight
    >>> conv = WSConv2d(1, 4, 3, padding=1)
    >>> w = standardize_weight(torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(0)), conv.eps)
    >>> bool(w.flatten(1).mean(1).abs().max() < 1e-6), bool((w.flatten(1).var(1, unbiased=False) - 1).abs().max() < 1e-3)
    (True, True)
    >>> conv(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 4, 8, 8])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def standardize_weight(weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``(W - mean) / sqrt(var + eps)`` per output channel (the first dimension)."""
    flat = weight.flatten(1)
    var, mean = torch.var_mean(flat, dim=1, correction=0, keepdim=True)
    return ((flat - mean) * torch.rsqrt(var + eps)).view_as(weight)


def standardize_weight_vjp(weight: torch.Tensor, grad: torch.Tensor, eps: float) -> torch.Tensor:
    """Pull gradients ``grad`` (``(..., *weight.shape)``, w.r.t. the standardised weight) back to ``weight``.

    With ``w_hat = (w - mu) / s`` over the ``n`` entries of an output channel:
    ``dw = (g - mean(g) - w_hat * mean(g * w_hat)) / s``. Linear in ``g``, so it applies to
    per-sample gradients one sample at a time (leading dimensions are kept).
    """
    out_c = weight.shape[0]
    flat = weight.flatten(1)
    var, mean = torch.var_mean(flat, dim=1, correction=0, keepdim=True)
    rstd = torch.rsqrt(var + eps)
    w_hat = (flat - mean) * rstd
    lead = grad.shape[: grad.dim() - weight.dim()]
    g = grad.reshape(*lead, out_c, -1)
    dw = (g - g.mean(-1, keepdim=True) - w_hat * (g * w_hat).mean(-1, keepdim=True)) * rstd
    return dw.reshape(grad.shape)


class WSConv2d(nn.Module):
    """A 2-d convolution (zero padding) whose weight is standardised per output channel in the forward pass.

    Deliberately not an ``nn.Conv2d`` subclass: code that knows plain convolutions (a
    per-sample gradient engine, a converter) must not mistake the parameter it sees for the
    weight the convolution uses, so such code refuses this module unless it handles it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.padding = (int(kernel_size),) * 2, (int(stride),) * 2, (int(padding),) * 2
        self.dilation = (1, 1)
        self.eps = float(eps)
        probe = nn.Conv2d(in_channels, out_channels, kernel_size, bias=bias)  # PyTorch's initialisation
        self.weight = nn.Parameter(probe.weight.detach().clone())
        self.bias = nn.Parameter(probe.bias.detach().clone()) if probe.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = standardize_weight(self.weight, self.eps)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, bias={self.bias is not None}, eps={self.eps}"
        )


__all__ = ["WSConv2d", "standardize_weight", "standardize_weight_vjp"]
