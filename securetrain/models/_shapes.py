"""Shape helpers shared by the zoo models."""

from __future__ import annotations

import math
from collections.abc import Sequence

from securetrain.errors import ModelError


def image_shape(model: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    """Return ``(channels, height, width)`` or raise :class:`ModelError`."""
    if len(input_shape) == 2:
        return (1, int(input_shape[0]), int(input_shape[1]))
    if len(input_shape) != 3:
        raise ModelError(
            f"model {model!r} needs image inputs shaped (channels, height, width); got input_shape={tuple(input_shape)}"
        )
    c, h, w = (int(s) for s in input_shape)
    return c, h, w


def sequence_shape(model: str, input_shape: Sequence[int]) -> tuple[int, int]:
    """Return ``(seq_len, features)`` or raise :class:`ModelError`."""
    if len(input_shape) != 2:
        raise ModelError(
            f"model {model!r} needs sequence inputs shaped (seq_len, features); got input_shape={tuple(input_shape)}"
        )
    return int(input_shape[0]), int(input_shape[1])


def flat_size(input_shape: Sequence[int]) -> int:
    """Number of features of one flattened sample."""
    return int(math.prod(int(s) for s in input_shape))
