"""The model zoo: standard classifiers, all usable with differential privacy as they are.

Every factory takes ``input_shape`` (without the batch dimension) and ``num_classes`` plus
keyword options, and returns an ``nn.Module`` that maps a batch to logits. No zoo model uses
BatchNorm. Add your own with :func:`register_model`.

Example:
    >>> import torch
    >>> from securetrain.models import build_model
    >>> model = build_model("cnn", input_shape=(1, 8, 8), num_classes=10)
    >>> model(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from securetrain.errors import ConfigurationError, ModelError, SecureTrainError
from securetrain.models.cnn import CNN
from securetrain.models.he import HECNN, HEMLP, Square
from securetrain.models.mlp import MLP
from securetrain.models.resnet import SmallResNet
from securetrain.models.sequence import LSTMClassifier, TransformerClassifier
from securetrain.registry import Registry

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")
MODELS.add("mlp", MLP)
MODELS.add("cnn", CNN)
MODELS.add("resnet", SmallResNet)
MODELS.add("lstm", LSTMClassifier)
MODELS.add("transformer", TransformerClassifier)
MODELS.add("he", HEMLP)
MODELS.add("he-cnn", HECNN)


def register_model(name: str, factory: ModelFactory, *, overwrite: bool = False) -> None:
    """Register ``factory(input_shape=..., num_classes=..., **kwargs) -> nn.Module`` as ``name``."""
    MODELS.add(name, factory, overwrite=overwrite)


_SET_BY_DATA = ("input_shape", "num_classes")


def model_options(factory: ModelFactory) -> list[str] | None:
    """The keyword options ``factory`` accepts besides ``input_shape`` and ``num_classes``
    (None when it takes ``**kwargs``, i.e. any option)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): accept anything
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.name not in _SET_BY_DATA]


def check_model_options(name: str, kwargs: dict[str, Any]) -> None:
    """Raise :class:`ConfigurationError` if ``kwargs`` holds an option model ``name`` does not take.

    Example:
        >>> check_model_options("cnn", {"nosuch": 1})
        Traceback (most recent call last):
        ...
        securetrain.errors.ConfigurationError: model 'cnn' has no option 'nosuch'; its options are: channels, hidden, activation
    """
    factory = MODELS.get(name)
    for key in _SET_BY_DATA:
        if key in kwargs:
            raise ConfigurationError(
                f"model option {key!r} is set from the data set, not by model options; remove it from the model's options"
            )
    accepted = model_options(factory)
    if accepted is None:
        return
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        what = "option" if len(unknown) == 1 else "options"
        listed = ", ".join(repr(k) for k in unknown)
        choices = ", ".join(accepted) if accepted else "none"
        raise ConfigurationError(f"model {name!r} has no {what} {listed}; its options are: {choices}")


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the zoo model ``name`` for inputs of ``input_shape`` and ``num_classes`` outputs.

    Raises :class:`~securetrain.errors.UnknownNameError` for an unknown model,
    :class:`~securetrain.errors.ConfigurationError` for an option the model does not take
    or a bad option value, and :class:`~securetrain.errors.ModelError` when the model cannot
    be built for this shape or number of classes.
    """
    factory = MODELS.get(name)
    check_model_options(name, kwargs)
    shape = tuple(input_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape):
        raise ModelError(f"cannot build model {name!r}: input_shape must be positive whole numbers, got {shape}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ModelError(f"cannot build model {name!r}: num_classes must be a whole number >= 1, got {num_classes!r}")
    try:
        return factory(input_shape=tuple(int(s) for s in shape), num_classes=int(num_classes), **kwargs)
    except SecureTrainError:
        raise
    except (RuntimeError, OverflowError, MemoryError, TypeError, ValueError) as exc:  # torch cannot shape the layers
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"cannot build model {name!r} for input_shape={shape} and {num_classes} classes with options {kwargs}: {first}"
        ) from exc


def available_models() -> list[str]:
    """Names of all registered models."""
    return MODELS.names()


def find_batchnorm(model: nn.Module) -> list[str]:
    """Names of BatchNorm submodules (incompatible with per-sample gradients)."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


__all__ = [
    "CNN",
    "HECNN",
    "HEMLP",
    "LSTMClassifier",
    "MLP",
    "MODELS",
    "SmallResNet",
    "Square",
    "TransformerClassifier",
    "available_models",
    "build_model",
    "check_model_options",
    "find_batchnorm",
    "model_options",
    "register_model",
]
