"""A small convolutional network for any image size and channel count."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from securetrain.errors import ConfigurationError
from securetrain.models._shapes import check_width, check_widths, image_shape
from securetrain.models.activations import make_activation
from securetrain.models.standardized import WSConv2d


class CNN(nn.Module):
    """``[Conv3x3 -> ReLU -> MaxPool2]`` per channel width, then an MLP head.

    ``activation``: ``relu`` (default) or ``tanh`` (the tempered sigmoid that suits private
    training; :mod:`securetrain.models.activations`).
    ``norm_groups``: a ``GroupNorm`` with this many groups after each convolution (0, the
    default: none; it must divide every width in ``channels``).
    ``weight_standardization``: convolutions standardise their weights per output channel
    (:class:`~securetrain.models.standardized.WSConv2d`); with ``norm_groups`` this is the
    BatchNorm-free normalisation private training uses (De et al. 2022).

    Pooling is applied only while the feature map is at least 2x2, so 8x8 digits,
    28x28 MNIST and 32x32x3 CIFAR-10 all work with the same code.

    Example:
        >>> import torch
        >>> CNN(input_shape=(3, 32, 32), num_classes=10)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (16, 32),
        hidden: int = 64,
        activation: str = "relu",
        norm_groups: int = 0,
        weight_standardization: bool = False,
    ) -> None:
        super().__init__()
        channels = check_widths("cnn", "channels", channels)
        hidden = check_width("cnn", "hidden", hidden)
        groups = check_width("cnn", "norm_groups", norm_groups, minimum=0)
        if not isinstance(weight_standardization, bool):
            raise ConfigurationError(
                f"model 'cnn': option 'weight_standardization' must be true or false, got {weight_standardization!r}"
            )
        if groups and any(out_c % groups for out_c in channels):
            raise ConfigurationError(
                f"model 'cnn': option 'norm_groups' ({groups}) must divide every width in 'channels' {list(channels)}"
            )
        conv = WSConv2d if weight_standardization else nn.Conv2d
        c, h, w = image_shape("cnn", input_shape)
        self.input_shape = (c, h, w)
        layers: list[nn.Module] = []
        for out_c in channels:
            layers.append(conv(c, int(out_c), kernel_size=3, padding=1))
            if groups:
                layers.append(nn.GroupNorm(groups, int(out_c)))
            layers.append(make_activation("cnn", activation))
            if h >= 2 and w >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = int(out_c)
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * h * w, hidden),
            make_activation("cnn", activation),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        logits: torch.Tensor = self.head(self.features(x))
        return logits
