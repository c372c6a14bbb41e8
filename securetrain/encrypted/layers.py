"""Which layers run under CKKS, and how the compiler treats each one.

Every supported leaf module has a :class:`LayerRule`: ``"linear"`` (an affine map; the
compiler reads it off the module's action on a basis, so any linear layer works:
linear, convolution of any stride/padding/groups, average pooling, zero padding),
``"identity"`` (reshapes and eval-mode dropout), ``"square"`` or ``"poly"`` (the
polynomial activations). Register your own linear layer with :func:`register_layer`; the
rules live in :data:`CKKS_LAYERS` (keyed by the class's qualified name).

Example:
    >>> from torch import nn
    >>> get_layer_rule(nn.Conv2d(1, 2, 3)).kind
    'linear'
    >>> get_layer_rule(nn.ReLU()) is None
    True
    >>> "torch.nn.modules.linear.Linear" in CKKS_LAYERS
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from securetrain.deprecation import deprecated_aliases
from securetrain.encrypted.activations import PolyActivation
from securetrain.errors import ModelError
from securetrain.models.he import Square
from securetrain.registry import Registry

KINDS = ("linear", "identity", "square", "poly")


@dataclass(frozen=True)
class LayerRule:
    """How the compiler treats a module type."""

    kind: str


CKKS_LAYERS: Registry[LayerRule] = Registry("CKKS layer")
"""Rules by module type (``"module.QualName"``); fill it with :func:`register_layer`."""


def _key(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_layer(cls: type[nn.Module], kind: str, *, overwrite: bool = False) -> None:
    """Declare that modules of type ``cls`` are ``kind`` (one of :data:`KINDS`).

    A ``"linear"`` module must compute an affine map of its input in eval mode; the
    compiler checks this numerically and refuses the model otherwise.
    """
    if kind not in KINDS:
        raise ModelError(f"layer kind must be one of {', '.join(KINDS)}, got {kind!r}")
    CKKS_LAYERS.add(_key(cls), LayerRule(kind), overwrite=overwrite)


def get_layer_rule(module: nn.Module) -> LayerRule | None:
    """The rule of ``module``'s type (or of its nearest registered base class), else None."""
    for cls in type(module).__mro__:
        key = _key(cls)
        if key in CKKS_LAYERS:
            return CKKS_LAYERS.get(key)
        if cls is nn.Module:
            break
    return None


class ChannelAffine(nn.Module):
    """``x -> x * scale[c] + shift[c]`` along dimension 1: a frozen BatchNorm that could
    not be folded into a preceding linear layer.

    Example:
        >>> import torch
        >>> ChannelAffine([2.0], [1.0])(torch.ones(1, 1, 2))
        tensor([[[3., 3.]]])
    """

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, scale: Sequence[float] | torch.Tensor, shift: Sequence[float] | torch.Tensor) -> None:
        super().__init__()
        s = torch.as_tensor(scale, dtype=torch.float32).detach().clone().flatten()
        b = torch.as_tensor(shift, dtype=torch.float32).detach().clone().flatten()
        if s.shape != b.shape:
            raise ModelError(f"scale and shift must have the same length, got {tuple(s.shape)} and {tuple(b.shape)}")
        self.register_buffer("scale", s)
        self.register_buffer("shift", b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = [1, -1] + [1] * (x.dim() - 2)
        return x * self.scale.to(x.dtype).view(view) + self.shift.to(x.dtype).view(view)


_LINEAR: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.ZeroPad1d,
    nn.ZeroPad2d,
    ChannelAffine,
)
_IDENTITY: tuple[type[nn.Module], ...] = (
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
)
for _cls in _LINEAR:
    register_layer(_cls, "linear")
for _cls in _IDENTITY:
    register_layer(_cls, "identity")
register_layer(Square, "square")
register_layer(PolyActivation, "poly")

_DEPRECATED = {"LAYERS": "CKKS_LAYERS", "rule_for": "get_layer_rule"}


__getattr__ = deprecated_aliases(__name__, _DEPRECATED)

__all__ = ["CKKS_LAYERS", "KINDS", "ChannelAffine", "LayerRule", "get_layer_rule", "register_layer"]
