"""Polynomial activations for CKKS and the least-squares fit that makes them.

CKKS evaluates additions and multiplications only, so a network must use polynomial
activations. :class:`PolyActivation` is ``c0 + c1 x + c2 x^2`` (degree at most 2, one
ciphertext multiplication); :func:`fit_polynomial` fits it to any activation on an interval.

Example:
    >>> import torch
    >>> coeffs = fit_polynomial(torch.relu, interval=(-4.0, 4.0))
    >>> act = PolyActivation(coeffs)
    >>> round(float(act(torch.tensor([3.0]))), 1)  # relu(3) = 3, fitted value nearby
    2.9
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from securetrain.errors import ModelError

MAX_DEGREE = 2


class PolyActivation(nn.Module):
    """``x -> c0 + c1 x + c2 x^2`` with fixed coefficients (lowest degree first).

    Example:
        >>> import torch
        >>> PolyActivation([1.0, 0.0, 2.0])(torch.tensor([3.0]))
        tensor([19.])
    """

    coefficients: torch.Tensor

    def __init__(self, coefficients: Sequence[float]) -> None:
        super().__init__()
        coeffs = [float(c) for c in coefficients]
        if not 1 <= len(coeffs) <= MAX_DEGREE + 1:
            raise ModelError(
                f"PolyActivation takes 1 to {MAX_DEGREE + 1} coefficients (degree <= {MAX_DEGREE}), got {len(coeffs)}; "
                "a higher degree would cost more multiplicative depth than it is worth on these models"
            )
        if not all(np.isfinite(coeffs)):
            raise ModelError(f"PolyActivation coefficients must be finite, got {coeffs}")
        coeffs += [0.0] * (MAX_DEGREE + 1 - len(coeffs))
        self.register_buffer("coefficients", torch.tensor(coeffs, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.coefficients.to(x.dtype)
        return c[0] + c[1] * x + c[2] * x * x

    def coeffs(self) -> tuple[float, float, float]:
        """``(c0, c1, c2)`` as Python floats."""
        c = self.coefficients.double().tolist()
        return (c[0], c[1], c[2])

    def extra_repr(self) -> str:
        c0, c1, c2 = self.coeffs()
        return f"{c0:.4g} + {c1:.4g} x + {c2:.4g} x^2"


def fit_polynomial(
    fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    interval: tuple[float, float] = (-4.0, 4.0),
    degree: int = MAX_DEGREE,
    points: int = 2001,
) -> tuple[float, ...]:
    """Least-squares polynomial (lowest degree first) approximating ``fn`` on ``interval``.

    Example:
        >>> import torch
        >>> [round(c, 3) + 0.0 for c in fit_polynomial(lambda t: t * t, interval=(-1.0, 1.0))]
        [0.0, 0.0, 1.0]
    """
    lo, hi = float(interval[0]), float(interval[1])
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ModelError(f"interval must be finite with upper > lower, got {interval}")
    if not 1 <= degree <= MAX_DEGREE:
        raise ModelError(f"degree must be between 1 and {MAX_DEGREE}, got {degree}")
    xs = torch.linspace(lo, hi, points, dtype=torch.float64)
    with torch.no_grad():
        ys = fn(xs.float()).double()
    highest_first = np.polyfit(xs.numpy(), ys.numpy(), degree)
    return tuple(float(c) + 0.0 for c in highest_first[::-1])
