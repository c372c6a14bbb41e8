"""The per-step likelihood-ratio score of a Dirac gradient canary under DP-SGD.

DP-SGD with Poisson sampling (rate ``q``), clipping norm ``C`` and noise multiplier ``sigma``
releases, in every step ``t``, a noisy clipped gradient sum. At the coordinate of a Dirac canary
(clipped to norm ``C``), in units of ``C``, the release is

    x_t = b_t + sigma * xi_t,     xi_t ~ N(0, 1),

with ``b_t = 1`` when the canary was sampled in step ``t`` (probability ``q`` if it is in the
training set, never if it is not). Per step, the likelihood ratio of "included" against
"excluded" is ``1 - q + q * exp((x_t - 1/2) / sigma^2)``; the Neyman-Pearson optimal score of
the whole run is the sum of their logarithms,

    score = sum_t log(1 - q + q * exp((x_t - 1/2) / sigma^2)).

Its distributions for included and excluded canaries are the two sides of DP-SGD's privacy loss,
the quantity the accountants bound, so it separates as much as the claimed epsilon allows; the
linear sum ``sum_t x_t`` (the sum of the updates' projections) wastes most of that at small ``q``.
The score uses only the *claimed* ``q`` and ``sigma`` (not which canaries were included), so any
bound computed from it (the counting bound of :mod:`attacks.audit.one_run`) stays valid whatever
the implementation really does.

Example (``q = 1``: the score is ``sum_t (x_t - 1/2) / sigma^2``, a shifted linear statistic):
    >>> import numpy as np
    >>> x = np.array([[1.0, 0.0], [0.5, 0.5]])
    >>> likelihood_ratio_scores(x, sample_rate=1.0, noise_multiplier=1.0).tolist()
    [0.0, 0.0]
    >>> s = likelihood_ratio_scores(np.array([[3.0], [0.0]]), sample_rate=0.1, noise_multiplier=1.0)
    >>> bool(s[0] > 0 > s[1])
    True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from securetrain.errors import AttackError
from securetrain.validation import check_fraction, check_positive


def likelihood_ratio_scores(observations: Any, *, sample_rate: float, noise_multiplier: float) -> np.ndarray:
    """One score per row of ``observations`` (``(canaries, steps)``, in units of the clipping norm).

    Higher means more evidence that the canary was in the training set.
    """
    x = np.asarray(observations, dtype=np.float64)
    if x.ndim != 2:
        raise AttackError(f"observations must be a (canaries, steps) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise AttackError("the canary observations contain NaN or infinite values")
    q = check_fraction("the sample rate", sample_rate, error=AttackError, closed_low=False, closed_high=True)
    sigma = check_positive("the noise multiplier", noise_multiplier, error=AttackError)
    a = (x - 0.5) / sigma**2
    if q == 1.0:
        return np.asarray(a.sum(axis=1))
    per_step = np.logaddexp(math.log1p(-q), math.log(q) + a)
    return np.asarray(per_step.sum(axis=1))


__all__ = ["likelihood_ratio_scores"]
