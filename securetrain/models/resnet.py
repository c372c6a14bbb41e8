"""A small residual network with GroupNorm (BatchNorm-free, so usable with DP)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from securetrain.models._shapes import check_widths, image_shape


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class _Block(nn.Module):
    def __init__(self, in_c: int, out_c: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, out_c, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(_groups(out_c), out_c)
        self.conv2 = nn.Conv2d(out_c, out_c, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(_groups(out_c), out_c)
        self.act = nn.ReLU()
        self.shortcut: nn.Module
        if stride != 1 or in_c != out_c:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_c, out_c, 1, stride=stride, bias=False), nn.GroupNorm(_groups(out_c), out_c)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        result: torch.Tensor = self.act(out + self.shortcut(x))
        return result


class SmallResNet(nn.Module):
    """Stem convolution, one residual block per width (stride 2 after the first), global pooling.

    Example:
        >>> import torch
        >>> SmallResNet(input_shape=(1, 8, 8), num_classes=10)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (16, 32)) -> None:
        super().__init__()
        widths = check_widths("resnet", "widths", widths)
        c, _, _ = image_shape("resnet", input_shape)
        self.input_shape = tuple(input_shape)
        w0 = int(widths[0])
        self.stem = nn.Sequential(nn.Conv2d(c, w0, 3, padding=1, bias=False), nn.GroupNorm(_groups(w0), w0), nn.ReLU())
        blocks: list[nn.Module] = []
        in_c = w0
        for i, width in enumerate(widths):
            blocks.append(_Block(in_c, int(width), stride=1 if i == 0 else 2))
            in_c = int(width)
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(in_c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        logits: torch.Tensor = self.head(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))
        return logits
