"""CIFAR-10 from the python batch files, read with an allow-list unpickler.

The batch files are pickles. They are read by an unpickler that refuses every global
except the few names a numpy array needs, so a crafted file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from securetrain.data.base import DatasetInfo, data_root, register_dataset
from securetrain.errors import DataError, DataNotFoundError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}
_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_TEST = ["test_batch"]


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"refusing to load {module}.{name} from a CIFAR batch file (not plain data)")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch file into ``(images uint8 N x 3 x 32 x 32, labels)``."""
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a CIFAR-10 batch file; put the batch file itself there")
    try:
        obj = _RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except DataError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        RecursionError,
        OverflowError,
    ) as exc:
        raise DataError(f"{path}: not a readable CIFAR-10 batch file ({exc})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict in a CIFAR-10 batch file")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path}: missing 'data' or 'labels' in a CIFAR-10 batch file")
    try:
        arr = np.asarray(data, dtype=np.uint8)
        labels_arr = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"{path}: 'data' and 'labels' must be arrays of numbers ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' must be N x 3072, got {arr.shape}")
    if labels_arr.shape != (arr.shape[0],):
        raise DataError(f"{path}: {arr.shape[0]} images but labels of shape {labels_arr.shape}")
    return arr.reshape(-1, 3, 32, 32), labels_arr


def _load(split: str, root: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    base = data_root("cifar10", root)
    folder = base / "cifar-10-batches-py" if (base / "cifar-10-batches-py").is_dir() else base
    names = _TRAIN if split == "train" else _TEST
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        raise DataNotFoundError(
            f"cifar10: missing {', '.join(missing)} in {folder}. Place the CIFAR-10 python "
            "batch files (data_batch_1..5, test_batch) there or in a cifar-10-batches-py "
            "subfolder, or pass root=/ set SECURETRAIN_DATA"
        )
    xs, ys = zip(*(read_batch(folder / n) for n in names))
    x = torch.from_numpy(np.concatenate(xs).astype(np.float32) / 255.0)
    y = torch.from_numpy(np.concatenate(ys))
    return x, y


register_dataset(
    DatasetInfo(
        name="cifar10",
        kind="image",
        input_shape=(3, 32, 32),
        num_classes=10,
        bounds=(0.0, 1.0),
        default_model="resnet",
        description="CIFAR-10, 32x32 colour images, read from local python batch files",
        local_files=True,
    ),
    _load,
)
