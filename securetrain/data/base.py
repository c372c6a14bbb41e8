"""The data-set registry and the ``load`` entry point."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from securetrain.data.splits import TRAIN_AND_VALIDATION
from securetrain.errors import ConfigurationError
from securetrain.registry import Registry

SPLITS = ("train", "test")
"""The splits every data set has; embedded data sets also have ``validation`` (see ``DatasetInfo.splits``)."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and an attack need to know about a data set.

    ``bounds`` are the (lower, upper) limits every input value lies in; attacks keep
    adversarial inputs inside them. ``splits`` are the names ``load`` accepts (the embedded
    data sets have a disjoint ``validation`` split to tune hyper-parameters on).
    """

    name: str
    kind: str  # "image", "tabular" or "sequence"
    input_shape: tuple[int, ...]
    num_classes: int
    bounds: tuple[float, float]
    default_model: str
    description: str = ""
    local_files: bool = False
    extra: dict[str, object] = field(default_factory=dict)
    splits: tuple[str, ...] = SPLITS
    origin: str = ""
    """The data set the samples were taken from, when that is not this data set alone: data sets of one
    origin share samples (``mnist-5k`` is a sample of ``mnist``; ``mnist-5k-8x8`` is ``mnist-5k``
    redrawn), so one may never serve as public data for the other. Empty: the data set is its own
    origin. A registered origin with an origin of its own is followed (see :meth:`lineage`)."""

    def lineage(self) -> tuple[str, ...]:
        """This data set's name, then its origin, that origin's origin, ... (registered data sets are followed).

        Example:
            >>> from securetrain.data import get_info
            >>> get_info("mnist-5k-8x8").lineage()
            ('mnist-5k-8x8', 'mnist-5k', 'mnist')
        """
        chain = [self.name]
        nxt = self.origin
        while nxt and nxt not in chain:
            chain.append(nxt)
            nxt = DATASETS.get(nxt).info.origin if nxt in DATASETS else ""
        return tuple(chain)


Loader = Callable[[str, "Path | None"], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class _Entry:
    info: DatasetInfo
    loader: Loader


DATASETS: Registry[_Entry] = Registry("data set")


def register_dataset(info: DatasetInfo, loader: Loader, *, overwrite: bool = False) -> None:
    """Register ``loader(split, root) -> (x, y)`` under ``info.name``."""
    DATASETS.add(info.name, _Entry(info, loader), overwrite=overwrite)


def get_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered data set."""
    return DATASETS.get(name).info


def data_root(name: str, root: str | os.PathLike[str] | None) -> Path:
    """Where the local files of ``name`` are looked for."""
    if root is not None:
        return Path(root)
    env = os.environ.get("SECURETRAIN_DATA")
    base = Path(env) if env else Path.home() / ".securetrain" / "data"
    return base / name


def load(
    name: str, split: str = "train", root: str | os.PathLike[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load ``split`` of data set ``name`` as ``(x: float32 Tensor, y: int64 Tensor)``.

    ``split``: one of the data set's ``DatasetInfo.splits`` (``train``, ``test``, and for the
    embedded data sets ``validation``), or ``"train+validation"`` where the data set has a
    ``validation`` split: ``train`` followed by ``validation``, in that fixed order (for the
    final refit once hyper-parameters are chosen; it never overlaps ``test``). Splits are fixed
    and seeded: the same call always returns the same tensors.

    Example:
        >>> x, y = load("digits", split="train+validation")
        >>> len(y), bool((y[:1200] == load("digits", split="train")[1]).all())
        (1400, True)
    """
    entry = DATASETS.get(name)
    if split == TRAIN_AND_VALIDATION:
        return load_train_and_validation(name, entry.info.splits, lambda part: load(name, part, root))
    if split not in entry.info.splits:
        raise ConfigurationError(
            f"data set {name!r} has no split {split!r}; choose one of: {', '.join(entry.info.splits)}"
        )
    x, y = entry.loader(split, Path(root) if root is not None else None)
    return x.float().contiguous(), y.long().contiguous()


def load_train_and_validation(
    name: str, splits: tuple[str, ...], load_split: Callable[[str], tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``train`` then ``validation`` of data set ``name`` (whose splits are ``splits``), concatenated.

    Raises :class:`~securetrain.errors.ConfigurationError` when ``name`` has no ``validation`` split.
    """
    check_has_validation(name, splits)
    (x_tr, y_tr), (x_va, y_va) = load_split("train"), load_split("validation")
    return torch.cat([x_tr, x_va]).contiguous(), torch.cat([y_tr, y_va]).contiguous()


def check_has_validation(name: str, splits: tuple[str, ...]) -> None:
    """Refuse (:class:`~securetrain.errors.ConfigurationError`) ``train+validation`` for data set ``name``
    when its ``splits`` have no ``validation``."""
    if "validation" not in splits:
        raise ConfigurationError(
            f"data set {name!r} has no validation split, so there is no {TRAIN_AND_VALIDATION!r} to refit on; "
            f"train on 'train' (its splits: {', '.join(splits)})"
        )
