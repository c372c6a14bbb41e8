"""Shared checks of user-supplied settings: positive numbers, counts, bounds, delta.

Every check takes the exception class to raise (a :mod:`securetrain.errors` class, so
attacks raise :class:`~securetrain.errors.AttackError`, privacy settings
:class:`~securetrain.errors.PrivacyError`, ...) and returns the value converted to the
plain Python type. Messages say what was expected and what was given. These are the
library's one implementation; no package keeps a private copy.

Example:
    >>> from securetrain.errors import AttackError
    >>> from securetrain.validation import check_positive, check_count, check_bounds
    >>> check_positive("step size", 0.5, error=AttackError)
    0.5
    >>> check_count("steps", 10, error=AttackError)
    10
    >>> check_bounds((0, 1), error=AttackError)
    (0.0, 1.0)
    >>> check_positive("step size", float("nan"), error=AttackError)
    Traceback (most recent call last):
    ...
    securetrain.errors.AttackError: step size must be a finite number > 0, got nan
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from securetrain.errors import ConfigurationError, PrivacyError, SecureTrainError

Bounds = tuple[float, float]
"""``(lower, upper)`` input range."""

ErrorType = type[SecureTrainError]


def _prefix(what: str, where: str | None) -> str:
    return f"{where}: {what}" if where else what


def check_number(what: str, value: object, *, error: ErrorType = ConfigurationError, where: str | None = None) -> float:
    """``value`` as a float if it is a real number (not a bool); ``error`` otherwise.

    Example:
        >>> check_number("lr", 1)
        1.0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(f"{_prefix(what, where)} must be a number, got {value!r}")
    return float(value)


def check_positive(
    what: str,
    value: object,
    *,
    error: ErrorType = ConfigurationError,
    allow_zero: bool = False,
    allow_inf: bool = False,
    hint: str = "",
    where: str | None = None,
) -> float:
    """``value`` as a float if it is ``> 0`` (``>= 0`` with ``allow_zero``) and finite.

    ``allow_inf`` accepts ``+inf`` (e.g. "no clipping"). ``hint`` is appended to the message.

    Example:
        >>> check_positive("max_grad_norm", 1)
        1.0
        >>> check_positive("clean_share", 0, allow_zero=True)
        0.0
    """
    f = check_number(what, value, error=error, where=where)
    low_ok = f >= 0 if allow_zero else f > 0
    finite_ok = math.isfinite(f) or (allow_inf and f == math.inf)
    if math.isnan(f) or not low_ok or not finite_ok:
        bound = ">= 0" if allow_zero else "> 0"
        kind = "a number" if allow_inf else "a finite number"
        message = f"{_prefix(what, where)} must be {kind} {bound}, got {value!r}"
        raise error(f"{message}; {hint}" if hint else message)
    return f


def check_count(
    what: str, value: object, *, error: ErrorType = ConfigurationError, minimum: int = 1, where: str | None = None
) -> int:
    """``value`` as an int if it is an integer ``>= minimum`` (bools are refused).

    Example:
        >>> check_count("restarts", 0, minimum=0)
        0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise error(f"{_prefix(what, where)} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_fraction(
    what: str,
    value: object,
    *,
    error: ErrorType = ConfigurationError,
    closed_high: bool = False,
    closed_low: bool = True,
    where: str | None = None,
) -> float:
    """``value`` as a float in ``[0, 1)`` (``[0, 1]`` with ``closed_high``, ``(0, ...`` without ``closed_low``).

    Example:
        >>> check_fraction("clean_share", 0.25)
        0.25
        >>> check_fraction("alpha", 0.0, closed_low=False)
        Traceback (most recent call last):
        ...
        securetrain.errors.ConfigurationError: alpha must be in (0, 1), got 0.0
    """
    f = check_number(what, value, error=error, where=where)
    high_ok = f <= 1.0 if closed_high else f < 1.0
    low_ok = f >= 0.0 if closed_low else f > 0.0
    if math.isnan(f) or not low_ok or not high_ok:
        interval = ("[0" if closed_low else "(0") + (", 1]" if closed_high else ", 1)")
        raise error(f"{_prefix(what, where)} must be in {interval}, got {value!r}")
    return f


def _given(original: object, value: float) -> str:
    """A bound as the caller wrote it: ``1`` for an int, ``1.0`` for a float."""
    if isinstance(original, numbers.Integral) and not isinstance(original, bool):
        return str(int(original))
    return repr(value)


def check_bounds(bounds: object, *, error: ErrorType = ConfigurationError) -> Bounds:
    """``(lower, upper)`` as finite floats with ``lower < upper``.

    The message shows the bounds as given (``(1, 0)`` for ints, ``(1.0, 0.0)`` for floats).

    Example:
        >>> check_bounds([-1, 1])
        (-1.0, 1.0)
        >>> check_bounds((1.0, 0.0))
        Traceback (most recent call last):
        ...
        securetrain.errors.ConfigurationError: bounds must be finite with lower < upper, got (1.0, 0.0)
    """
    try:
        if not isinstance(bounds, Iterable):
            raise TypeError
        pair = tuple(bounds)
        lo, hi = (float(b) for b in pair)
    except (TypeError, ValueError):
        raise error(f"bounds must be a pair (lower, upper) of numbers, got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise error(f"bounds must be finite with lower < upper, got ({_given(pair[0], lo)}, {_given(pair[1], hi)})")
    return lo, hi


def check_delta(
    delta: object, *, error: ErrorType = PrivacyError, allow_zero: bool = False, hint: str | None = None
) -> float:
    """A differential-privacy delta: a number strictly between 0 and 1 (``[0, 1)`` with ``allow_zero``).

    ``hint`` replaces the advice appended to an out-of-range message.

    Example:
        >>> check_delta(1e-5)
        1e-05
        >>> check_delta(0, allow_zero=True)
        0.0
    """
    interval = "[0, 1)" if allow_zero else "(0, 1)"
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real):
        raise error(f"delta must be a number in {interval}, got {delta!r}")
    d = float(delta)
    low_ok = d >= 0.0 if allow_zero else d > 0.0
    if math.isnan(d) or not low_ok or not d < 1.0:
        advice = "choose one well below 1/n, e.g. 1e-5" if hint is None else hint
        message = f"delta must be in {interval}, got {delta}"
        raise error(f"{message}; {advice}" if advice else message)
    return d


__all__ = [
    "Bounds",
    "check_bounds",
    "check_count",
    "check_delta",
    "check_fraction",
    "check_number",
    "check_positive",
]
