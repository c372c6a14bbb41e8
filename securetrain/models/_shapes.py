"""Shape helpers shared by the zoo models."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from securetrain.errors import ConfigurationError, ModelError


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


def check_width(model: str, option: str, value: object, *, minimum: int = 1) -> int:
    """A model option that is a whole number ``>= minimum`` (a layer width, a count), or :class:`ConfigurationError`.

    Example:
        >>> check_width("cnn", "hidden", 64)
        64
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ConfigurationError(
            f"model {model!r}: option {option!r} must be a whole number >= {minimum}, got {value!r}"
        )
    return int(value)


def check_widths(model: str, option: str, value: object, *, allow_int: bool = False) -> tuple[int, ...]:
    """A model option that is a non-empty list of whole numbers >= 1 (one per layer).

    With ``allow_int`` a single number means one layer.

    Example:
        >>> check_widths("mlp", "hidden", [128, 64])
        (128, 64)
        >>> check_widths("mlp", "hidden", 32, allow_int=True)
        (32,)
    """
    if allow_int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        one = "a whole number or " if allow_int else ""
        raise ConfigurationError(
            f"model {model!r}: option {option!r} must be {one}a non-empty list of layer widths "
            f"(whole numbers >= 1), got {value!r}"
        )
    bad = [v for v in value if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < 1]
    if bad:
        raise ConfigurationError(
            f"model {model!r}: option {option!r} must list whole numbers >= 1, got {list(value)!r}"
        )
    return tuple(int(v) for v in value)
