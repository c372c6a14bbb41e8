"""Data from a NumPy ``.npz`` file, without code: ``--data npz:PATH``.

The file holds four arrays: ``x_train``, ``y_train``, ``x_test``, ``y_test``; optionally
``bounds`` (two numbers: the lower and upper limit of every input value) and ``num_classes``
(one whole number). It is read with ``allow_pickle=False`` (an object array is refused, never
unpickled) and checked: inputs are real numbers (any float or integer dtype, converted to
float32 as they are, not rescaled), finite, with the same per-sample shape in both splits;
labels are 1-D integer class indices in ``[0, num_classes)``, one per input.

Example:
    >>> import tempfile, os, numpy as np
    >>> from securetrain.data.npz import read_npz
    >>> path = os.path.join(tempfile.mkdtemp(), "d.npz")
    >>> rng = np.random.default_rng(0)
    >>> np.savez(path, x_train=rng.random((8, 3)), y_train=np.arange(8) % 2,
    ...          x_test=rng.random((4, 3)), y_test=np.arange(4) % 2, bounds=np.array([0.0, 1.0]))
    >>> d = read_npz(path)
    >>> tuple(d.splits["train"][0].shape), d.bounds, d.num_classes
    ((8, 3), (0.0, 1.0), None)
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from securetrain.errors import DataError, DataNotFoundError

PREFIX = "npz:"
"""``--data npz:PATH`` names an ``.npz`` file."""
REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("bounds", "num_classes")


@dataclass(frozen=True)
class NpzData:
    """The checked contents of an ``.npz`` data file."""

    path: Path
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    bounds: tuple[float, float] | None
    num_classes: int | None
    sha256: str
    """Hex SHA-256 of the file's bytes (a run records it and refuses a changed file)."""


def npz_path(spec: str) -> Path | None:
    """The path of an ``npz:PATH`` spec (``None`` for any other data name).

    Example:
        >>> str(npz_path("npz:data/mine.npz")), npz_path("digits")
        ('data/mine.npz', None)
    """
    if not spec.startswith(PREFIX):
        return None
    text = spec[len(PREFIX) :]
    if not text.strip():
        raise DataError(f"--data {spec!r} names no file; write npz:PATH, e.g. npz:data/mine.npz")
    return Path(os.path.expanduser(text))


def _check_inputs(name: str, a: np.ndarray, where: Path) -> torch.Tensor:
    if a.dtype.kind not in "fiu":
        raise DataError(f"{where}: {name} has dtype {a.dtype}; inputs must be real numbers (a float or integer dtype)")
    if a.ndim < 2:
        raise DataError(
            f"{where}: {name} has shape {a.shape}; inputs must be shaped (samples, features...) with at least 2 dimensions"
        )
    if a.shape[0] == 0:
        raise DataError(f"{where}: {name} is empty")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = int((~np.isfinite(a.reshape(a.shape[0], -1))).any(axis=1).sum())
        raise DataError(f"{where}: {name} has {bad} sample(s) with NaN or infinite values; clean or drop them first")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _check_labels(name: str, a: np.ndarray, n: int, where: Path) -> torch.Tensor:
    if a.dtype.kind not in "iu":
        raise DataError(f"{where}: {name} has dtype {a.dtype}; labels must be integer class indices (e.g. int64)")
    if a.ndim != 1:
        raise DataError(f"{where}: {name} has shape {a.shape}; labels must be 1-D, one class index per sample")
    if a.shape[0] != n:
        raise DataError(f"{where}: {name} has {a.shape[0]} labels for {n} inputs; they must have the same length")
    if a.size and int(a.min()) < 0:
        raise DataError(f"{where}: {name} has negative labels (min {int(a.min())}); class indices start at 0")
    return torch.from_numpy(a.astype(np.int64))


def _declared_bounds(a: np.ndarray, where: Path) -> tuple[float, float]:
    if a.dtype.kind not in "fiu" or a.shape != (2,):
        raise DataError(f"{where}: bounds must be two numbers [lower, upper], got dtype {a.dtype} shape {a.shape}")
    lo, hi = float(a[0]), float(a[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise DataError(f"{where}: bounds must be finite with lower < upper, got [{lo}, {hi}]")
    return lo, hi


def _declared_classes(a: np.ndarray, where: Path) -> int:
    if a.dtype.kind not in "iu" or a.size != 1 or int(a.reshape(-1)[0]) < 2:
        raise DataError(f"{where}: num_classes must be one whole number >= 2, got {a.reshape(-1)[:3].tolist()}")
    return int(a.reshape(-1)[0])


def read_npz(path: str | os.PathLike[str]) -> NpzData:
    """Read and check an ``.npz`` data file (``allow_pickle=False``).

    Raises :class:`~securetrain.errors.DataNotFoundError` for a missing file and
    :class:`~securetrain.errors.DataError` for anything malformed (not an npz, missing arrays,
    object arrays, wrong dtypes or shapes, non-finite inputs, labels out of range, inputs
    outside the declared bounds).
    """
    where = Path(path)
    if not where.is_file():
        raise DataNotFoundError(f"--data npz:{where}: no such file; give the path of an .npz file")
    try:
        with np.load(where, allow_pickle=False) as npz:
            names = set(npz.files)
            missing = [k for k in REQUIRED if k not in names]
            if missing:
                raise DataError(
                    f"{where}: missing array(s) {', '.join(missing)}; an .npz data file holds x_train, y_train, "
                    f"x_test, y_test (optional: bounds, num_classes); it has {', '.join(sorted(names)) or 'none'}"
                )
            arrays = {k: npz[k] for k in (*REQUIRED, *OPTIONAL) if k in names}
    except ValueError as exc:  # numpy: "Object arrays cannot be loaded when allow_pickle=False", bad headers
        raise DataError(f"{where}: cannot be read as an .npz data file without unpickling ({exc})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{where}: not a valid .npz file ({type(exc).__name__}: {exc})") from None
    bounds = _declared_bounds(arrays["bounds"], where) if "bounds" in arrays else None
    num_classes = _declared_classes(arrays["num_classes"], where) if "num_classes" in arrays else None
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for split in ("train", "test"):
        x = _check_inputs(f"x_{split}", arrays[f"x_{split}"], where)
        y = _check_labels(f"y_{split}", arrays[f"y_{split}"], int(x.shape[0]), where)
        if num_classes is not None and int(y.max()) >= num_classes:
            raise DataError(
                f"{where}: y_{split} has label {int(y.max())}, outside [0, {num_classes - 1}] for the declared "
                f"num_classes={num_classes}"
            )
        if bounds is not None and (float(x.min()) < bounds[0] or float(x.max()) > bounds[1]):
            raise DataError(
                f"{where}: x_{split} lies in [{float(x.min()):.4g}, {float(x.max()):.4g}], outside the declared "
                f"bounds [{bounds[0]}, {bounds[1]}]"
            )
        splits[split] = (x, y)
    if splits["train"][0].shape[1:] != splits["test"][0].shape[1:]:
        raise DataError(
            f"{where}: x_train samples are shaped {tuple(splits['train'][0].shape[1:])} but x_test samples "
            f"{tuple(splits['test'][0].shape[1:])}; both splits need the same per-sample shape"
        )
    return NpzData(path=where, splits=splits, bounds=bounds, num_classes=num_classes, sha256=file_digest(where))


def file_digest(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["OPTIONAL", "PREFIX", "REQUIRED", "NpzData", "file_digest", "npz_path", "read_npz"]
