"""The model zoo: standard classifiers, all usable with differential privacy as they are.

Every factory takes ``input_shape`` (without the batch dimension) and ``num_classes`` plus
keyword options, and returns an ``nn.Module`` that maps a batch to logits. No zoo model uses
BatchNorm. Add your own with :func:`register_model`, declare it in the ``securetrain.models``
entry-point group of an installed package (read lazily with :mod:`importlib.metadata`), or name
it by import path: ``build_model("mypkg.models:SmallNet", ...)`` (importing runs that module's
code; see :mod:`securetrain.specs`). A factory receives ``input_shape`` and ``num_classes`` only
if it names them as parameters (or takes ``**kwargs``); its other options come from the model
options.

Example:
    >>> import torch
    >>> from securetrain.models import build_model
    >>> model = build_model("cnn", input_shape=(1, 8, 8), num_classes=10)
    >>> model(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from securetrain.errors import ConfigurationError, ModelError, SecureTrainError
from securetrain.models.cnn import CNN
from securetrain.models.he import HECNN, HEMLP, HEMNIST, Square
from securetrain.models.mlp import MLP
from securetrain.models.resnet import SmallResNet
from securetrain.models.scatternet import ScatterNet
from securetrain.models.sequence import LSTMClassifier, TransformerClassifier
from securetrain.registry import Registry
from securetrain.specs import accepted_keywords, check_signature, import_spec, parse_spec

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model", entry_point_group="securetrain.models")
MODELS.add("mlp", MLP)
MODELS.add("cnn", CNN)
MODELS.add("resnet", SmallResNet)
MODELS.add("scatter", ScatterNet)
MODELS.add("lstm", LSTMClassifier)
MODELS.add("transformer", TransformerClassifier)
MODELS.add("he", HEMLP)
MODELS.add("he-cnn", HECNN)
MODELS.add("he-mnist", HEMNIST)


def register_model(name: str, factory: ModelFactory, *, overwrite: bool = False) -> None:
    """Register ``factory(input_shape=..., num_classes=..., **kwargs) -> nn.Module`` as ``name``."""
    MODELS.add(name, factory, overwrite=overwrite)


_SET_BY_DATA = ("input_shape", "num_classes")


def get_model_factory(name: str) -> ModelFactory:
    """The factory of model ``name``: a registered name (zoo, :func:`register_model`, an installed
    ``securetrain.models`` entry point) or an import-path spec ``package.module:name``, which is
    imported (running its code).

    Example:
        >>> get_model_factory("mlp").__name__
        'MLP'
    """
    if parse_spec(name, what="model") is not None:
        return import_spec(name, what="model")
    return MODELS.get(name)


def model_options(factory: ModelFactory) -> list[str] | None:
    """The keyword options ``factory`` accepts besides ``input_shape`` and ``num_classes``
    (None when it takes ``**kwargs``, i.e. any option)."""
    names, var = accepted_keywords(factory)
    if var:
        return None
    return [n for n in names if n not in _SET_BY_DATA]


def _data_arguments(factory: ModelFactory, input_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
    """``input_shape`` and ``num_classes`` for the factories that take them (by name or ``**kwargs``)."""
    names, var = accepted_keywords(factory)
    given = {"input_shape": input_shape, "num_classes": num_classes}
    return {k: v for k, v in given.items() if var or k in names}


def check_model_options(name: str, kwargs: dict[str, Any]) -> None:
    """Raise :class:`ConfigurationError` if ``kwargs`` holds an option model ``name`` does not take.

    Example:
        >>> check_model_options("cnn", {"nosuch": 1})
        Traceback (most recent call last):
        ...
        securetrain.errors.ConfigurationError: model 'cnn' has no option 'nosuch'; its options are: channels, hidden, activation, norm_groups, weight_standardization
    """
    factory = get_model_factory(name)
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
    """Build model ``name`` (a registered name or a ``package.module:name`` spec) for inputs of
    ``input_shape`` and ``num_classes`` outputs.

    Raises :class:`~securetrain.errors.UnknownNameError` for an unknown model,
    :class:`~securetrain.errors.SpecError` for a spec that cannot be imported or called with these
    options, :class:`~securetrain.errors.ConfigurationError` for an option the model does not take
    or a bad option value, and :class:`~securetrain.errors.ModelError` when the model cannot
    be built for this shape or number of classes (or a spec returns something else than an
    ``nn.Module``).
    """
    factory = get_model_factory(name)
    check_model_options(name, kwargs)
    shape = tuple(input_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape):
        raise ModelError(f"cannot build model {name!r}: input_shape must be positive whole numbers, got {shape}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ModelError(f"cannot build model {name!r}: num_classes must be a whole number >= 1, got {num_classes!r}")
    arguments = {**_data_arguments(factory, tuple(int(s) for s in shape), int(num_classes)), **kwargs}
    is_spec = parse_spec(name, what="model") is not None
    if is_spec:
        check_signature(
            factory, [], arguments, label=f"model spec {name!r}", expected="a factory called with keyword options only"
        )
    try:
        model = factory(**arguments)
    except SecureTrainError:
        raise
    except (RuntimeError, OverflowError, MemoryError, TypeError, ValueError) as exc:  # torch cannot shape the layers
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"cannot build model {name!r} for input_shape={shape} and {num_classes} classes with options {kwargs}: {first}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"model {name!r} returned a {type(model).__name__}; expected a torch.nn.Module")
    return model


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
    "HEMNIST",
    "LSTMClassifier",
    "MLP",
    "MODELS",
    "ScatterNet",
    "SmallResNet",
    "Square",
    "TransformerClassifier",
    "available_models",
    "build_model",
    "check_model_options",
    "find_batchnorm",
    "get_model_factory",
    "model_options",
    "register_model",
]
