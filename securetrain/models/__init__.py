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

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

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


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the zoo model ``name`` for inputs of ``input_shape`` and ``num_classes`` outputs."""
    factory = MODELS.get(name)
    return factory(input_shape=tuple(int(s) for s in input_shape), num_classes=int(num_classes), **kwargs)


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
    "find_batchnorm",
    "register_model",
]
