"""Data sets shipped inside scikit-learn: ``digits`` and ``breast_cancer``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from securetrain.data.base import DatasetInfo, register_dataset
from securetrain.data.splits import EMBEDDED_SPLITS, three_way_split

SPLIT_SEED = 0
DIGITS_TEST_SIZE = 397
DIGITS_VALIDATION_SIZE = 200
BREAST_CANCER_TEST_SIZE = 143
BREAST_CANCER_VALIDATION_SIZE = 64


@lru_cache(maxsize=1)
def _digits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    return three_way_split(x, y, validation=DIGITS_VALIDATION_SIZE, test=DIGITS_TEST_SIZE, seed=SPLIT_SEED)


def _load_digits(split: str, root: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _digits()[split]
    return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())


@lru_cache(maxsize=1)
def _breast_cancer() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x = bunch.data.astype(np.float64)
    y = bunch.target.astype(np.int64)
    parts = three_way_split(
        x, y, validation=BREAST_CANCER_VALIDATION_SIZE, test=BREAST_CANCER_TEST_SIZE, seed=SPLIT_SEED
    )
    x_tr = parts["train"][0]
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std[std == 0] = 1.0
    # Standardised with train-split statistics only, then clipped to the declared bounds.
    lo, hi = BREAST_CANCER_BOUNDS
    return {k: (np.clip((xs - mean) / std, lo, hi).astype(np.float32), ys) for k, (xs, ys) in parts.items()}


# Standardised features beyond +-12 standard deviations are clipped; attack bounds are known.
BREAST_CANCER_BOUNDS = (-12.0, 12.0)


def _load_breast_cancer(split: str, root: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _breast_cancer()[split]
    return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())


register_dataset(
    DatasetInfo(
        name="digits",
        kind="image",
        input_shape=(1, 8, 8),
        num_classes=10,
        bounds=(0.0, 1.0),
        default_model="cnn",
        description="scikit-learn's 8x8 handwritten digits (1797 images; 1200 train / 200 validation / 397 test)",
        splits=EMBEDDED_SPLITS,
    ),
    _load_digits,
)
register_dataset(
    DatasetInfo(
        name="breast_cancer",
        kind="tabular",
        input_shape=(30,),
        num_classes=2,
        bounds=BREAST_CANCER_BOUNDS,
        default_model="mlp",
        description="Wisconsin breast cancer (569 x 30; 362 train / 64 validation / 143 test), standardised on train",
        splits=EMBEDDED_SPLITS,
    ),
    _load_breast_cancer,
)
