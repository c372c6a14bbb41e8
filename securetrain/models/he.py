"""Models that run under CKKS homomorphic encryption as they are.

Only linear maps and the square activation: every layer is a polynomial, and the
multiplicative depth is known from the structure (see ``securetrain.encrypted``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from securetrain.models._shapes import check_width, flat_size, image_shape


class Square(nn.Module):
    """``x -> x * x``: the cheapest CKKS-friendly activation (one multiplication).

    Example:
        >>> import torch
        >>> Square()(torch.tensor([-2.0, 3.0]))
        tensor([4., 9.])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class HEMLP(nn.Module):
    """Flatten -> Linear -> Square -> Linear: multiplicative depth 3 (2 plaintext mults + 1 square).

    Example:
        >>> import torch
        >>> HEMLP(input_shape=(1, 8, 8), num_classes=10)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: int = 32) -> None:
        super().__init__()
        hidden = check_width("he", "hidden", hidden)
        self.input_shape = tuple(input_shape)
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(flat_size(input_shape), hidden), Square(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(x)
        return logits


class HECNN(nn.Module):
    """Conv(stride 2) -> Square -> AvgPool-free flatten -> Linear: an HE-friendly CNN.

    Example:
        >>> import torch
        >>> HECNN(input_shape=(1, 8, 8), num_classes=10)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: int = 4, kernel_size: int = 3) -> None:
        super().__init__()
        channels = check_width("he-cnn", "channels", channels)
        kernel_size = check_width("he-cnn", "kernel_size", kernel_size)
        c, h, w = image_shape("he-cnn", input_shape)
        self.input_shape = (c, h, w)
        self.conv = nn.Conv2d(c, channels, kernel_size, stride=2, padding=1)
        oh = (h + 2 - kernel_size) // 2 + 1
        ow = (w + 2 - kernel_size) // 2 + 1
        self.act = Square()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels * oh * ow, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        logits: torch.Tensor = self.fc(self.flatten(self.act(self.conv(x))))
        return logits
