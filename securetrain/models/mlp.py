"""Multi-layer perceptron on flattened inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from securetrain.errors import ConfigurationError
from securetrain.models._shapes import check_widths, flat_size
from securetrain.models.activations import make_activation


class MLP(nn.Module):
    """Flatten, then ``Linear -> ReLU`` per hidden width, then a linear head.

    ``hidden`` is a list of layer widths (a single number: one hidden layer); ``dropout``
    a probability in ``[0, 1)``; ``activation``: ``relu`` (default) or ``tanh``
    (:mod:`securetrain.models.activations`).

    Example:
        >>> import torch
        >>> MLP(input_shape=(30,), num_classes=2)(torch.zeros(4, 30)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] | int = (128, 64),
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        widths = check_widths("mlp", "hidden", hidden, allow_int=True)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ConfigurationError(f"model 'mlp': option 'dropout' must be a number in [0, 1), got {dropout!r}")
        self.input_shape = tuple(input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        width = flat_size(input_shape)
        for h in widths:
            layers += [nn.Linear(width, h), make_activation("mlp", activation)]
            if dropout > 0:
                layers.append(nn.Dropout(float(dropout)))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(x)
        return logits
