"""Where a run's data comes from: a registered data set, an installed plugin, your own code, or
an ``.npz`` file.

``--data`` (and ``TrainConfig.data``) takes one of:

* a registered name (``digits``, ... and anything added with :func:`register_dataset`);
* the name of an installed plugin: an entry in the ``securetrain.datasets`` entry-point group
  (read lazily with :mod:`importlib.metadata`), naming a loader as below;
* an import-path spec ``package.module:load`` naming a callable ``load(split)`` that returns
  ``(x, y)`` (tensors or NumPy arrays) or a map-style ``torch.utils.data.Dataset`` of
  ``(x, y)`` pairs, for ``split`` ``"train"`` and ``"test"``. **Importing the spec runs the
  module's code** (see :mod:`securetrain.specs`);
* ``npz:PATH``, a NumPy file (see :mod:`securetrain.data.npz`); no code is run.

A loader may declare its input bounds, number of classes, kind and default model with
:func:`declare_data`; what it does not declare is inferred from both splits (bounds: the
smallest and largest input value; classes: the largest label + 1) and recorded, with the list
of inferred fields, in the run's ``config.json``. Inputs become float32 as they are (not
rescaled); labels become int64 class indices.

Example:
    >>> import torch
    >>> from securetrain.data.sources import declare_data, source_from_loader
    >>> @declare_data(bounds=(0.0, 1.0))
    ... def load(split):
    ...     n = 8 if split == "train" else 4
    ...     return torch.rand(n, 3), torch.arange(n) % 2
    >>> source = source_from_loader("mymod:load", load)
    >>> info = source.info()
    >>> info.input_shape, info.num_classes, info.bounds, source.inferred()
    ((3,), 2, (0.0, 1.0), ['num_classes', 'kind', 'default_model'])
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from securetrain.data.base import DATASETS, SPLITS, DatasetInfo, get_info, load_train_and_validation
from securetrain.data.base import load as load_registered
from securetrain.data.npz import npz_path, read_npz
from securetrain.data.splits import TRAIN_AND_VALIDATION
from securetrain.data.validate import validate_batch
from securetrain.errors import ConfigurationError, DataError, SecureTrainError, UnknownNameError
from securetrain.registry import Registry
from securetrain.specs import check_signature, import_spec, parse_spec

KINDS = ("image", "tabular", "sequence")


@dataclass(frozen=True)
class DataDeclaration:
    """What a data loader declares about its data (anything left ``None`` is inferred)."""

    bounds: tuple[float, float] | None = None
    num_classes: int | None = None
    kind: str | None = None
    default_model: str | None = None

    def __post_init__(self) -> None:
        if self.bounds is not None:
            lo, hi = (float(b) for b in self.bounds)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ConfigurationError(f"declared bounds must be finite with lower < upper, got {self.bounds}")
        if self.num_classes is not None and (isinstance(self.num_classes, bool) or int(self.num_classes) < 2):
            raise ConfigurationError(f"declared num_classes must be a whole number >= 2, got {self.num_classes!r}")
        if self.kind is not None and self.kind not in KINDS:
            raise ConfigurationError(f"declared kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


class DeclaredData:
    """A data loader ``load(split)`` together with its :class:`DataDeclaration` (see :func:`declare_data`)."""

    def __init__(self, loader: Callable[[str], Any], declaration: DataDeclaration) -> None:
        self.loader = loader
        self.declaration = declaration
        functools.update_wrapper(self, loader)

    def __call__(self, split: str) -> Any:
        return self.loader(split)


def declare_data(
    *,
    bounds: tuple[float, float] | None = None,
    num_classes: int | None = None,
    kind: str | None = None,
    default_model: str | None = None,
) -> Callable[[Callable[[str], Any]], DeclaredData]:
    """Decorator declaring the bounds, classes, kind and default model of a data loader.

    Example:
        >>> @declare_data(bounds=(0.0, 1.0), num_classes=10, kind="image")
        ... def load(split): ...
        >>> load.declaration.num_classes
        10
    """
    declaration = DataDeclaration(
        bounds=(float(bounds[0]), float(bounds[1])) if bounds is not None else None,
        num_classes=num_classes,
        kind=kind,
        default_model=default_model,
    )

    def wrap(loader: Callable[[str], Any]) -> DeclaredData:
        return DeclaredData(loader, declaration)

    return wrap


DATASET_PLUGINS: Registry[Callable[[str], Any]] = Registry("data set", entry_point_group="securetrain.datasets")
"""Data loaders of installed plugins (``securetrain.datasets`` entry points), by name."""


def _as_tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, (list, tuple)):
        try:
            value = np.asarray(value)
        except ValueError as exc:  # ragged nested lists
            raise DataError(f"{what} is a list that is not a rectangular array of numbers ({exc})") from None
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise DataError(f"{what} is a NumPy array of dtype {value.dtype}; expected numbers")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return torch.tensor(value)
    raise DataError(f"{what} is a {type(value).__name__}; expected a tensor, a NumPy array or a number")


def _from_dataset(ds: Dataset[Any], label: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        n = len(ds)  # type: ignore[arg-type]  # a map-style Dataset defines __len__
    except TypeError:
        raise DataError(f"{label} returned a Dataset without __len__; expected a map-style Dataset") from None
    if n == 0:
        raise DataError(f"{label} returned an empty Dataset")
    xs, ys = [], []
    for i in range(n):
        item = ds[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DataError(f"{label}: item {i} of the Dataset is a {type(item).__name__}; expected an (x, y) pair")
        xs.append(_as_tensor(item[0], f"{label}: x of item {i}"))
        y = _as_tensor(item[1], f"{label}: y of item {i}")
        if y.numel() != 1:
            raise DataError(f"{label}: y of item {i} has shape {tuple(y.shape)}; expected one class index")
        ys.append(y.reshape(()))
    try:
        return torch.stack(xs), torch.stack(ys)
    except RuntimeError as exc:
        raise DataError(f"{label}: the Dataset's inputs do not all have the same shape ({exc})") from None


def as_tensors(raw: Any, label: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x: float32, y: int64)`` from what a loader returned: ``(x, y)`` or a map-style Dataset.

    Raises :class:`~securetrain.errors.DataError` naming ``label`` for anything else, for
    non-numeric or boolean inputs, non-integer labels, or mismatched lengths.

    Example:
        >>> x, y = as_tensors((np.zeros((3, 2)), [0, 1, 1]), "load('train')")
        >>> x.dtype, y.tolist()
        (torch.float32, [0, 1, 1])
    """
    if isinstance(raw, (tuple, list)) and len(raw) == 2:
        x = _as_tensor(raw[0], f"{label}: x")
        y = _as_tensor(raw[1], f"{label}: y")
    elif isinstance(raw, Dataset) and not isinstance(raw, IterableDataset):
        x, y = _from_dataset(raw, label)
    else:
        raise DataError(
            f"{label} returned a {type(raw).__name__}; expected (x, y) tensors or arrays, or a map-style "
            "torch.utils.data.Dataset of (x, y) pairs"
        )
    if x.dtype == torch.bool or x.is_complex() or not (x.is_floating_point() or _is_integer(x)):
        raise DataError(f"{label}: inputs have dtype {x.dtype}; expected real numbers (a float or integer dtype)")
    if x.dim() < 2:
        raise DataError(f"{label}: inputs have shape {tuple(x.shape)}; expected (samples, features...)")
    if y.dim() != 1:
        raise DataError(f"{label}: labels have shape {tuple(y.shape)}; expected a 1-D tensor of class indices")
    if y.is_floating_point():
        if not bool(torch.isfinite(y).all()) or not torch.equal(y, y.round()):
            raise DataError(f"{label}: labels are not whole numbers; expected integer class indices")
    elif not _is_integer(y):
        raise DataError(f"{label}: labels have dtype {y.dtype}; expected integer class indices")
    validate_batch(x.float(), y, what=label)
    if int(y.min()) < 0:
        raise DataError(f"{label}: labels must be class indices >= 0, found {int(y.min())}")
    return x.float().contiguous(), y.long().contiguous()


def _is_integer(t: torch.Tensor) -> bool:
    return t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


@dataclass
class DataSource:
    """A resolved ``--data``: loads splits as checked tensors and describes them (:meth:`info`).

    ``origin`` is ``"registry"``, ``"plugin"``, ``"import"`` or ``"npz"``; ``record`` holds
    what ``config.json`` needs besides the info (for an ``.npz`` file, its SHA-256).
    """

    name: str
    origin: str
    loader: Callable[[str], tuple[torch.Tensor, torch.Tensor]]
    declaration: DataDeclaration = field(default_factory=DataDeclaration)
    registered: DatasetInfo | None = None
    record: dict[str, Any] = field(default_factory=dict)
    _splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)
    _info: DatasetInfo | None = field(default=None, repr=False)

    def load(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Split ``"train"`` or ``"test"`` as ``(x: float32, y: int64)`` (loaded once, then cached).

        ``"train+validation"`` (a registered data set with a ``validation`` split only; any other
        is refused with :class:`~securetrain.errors.ConfigurationError`): ``train`` followed by
        ``validation``, the final refit's training set.
        """
        if split == TRAIN_AND_VALIDATION:
            if split not in self._splits:
                splits = self.registered.splits if self.registered is not None else SPLITS
                self._splits[split] = load_train_and_validation(self.name, splits, self.loader)
            return self._splits[split]
        if split not in SPLITS:
            raise ConfigurationError(
                f"unknown split {split!r}; choose one of: {', '.join(SPLITS)} (or {TRAIN_AND_VALIDATION!r} "
                "for a registered data set with a validation split)"
            )
        if split not in self._splits:
            self._splits[split] = self.loader(split)
        return self._splits[split]

    def inferred(self) -> list[str]:
        """Which of bounds, num_classes, kind and default_model were inferred, not declared."""
        if self.registered is not None:
            return []
        d = self.declaration
        fields = {"bounds": d.bounds, "num_classes": d.num_classes, "kind": d.kind, "default_model": d.default_model}
        return [k for k, v in fields.items() if v is None]

    def info(self) -> DatasetInfo:
        """The :class:`DatasetInfo`: registered, or declared and inferred from both splits."""
        if self.registered is not None:
            return self.registered
        if self._info is None:
            self._info = self._infer()
        return self._info

    def _infer(self) -> DatasetInfo:
        (x_tr, y_tr), (x_te, y_te) = self.load("train"), self.load("test")
        shape = tuple(int(s) for s in x_tr.shape[1:])
        if tuple(x_te.shape[1:]) != shape:
            raise DataError(
                f"data {self.name!r}: train inputs are shaped {shape} but test inputs {tuple(x_te.shape[1:])}; "
                "both splits need the same per-sample shape"
            )
        d = self.declaration
        num_classes = d.num_classes if d.num_classes is not None else max(int(y_tr.max()), int(y_te.max())) + 1
        if num_classes < 2:
            raise DataError(f"data {self.name!r}: every label is 0; a classifier needs at least 2 classes")
        if d.bounds is not None:
            bounds = d.bounds
        else:
            bounds = (min(float(x_tr.min()), float(x_te.min())), max(float(x_tr.max()), float(x_te.max())))
            if not bounds[0] < bounds[1]:
                raise DataError(f"data {self.name!r}: every input value is {bounds[0]}; there is nothing to learn")
        for split, (x, y) in (("train", (x_tr, y_tr)), ("test", (x_te, y_te))):
            validate_batch(x, y, num_classes, bounds, what=f"data {self.name!r} ({split} split)")
        kind = d.kind or {1: "tabular", 3: "image"}.get(len(shape), "sequence")
        default_model = d.default_model or ("cnn" if kind == "image" else "mlp")
        return DatasetInfo(
            name=self.name,
            kind=kind,
            input_shape=shape,
            num_classes=int(num_classes),
            bounds=(float(bounds[0]), float(bounds[1])),
            default_model=default_model,
            description=f"{self.origin} data {self.name} ({x_tr.shape[0]} train / {x_te.shape[0]} test)",
            local_files=self.origin == "npz",
        )

    def config_section(self, root: str | None = None) -> dict[str, Any]:
        """The ``data`` section of a run's ``config.json``."""
        info = self.info()
        out: dict[str, Any] = {
            "name": self.name,
            "kind": info.kind,
            "input_shape": list(info.input_shape),
            "num_classes": info.num_classes,
            "bounds": list(info.bounds),
            "root": root,
            "source": self.origin,
        }
        if self.origin != "registry":
            out["inferred"] = self.inferred()
        out.update(self.record)
        return out


def _declaration_of(loader: Callable[[str], Any]) -> DataDeclaration:
    return loader.declaration if isinstance(loader, DeclaredData) else DataDeclaration()


def source_from_loader(name: str, loader: Callable[[str], Any], *, origin: str = "import") -> DataSource:
    """A :class:`DataSource` for a user's ``loader(split)`` (declared with :func:`declare_data` or not)."""
    label = f"data spec {name!r}" if origin == "import" else f"data set {name!r}"
    target = loader.loader if isinstance(loader, DeclaredData) else loader
    check_signature(target, ["train"], {}, label=label, expected="load(split) called with 'train' or 'test'")

    def load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        call = f"{label}: load({split!r})"
        try:
            raw = loader(split)
        except SecureTrainError:
            raise
        except Exception as exc:  # the user's loader failed: name it, keep the cause
            raise DataError(f"{call} raised {type(exc).__name__}: {exc}") from exc
        return as_tensors(raw, call)

    return DataSource(name=name, origin=origin, loader=load, declaration=_declaration_of(loader))


def _npz_source(name: str) -> DataSource:
    path = npz_path(name)
    assert path is not None
    resolved = path.resolve()
    data = read_npz(resolved)
    declaration = DataDeclaration(bounds=data.bounds, num_classes=data.num_classes)
    return DataSource(
        name=f"npz:{resolved}",
        origin="npz",
        loader=lambda split: data.splits[split],
        declaration=declaration,
        record={"sha256": data.sha256},
    )


def resolve_data(name: str, root: str | os.PathLike[str] | None = None) -> DataSource:
    """The :class:`DataSource` for a ``--data`` value (see the module docstring for the forms).

    An import-path spec is imported here (running its module's code). Raises
    :class:`~securetrain.errors.UnknownNameError` for a name that is neither registered nor a
    plugin, :class:`~securetrain.errors.SpecError` for a spec that cannot be imported or called
    as ``load(split)``, and :class:`~securetrain.errors.DataError` for a bad ``.npz`` file.
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"--data must be a data set name, package.module:load or npz:PATH, got {name!r}")
    if npz_path(name) is not None:
        return _npz_source(name)
    if parse_spec(name, what="data") is not None:
        return source_from_loader(name, import_spec(name, what="data"))
    if name in DATASETS:
        return DataSource(
            name=name,
            origin="registry",
            loader=lambda split: load_registered(name, split, root=root),
            registered=get_info(name),
        )
    if name in DATASET_PLUGINS:
        return source_from_loader(name, DATASET_PLUGINS.get(name), origin="plugin")
    raise UnknownNameError("data set", name, [*DATASETS.names(), *DATASET_PLUGINS.names()])


__all__ = [
    "DATASET_PLUGINS",
    "DataDeclaration",
    "DataSource",
    "DeclaredData",
    "as_tensors",
    "declare_data",
    "resolve_data",
    "source_from_loader",
]
