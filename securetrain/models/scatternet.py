"""ScatterNet: a fixed scattering front-end, GroupNorm, and a small trained head.

Tramer and Boneh (2021, "Differentially private learning needs better features (or much
more data)") showed that a linear model or a small CNN on scattering features beats
end-to-end private CNNs at small epsilon: the front-end is fixed (no budget is spent on
it and no per-sample gradient flows through it) and the trained part is small.

The scattering coefficients (:class:`~securetrain.models.scattering.Scattering2D`) are
normalised per sample by a ``GroupNorm`` (statistics of the sample itself, never of the
training set, so the normalisation reveals nothing about other samples; its affine
parameters are trained privately like any other), then fed to

- ``head="linear"``: one linear layer (the paper's ScatterNet + linear model), or
- ``head="cnn"``: ``[Conv3x3 -> GroupNorm -> activation -> MaxPool2]`` per entry of
  ``channels``, then ``Linear(hidden) -> activation -> Linear``.

``J`` (scales) defaults to 2 for images of at least 16 pixels a side and 1 below (8x8
digits: 9 channels of 4x4); ``groups`` (of the GroupNorm on the coefficients) defaults to
one group per 3 channels where that divides, else one per channel.

Example:
    >>> import torch
    >>> from securetrain.models.scatternet import ScatterNet
    >>> net = ScatterNet((1, 28, 28), 10)
    >>> net(torch.zeros(2, 1, 28, 28)).shape, net.scattering.paths
    (torch.Size([2, 10]), 81)
    >>> sum(p.numel() for p in net.scattering.parameters())  # the front-end is fixed
    0
    >>> ScatterNet((1, 8, 8), 10, head="cnn", channels=(16,))(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from securetrain.errors import ConfigurationError
from securetrain.models._shapes import check_width, check_widths, image_shape
from securetrain.models.activations import make_activation
from securetrain.models.scattering import Scattering2D

HEADS = ("linear", "cnn")


def default_groups(channels: int) -> int:
    """One GroupNorm group per 3 channels where 3 divides ``channels``, else one per channel.

    Example:
        >>> default_groups(81), default_groups(9), default_groups(17)
        (27, 3, 17)
    """
    return channels // 3 if channels % 3 == 0 else channels


class ScatterNet(nn.Module):
    """Fixed scattering transform -> GroupNorm -> trained ``linear`` or ``cnn`` head."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        J: int | None = None,
        L: int = 8,
        order: int = 2,
        head: str = "linear",
        groups: int | None = None,
        channels: Sequence[int] = (32,),
        hidden: int = 32,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        c, h, w = image_shape("scatter", input_shape)
        if head not in HEADS:
            raise ConfigurationError(f"model 'scatter': option 'head' must be one of {', '.join(HEADS)}, got {head!r}")
        if J is None:
            J = 2 if min(h, w) >= 16 else 1
        self.input_shape = (c, h, w)
        self.scattering = Scattering2D((h, w), J=J, L=L, order=order)
        k = c * self.scattering.paths
        g = default_groups(k) if groups is None else check_width("scatter", "groups", groups)
        if k % g:
            raise ConfigurationError(
                f"model 'scatter': option 'groups' must divide the {k} scattering channels, got {g}"
            )
        self.norm = nn.GroupNorm(g, k)
        oh, ow = self.scattering.out_size
        layers: list[nn.Module] = []
        if head == "cnn":
            widths = check_widths("scatter", "channels", channels)
            hidden = check_width("scatter", "hidden", hidden)
            for out_c in widths:
                layers += [
                    nn.Conv2d(k, out_c, kernel_size=3, padding=1),
                    nn.GroupNorm(default_groups(out_c), out_c),
                    make_activation("scatter", activation),
                ]
                if oh >= 2 and ow >= 2:
                    layers.append(nn.MaxPool2d(2))
                    oh, ow = oh // 2, ow // 2
                k = out_c
            layers += [
                nn.Flatten(),
                nn.Linear(k * oh * ow, hidden),
                make_activation("scatter", activation),
                nn.Linear(hidden, num_classes),
            ]
        else:
            layers += [nn.Flatten(), nn.Linear(k * oh * ow, num_classes)]
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        logits: torch.Tensor = self.head(self.norm(self.scattering(x)))
        return logits


__all__ = ["HEADS", "ScatterNet", "default_groups"]
