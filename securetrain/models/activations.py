"""Activation functions of the zoo models, by name (a registry).

``relu`` is the default. ``tanh`` is the tempered sigmoid ``s * sigmoid(T * x) - o`` with
``s = 2, T = 2, o = 1`` that Papernot et al. (2021, "Tempered sigmoid activations for deep
learning with differential privacy") found best for private training: a bounded
activation keeps activations, and so per-sample gradients, from exploding, so less of
each gradient is lost to clipping. ``tempered`` takes ``scale``, ``inverse_temperature``
and ``offset`` through :class:`TemperedSigmoid`.

Activations have no parameters: they change nothing in how per-sample gradients are
computed, clipped or accounted.

Example:
    >>> import torch
    >>> from securetrain.models.activations import ACTIVATIONS, TemperedSigmoid
    >>> sorted(ACTIVATIONS)
    ['relu', 'tanh']
    >>> x = torch.linspace(-3, 3, 7)
    >>> torch.allclose(TemperedSigmoid(2.0, 2.0, 1.0)(x), torch.tanh(x), atol=1e-6)
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from securetrain.errors import ConfigurationError
from securetrain.registry import Registry

ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")


class TemperedSigmoid(nn.Module):
    """``scale * sigmoid(inverse_temperature * x) - offset`` (Papernot et al. 2021)."""

    def __init__(self, scale: float = 2.0, inverse_temperature: float = 2.0, offset: float = 1.0) -> None:
        super().__init__()
        self.scale, self.inverse_temperature, self.offset = float(scale), float(inverse_temperature), float(offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.sigmoid(self.inverse_temperature * x) - self.offset

    def extra_repr(self) -> str:
        return f"scale={self.scale}, inverse_temperature={self.inverse_temperature}, offset={self.offset}"


ACTIVATIONS.add("relu", nn.ReLU)
ACTIVATIONS.add("tanh", nn.Tanh)


def make_activation(model: str, name: object) -> nn.Module:
    """A fresh activation module ``name`` for zoo model ``model`` (refused with the choices)."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ConfigurationError(
            f"model {model!r}: option 'activation' must be one of {', '.join(sorted(ACTIVATIONS))}, got {name!r}"
        )
    return ACTIVATIONS.get(name)()


__all__ = ["ACTIVATIONS", "TemperedSigmoid", "make_activation"]
