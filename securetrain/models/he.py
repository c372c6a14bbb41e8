"""Models that run under CKKS homomorphic encryption as they are.

Only linear maps and the square activation: every layer is a polynomial, and the
multiplicative depth is known from the structure (see ``securetrain.encrypted``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from securetrain.errors import ModelError
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


class HEMNIST(nn.Module):
    """The CryptoNets/LoLa network for 28x28 digits: Conv(5x5, stride 2) -> Square -> Linear -> Square -> Linear.

    One strided convolution (``channels`` maps of 13x13 on a 28x28 input), a square, a dense layer
    of ``hidden`` units, a square and the classifier: multiplicative depth 5, no pooling, no
    normalisation, so it runs under CKKS as it is.

    Example:
        >>> import torch
        >>> model = HEMNIST(input_shape=(1, 28, 28), num_classes=10)
        >>> model(torch.zeros(2, 1, 28, 28)).shape, model.conv_shape
        (torch.Size([2, 10]), (5, 13, 13))
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: int = 5,
        hidden: int = 100,
        kernel_size: int = 5,
        stride: int = 2,
    ) -> None:
        super().__init__()
        channels = check_width("he-mnist", "channels", channels)
        hidden = check_width("he-mnist", "hidden", hidden)
        kernel_size = check_width("he-mnist", "kernel_size", kernel_size)
        stride = check_width("he-mnist", "stride", stride)
        c, h, w = image_shape("he-mnist", input_shape)
        self.input_shape = (c, h, w)
        self.conv = nn.Conv2d(c, channels, kernel_size, stride=stride, padding=1)
        oh = (h + 2 - kernel_size) // stride + 1
        ow = (w + 2 - kernel_size) // stride + 1
        if oh < 1 or ow < 1:
            raise ModelError(
                f"he-mnist: a {kernel_size}x{kernel_size} kernel does not fit a {h}x{w} input; use kernel_size <= {h + 2}"
            )
        self.conv_shape = (channels, oh, ow)
        self.act1 = Square()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(channels * oh * ow, hidden)
        self.act2 = Square()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        logits: torch.Tensor = self.fc2(self.act2(self.fc1(self.flatten(self.act1(self.conv(x))))))
        return logits
