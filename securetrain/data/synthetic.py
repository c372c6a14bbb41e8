"""A seeded synthetic sequence-classification task for the LSTM and transformer models.

Each sequence is a noisy sine wave; its class is the frequency band (4 classes). Values
lie in [0, 1], so attacks and audits apply to it as they do to images.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from securetrain.data.base import DatasetInfo, register_dataset
from securetrain.data.splits import EMBEDDED_SPLITS

SEQ_LEN = 16
FEATURES = 4
N_TRAIN = 1600
N_VALIDATION = 400
N_TEST = 400
SEED = 1234
NUM_CLASSES = 4


def make_sequences(
    n: int, seed: int, seq_len: int = SEQ_LEN, features: int = FEATURES
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` sequences and labels deterministically from ``seed``.

    Example:
        >>> x, y = make_sequences(5, seed=0)
        >>> x.shape, bool(x.min() >= 0 and x.max() <= 1)
        ((5, 16, 4), True)
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, size=n)
    t = np.arange(seq_len)[None, :, None]
    freq = (0.5 + y[:, None, None]) * (np.pi / seq_len) * 1.5
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, features))
    amp = rng.uniform(0.6, 1.0, size=(n, 1, features))
    signal = amp * np.sin(freq * t + phase)
    noise = rng.normal(0.0, 0.15, size=(n, seq_len, features))
    x = np.clip(0.5 + 0.4 * (signal + noise), 0.0, 1.0).astype(np.float32)
    return x, y.astype(np.int64)


@lru_cache(maxsize=1)
def _data() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        "train": make_sequences(N_TRAIN, SEED),
        "validation": make_sequences(N_VALIDATION, SEED + 2),
        "test": make_sequences(N_TEST, SEED + 1),
    }


def _load(split: str, root: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _data()[split]
    return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())


register_dataset(
    DatasetInfo(
        name="sequences",
        kind="sequence",
        input_shape=(SEQ_LEN, FEATURES),
        num_classes=NUM_CLASSES,
        bounds=(0.0, 1.0),
        default_model="lstm",
        description=(
            f"seeded synthetic sine-frequency classification "
            f"({N_TRAIN} train / {N_VALIDATION} validation / {N_TEST} test, 16 x 4)"
        ),
        splits=EMBEDDED_SPLITS,
    ),
    _load,
)
