"""MNIST and Fashion-MNIST from IDX files (raw or ``.gz``) in a local folder."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from securetrain.data.base import DatasetInfo, Loader, data_root, register_dataset
from securetrain.errors import DataError, DataNotFoundError

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array.

    Example:
        >>> import tempfile, pathlib, struct
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a-idx1-ubyte"
        >>> _ = p.write_bytes(struct.pack(">HBBI", 0, 8, 1, 3) + bytes([1, 2, 3]))
        >>> read_idx(p).tolist()
        [1, 2, 3]
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory, not an IDX file; put the IDX file itself there")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path}: not a readable gzip file ({type(exc).__name__}: {exc}); download it again, or gunzip it and "
            "keep the raw IDX file"
        ) from None
    if len(raw) < 4:
        raise DataError(f"{path}: too short to be an IDX file")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in _DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header ({ndim} dimensions need {4 + 4 * ndim} bytes, found {len(raw)})")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_DTYPES[code])
    count = int(np.prod(dims)) if dims else 0
    body = raw[4 + 4 * ndim :]
    if len(body) != count * dtype.itemsize:
        raise DataError(
            f"{path}: expected {count * dtype.itemsize} data bytes for shape {dims}, found {len(body)} (truncated?)"
        )
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _find(folder: Path, stem: str, dataset: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise DataNotFoundError(
        f"{dataset}: missing {stem} (or {stem}.gz) in {folder}. Place the four IDX files "
        f"(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        f"t10k-labels-idx1-ubyte; raw or .gz) there, or pass root=/ set SECURETRAIN_DATA"
    )


def _loader(name: str) -> Loader:
    def load(split: str, root: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
        folder = data_root(name, root)
        img_stem, lbl_stem = _FILES[split]
        images = read_idx(_find(folder, img_stem, name))
        labels = read_idx(_find(folder, lbl_stem, name))
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(f"{name}: images {images.shape} and labels {labels.shape} do not match")
        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        y = torch.from_numpy(labels.astype(np.int64))
        return x, y

    return load


for _name, _desc in (("mnist", "MNIST handwritten digits"), ("fashion-mnist", "Fashion-MNIST clothing images")):
    register_dataset(
        DatasetInfo(
            name=_name,
            kind="image",
            input_shape=(1, 28, 28),
            num_classes=10,
            bounds=(0.0, 1.0),
            default_model="cnn",
            description=f"{_desc}, 28x28, read from local IDX files",
            local_files=True,
        ),
        _loader(_name),
    )
