"""An HE-friendly CNN with two convolutions and average pooling (a candidate for the zoo).

``conv(stride 2) -> square -> avgpool -> conv -> square -> flatten -> linear``: the
average pooling fuses with the second convolution, so the multiplicative depth is 5.

Example:
    >>> import torch
    >>> HECNN2(input_shape=(1, 8, 8), num_classes=10)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from securetrain.models._shapes import image_shape
from securetrain.models.he import Square


class HECNN2(nn.Module):
    """Two convolutions, square activations and average pooling; see the module docstring."""

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (4, 8), pool: int = 2
    ) -> None:
        super().__init__()
        c, h, w = image_shape("he-cnn2", input_shape)
        self.input_shape = (c, h, w)
        c1, c2 = (int(v) for v in channels)
        h1, w1 = (h + 1) // 2, (w + 1) // 2  # 3x3, stride 2, padding 1
        h2, w2 = max(1, h1 // pool), max(1, w1 // pool)
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 3, stride=2, padding=1),
            Square(),
            nn.AvgPool2d(pool) if h1 >= pool and w1 >= pool else nn.Identity(),
            nn.Conv2d(c1, c2, 3, stride=1, padding=1),
            Square(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c2 * h2 * w2, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        out: torch.Tensor = self.head(self.features(x))
        return out


__all__ = ["HECNN2"]
