"""Public-data pretraining and frozen parameters: what :func:`~securetrain.training.fit` does first.

A standard way to make a private model better (Tramer & Boneh 2021; De et al. 2022): train it
first, **without privacy**, on *public* data of the same kind, then train it on the private data
with DP-SGD, often only its last layers. The privacy guarantee is about the private training set
only, and pretraining never reads it: the epsilon of the private training is the same with and
without pretraining. What pretraining needs, and what this module checks before anything runs:

* the public data is another data set, of another origin (``mnist-5k-8x8`` is ``mnist-5k``
  redrawn, so neither is public data for the other; see ``DatasetInfo.origin``): a data set
  never pretrains a model for itself;
* it has the private data's input shape and classes (the same model is trained on both).

Whether the public data is really public, and really disjoint from the private data, is the
user's claim (for your own data sets the origin check only sees names); the report names it.

``TrainConfig.trainable`` (parameter-name prefixes) freezes every other parameter for the run
(``requires_grad`` off; restored when the run ends): with pretrained features, training only
the head under DP puts the noise on fewer parameters.

Example:
    >>> import torch
    >>> from securetrain.models import build_model
    >>> from securetrain.training import TrainConfig
    >>> from securetrain.training.pretrain import trainable_parameters
    >>> model = build_model("cnn", (1, 8, 8), 10)
    >>> with trainable_parameters(model, ["head."]) as (trained, total):
    ...     trained, total, model.features[0].weight.requires_grad
    (8906, 13706, False)
    >>> model.features[0].weight.requires_grad   # restored
    True
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from securetrain.data.base import DatasetInfo
from securetrain.data.sources import resolve_data
from securetrain.data.validate import row_keys
from securetrain.errors import ConfigurationError, DataNotFoundError
from securetrain.training.config import TrainConfig

log = logging.getLogger(__name__)

PRETRAIN_BATCH_SIZE = 256
"""Batch size of pretraining."""
PRETRAIN_SPLIT = "train"
"""The split of the public data set pretrained on."""
PRETRAIN_ONLY_KEYS = ("pretrain_epochs", "pretrain_lr")
"""``TrainConfig`` settings that mean nothing without ``pretrain`` (not compared on resume when neither run pretrains)."""


def ignored_on_resume(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, ...]:
    """The training settings (of two ``TrainConfig.to_dict()`` forms) a resume need not compare:
    the pretraining's own, when neither run pretrains."""
    return PRETRAIN_ONLY_KEYS if old.get("pretrain") is None and new.get("pretrain") is None else ()


@dataclass(frozen=True)
class PublicData:
    """A checked public data set: its description and the ``train`` split pretrained on."""

    info: DatasetInfo
    x: torch.Tensor
    y: torch.Tensor


def public_data(
    config: TrainConfig, private: DatasetInfo | None, train_x: torch.Tensor, num_classes: int
) -> PublicData:
    """The public data set of ``config.pretrain``, checked against the private training inputs ``train_x``.

    Raises :class:`~securetrain.errors.ConfigurationError` when it is the private data set or
    shares an origin with it (:meth:`~securetrain.data.DatasetInfo.lineage`), when any of its
    ``train`` inputs equals a private training input (a copy or a subset under another name),
    or when its input shape or number of classes differ from the private data's.
    """
    if config.pretrain is None:
        raise ConfigurationError("no public data set to pretrain on (TrainConfig.pretrain is None)")
    try:
        source = resolve_data(config.pretrain, config.data_root)
        info = source.info()
    except DataNotFoundError as exc:  # its message names --data: say which data it was
        raise DataNotFoundError(f"pretrain data {config.pretrain!r}: {exc}") from None
    private_lineage = set(private.lineage()) if private is not None else set()
    private_lineage.add(config.data)
    shared = [name for name in info.lineage() if name in private_lineage]
    if shared:
        private_name = private.name if private is not None else config.data
        raise ConfigurationError(
            f"pretrain data {config.pretrain!r} and the training data {private_name!r} both come from {shared[0]!r}: "
            "pretraining runs without privacy, so it must use other, public data"
        )
    input_shape = tuple(train_x.shape[1:])
    if tuple(info.input_shape) != input_shape or info.num_classes != num_classes:
        raise ConfigurationError(
            f"pretrain data {config.pretrain!r} has inputs {list(info.input_shape)} and {info.num_classes} classes; "
            f"the training data has {list(input_shape)} and {num_classes}: the same model must fit both"
        )
    public_x, public_y = source.load(PRETRAIN_SPLIT)
    common = len(set(row_keys(public_x)) & set(row_keys(train_x)))
    if common:
        raise ConfigurationError(
            f"{common} of the {len(public_x)} inputs of pretrain data {config.pretrain!r} are also training inputs: "
            "pretraining runs without privacy, so the public data must share no sample with the private data"
        )
    return PublicData(info, public_x, public_y)


def check_pretraining(
    model: nn.Module, config: TrainConfig, private: DatasetInfo | None, train_x: torch.Tensor, num_classes: int
) -> None:
    """Everything :func:`~securetrain.training.fit` would refuse about ``config.pretrain`` and
    ``config.trainable`` for ``model``, checked without training (for callers that must refuse
    before writing anything)."""
    if config.pretrain is not None:
        public_data(config, private, train_x, num_classes)
    with trainable_parameters(model, config.trainable):
        pass


def pretrain(model: nn.Module, config: TrainConfig, public: PublicData) -> None:
    """Train ``model`` without privacy on ``public`` (its ``train`` split).

    Batch :data:`PRETRAIN_BATCH_SIZE`, Adam at ``config.pretrain_lr`` for ``config.pretrain_epochs``
    epochs, seeded with ``config.seed``, in this process only.
    """
    from securetrain.training.loop import fit

    info = public.info
    inner = TrainConfig(
        data=info.name,
        epochs=config.pretrain_epochs,
        batch_size=PRETRAIN_BATCH_SIZE,
        optimizer="adam",
        lr=config.pretrain_lr,
        seed=config.seed,
        progress=config.progress,
        data_root=config.data_root,
    )
    log.info("pretraining on public data %s (%d samples, %d epochs)", info.name, len(public.y), config.pretrain_epochs)
    fit(
        model,
        (public.x, public.y),
        None,
        inner,
        num_classes=info.num_classes,
        bounds=info.bounds,
        data_info=info,
        distributed=False,
    )


@contextmanager
def trainable_parameters(model: nn.Module, prefixes: Sequence[str] | None) -> Iterator[tuple[int, int]]:
    """Freeze every parameter of ``model`` whose name starts with none of ``prefixes``, for the block.

    Yields ``(trained, total)`` numbers of parameters; ``requires_grad`` is restored on exit.
    ``None`` freezes nothing. Raises :class:`~securetrain.errors.ConfigurationError` when a
    prefix names no parameter or nothing would be trained.
    """
    named = list(model.named_parameters())
    total = sum(p.numel() for _, p in named)
    if prefixes is None:
        yield sum(p.numel() for _, p in named if p.requires_grad), total
        return
    unmatched = [t for t in prefixes if not any(n.startswith(t) for n, _ in named)]
    if unmatched:
        shown = ", ".join(n for n, _ in named[:8]) + (", ..." if len(named) > 8 else "")
        raise ConfigurationError(
            f"trainable prefix(es) {', '.join(map(repr, unmatched))} name no parameter of the model ({shown})"
        )
    turned_off = {n: p for n, p in named if p.requires_grad and not any(n.startswith(t) for t in prefixes)}
    trained = sum(p.numel() for _, p in named if p.requires_grad) - sum(p.numel() for p in turned_off.values())
    if trained == 0:
        raise ConfigurationError(f"trainable {list(prefixes)} leaves no parameter of the model to train")
    try:
        for p in turned_off.values():
            p.requires_grad_(False)
        yield trained, total
    finally:
        # by name: a layer replaced meanwhile (e.g. for DP) is restored too
        for n, p in model.named_parameters():
            if n in turned_off:
                p.requires_grad_(True)


__all__ = [
    "PRETRAIN_BATCH_SIZE",
    "PRETRAIN_ONLY_KEYS",
    "PublicData",
    "PRETRAIN_SPLIT",
    "check_pretraining",
    "ignored_on_resume",
    "pretrain",
    "public_data",
    "trainable_parameters",
]
