"""Which :class:`~defenses.privacy.engines.bk.layer.Layer` handles which module type.

:data:`BK_LAYERS` is a :class:`securetrain.registry.Registry` keyed by the module type's
qualified name; a subclass of a registered type (Opacus's ``RNNLinear`` is an
``nn.Linear``) uses its nearest registered base class's handler.

Example:
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk import BK_LAYERS, layer_for, layer_key
    >>> layer_key(nn.Linear) in BK_LAYERS
    True
    >>> class MyLinear(nn.Linear):
    ...     pass
    >>> layer_for(MyLinear(2, 2)).__name__
    'LinearLayer'
    >>> layer_for(nn.PReLU()) is None
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from defenses.privacy.engines.bk.layer import Layer
from securetrain.registry import Registry

LayerType = type[Layer[Any]]

BK_LAYERS: Registry[LayerType] = Registry("bk layer")
"""Module type (qualified name, see :func:`layer_key`) -> :class:`Layer` handler."""


def layer_key(module_type: type) -> str:
    """The registry key of ``module_type``: ``"module.QualifiedName"``."""
    return f"{module_type.__module__}.{module_type.__qualname__}"


def register_layer(module_type: type[nn.Module], *, overwrite: bool = False) -> Callable[[LayerType], LayerType]:
    """Decorator registering a :class:`Layer` handler for ``module_type`` (and its subclasses).

    Registering a type twice raises :class:`~securetrain.errors.ConfigurationError`
    unless ``overwrite=True``.
    """

    def deco(handler: LayerType) -> LayerType:
        BK_LAYERS.add(layer_key(module_type), handler, overwrite=overwrite)
        return handler

    return deco


def layer_for(module: nn.Module) -> LayerType | None:
    """The handler for ``module``'s type (exact type first, then the nearest base class)."""
    for cls in type(module).__mro__:
        key = layer_key(cls)
        if key in BK_LAYERS:
            return BK_LAYERS.get(key)
    return None
