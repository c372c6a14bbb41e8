"""Training configuration and optimizer registry."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from securetrain.errors import ConfigurationError
from securetrain.registry import Registry

OptimizerFactory = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def _sgd(params: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adam")
def _adam(params: Iterable[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class TrainConfig:
    """Everything that defines a training run apart from its defenses.

    Example:
        >>> cfg = TrainConfig(data="digits", model="cnn", epochs=3)
        >>> cfg.resolved_model()
        'cnn'
    """

    data: str = "digits"
    model: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 5
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    eval_batch_size: int = 512
    progress: bool = True
    data_root: str | None = None
    device: str | None = None
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (see :mod:`securetrain.devices`); ``None`` leaves the
    model where it is (:func:`~securetrain.training.fit`) or on the CPU (:func:`securetrain.train`)."""
    train_split: str = "train"
    """The split :func:`securetrain.train` trains on: ``train`` (default) or ``train+validation``
    (the final refit, once hyper-parameters were chosen on ``validation``; data sets with a
    ``validation`` split only). Under differential privacy the privacy unit stays one sample and
    the accountant works with this split's size."""
    pretrain: str | None = None
    """Public data to pretrain the model on, without privacy, before training on ``data`` (a data set
    name, e.g. ``mnist-5k-8x8`` for ``digits``; ``None``: no pretraining). See
    :mod:`securetrain.training.pretrain`: the public set must be another data set (another origin)
    with the same input shape and classes; under differential privacy the guarantee covers ``data``
    and pretraining spends none of it (the public data is not protected)."""
    pretrain_epochs: int = 15
    """Epochs of pretraining (batch 256, Adam at ``pretrain_lr``)."""
    pretrain_lr: float = 2e-2
    """Adam's learning rate for pretraining."""
    trainable: list[str] | None = None
    """Names of the parameters trained on ``data``, as prefixes (e.g. ``["head."]``: the head only, the
    pretrained features frozen); ``None``: all. A prefix that names no parameter is refused."""

    def __post_init__(self) -> None:
        if int(self.epochs) < 1:
            raise ConfigurationError(f"epochs must be at least 1, got {self.epochs}")
        if int(self.batch_size) < 1:
            raise ConfigurationError(f"batch_size must be at least 1, got {self.batch_size}")
        if not float(self.lr) > 0:
            raise ConfigurationError(f"lr must be positive, got {self.lr}")
        if not math.isfinite(float(self.lr)):
            raise ConfigurationError(f"lr must be a finite positive number, got {self.lr}; try 1e-2")
        for what in ("momentum", "weight_decay"):
            value = float(getattr(self, what))
            if not (math.isfinite(value) and value >= 0):
                raise ConfigurationError(f"{what} must be a finite number >= 0, got {getattr(self, what)}")
        OPTIMIZERS.get(self.optimizer)
        from securetrain.data.splits import TRAIN_SPLITS

        if self.train_split not in TRAIN_SPLITS:
            raise ConfigurationError(
                f"train_split must be one of {', '.join(TRAIN_SPLITS)}, got {self.train_split!r} "
                "(a model is never trained on test)"
            )
        self._check_pretraining()
        if self.device is not None:
            from securetrain.devices import check_device_name

            check_device_name(self.device)

    def _check_pretraining(self) -> None:
        if self.pretrain is not None:
            if not isinstance(self.pretrain, str) or not self.pretrain:
                raise ConfigurationError(f"pretrain must be a data set name or None, got {self.pretrain!r}")
            if self.pretrain == self.data:
                raise ConfigurationError(
                    f"pretrain names the training data itself ({self.data!r}): pretraining runs without privacy, "
                    "so it must use other, public data (e.g. mnist-5k-8x8 for digits)"
                )
        if int(self.pretrain_epochs) < 1:
            raise ConfigurationError(f"pretrain_epochs must be at least 1, got {self.pretrain_epochs}")
        if not (math.isfinite(float(self.pretrain_lr)) and float(self.pretrain_lr) > 0):
            raise ConfigurationError(f"pretrain_lr must be a finite positive number, got {self.pretrain_lr}")
        if self.trainable is not None:
            if (
                isinstance(self.trainable, str)
                or not isinstance(self.trainable, (list, tuple))
                or not self.trainable
                or not all(isinstance(t, str) and t for t in self.trainable)
            ):
                raise ConfigurationError(
                    f"trainable must be a non-empty list of parameter-name prefixes (e.g. ['head.']), got "
                    f"{self.trainable!r}"
                )
            self.trainable = list(self.trainable)

    def resolved_model(self) -> str:
        """The model name, defaulting to the data set's default model (for data named by an import
        path or an ``.npz`` file, declared or inferred from its shape: loading it)."""
        if self.model:
            return self.model
        from securetrain.data.sources import resolve_data

        return resolve_data(self.data, self.data_root).info().default_model

    def make_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """Build the configured optimizer over ``params``."""
        return OPTIMIZERS.get(self.optimizer)(params, self)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return asdict(self)
