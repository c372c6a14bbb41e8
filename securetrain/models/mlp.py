"""Multi-layer perceptron on flattened inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from securetrain.models._shapes import flat_size


class MLP(nn.Module):
    """Flatten, then ``Linear -> ReLU`` per hidden width, then a linear head.

    Example:
        >>> import torch
        >>> MLP(input_shape=(30,), num_classes=2)(torch.zeros(4, 30)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        width = flat_size(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(x)
        return logits
