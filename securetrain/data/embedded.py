"""Data sets shipped inside scikit-learn: ``digits`` and ``breast_cancer``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from securetrain.data.base import DatasetInfo, register_dataset

SPLIT_SEED = 0
DIGITS_TEST_SIZE = 397
BREAST_CANCER_TEST_SIZE = 143


@lru_cache(maxsize=1)
def _digits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=DIGITS_TEST_SIZE, random_state=SPLIT_SEED, stratify=y)
    return {"train": (x_tr, y_tr), "test": (x_te, y_te)}


def _load_digits(split: str, root: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _digits()[split]
    return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())


@lru_cache(maxsize=1)
def _breast_cancer() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    bunch = load_breast_cancer()
    x = bunch.data.astype(np.float64)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=BREAST_CANCER_TEST_SIZE, random_state=SPLIT_SEED, stratify=y
    )
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std[std == 0] = 1.0
    # Standardised with train-split statistics only, then clipped to the declared bounds.
    lo, hi = BREAST_CANCER_BOUNDS
    x_tr = np.clip((x_tr - mean) / std, lo, hi).astype(np.float32)
    x_te = np.clip((x_te - mean) / std, lo, hi).astype(np.float32)
    return {"train": (x_tr, y_tr), "test": (x_te, y_te)}


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
        description="scikit-learn's 8x8 handwritten digits (1797 images; 1400 train / 397 test)",
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
        description="Wisconsin breast cancer (569 x 30; 426 train / 143 test), standardised on train",
    ),
    _load_breast_cancer,
)
