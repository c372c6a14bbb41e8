"""The statistics of the one-training-run audit (Steinke, Nasr and Jagielski 2023).

``m`` canaries are each included in the training set independently with probability 1/2; after
one training run an auditor guesses, for ``r`` of them, whether they were included, and ``v``
guesses are right. Under (epsilon, delta)-DP the number of correct guesses is dominated by
``Binomial(r, e^eps / (1 + e^eps))`` up to a delta term (their Theorem 5.2 / Algorithm 3):

    p(eps) = P[Binomial(r, q) >= v] + 2 * m * delta * max_{1<=i<=v} P[v - i <= Binomial(r, q) < v] / i,

with ``q = e^eps / (1 + e^eps)``. The lower bound is the largest epsilon whose p-value is below
``alpha``: any smaller epsilon is rejected with confidence ``1 - alpha``.

Example (hand-computable: 50 guesses all right, delta 0, so 0.05 = q^50):
    >>> q = 0.05 ** (1 / 50)
    >>> round(math.log(q / (1 - q)), 4)
    2.7847
    >>> round(one_run_epsilon_lower_bound(m=100, r=50, v=50, delta=0.0, alpha=0.05), 4)
    2.7847
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit
from scipy.stats import binom

from attacks.checks import check_alpha, check_audit_delta
from securetrain.errors import AttackError


def _check(m: int, r: int, v: int, delta: float) -> None:
    if m < 1:
        raise AttackError(f"the one-run audit needs at least one canary, got m={m}")
    if not (0 <= v <= r <= m):
        raise AttackError(f"need 0 <= correct guesses <= guesses <= canaries, got v={v}, r={r}, m={m}")
    check_audit_delta(delta)


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Probability of ``v`` or more correct guesses out of ``r`` if the training were (epsilon, delta)-DP.

    Example:
        >>> round(one_run_p_value(m=10, r=10, v=5, epsilon=0.0, delta=0.0), 4)   # P[Bin(10, 1/2) >= 5]
        0.623
    """
    _check(m, r, v, delta)
    if epsilon < 0:
        raise AttackError(f"epsilon must be non-negative, got {epsilon}")
    if v == 0:
        return 1.0
    q = float(expit(epsilon))
    tail = float(binom.sf(v - 1, r, q))  # P[W >= v]
    if delta == 0:
        return min(tail, 1.0)
    i = np.arange(1, v + 1)
    window = binom.sf(v - i - 1, r, q) - tail  # P[v - i <= W < v]
    a = float(np.max(window / i))
    return min(tail + a * float(delta) * 2 * m, 1.0)


def one_run_epsilon_lower_bound(m: int, r: int, v: int, *, delta: float, alpha: float = 0.05) -> float:
    """Largest epsilon rejected with confidence ``1 - alpha`` by ``v`` correct of ``r`` guesses on ``m`` canaries.

    Returns 0.0 when not even epsilon = 0 can be rejected.
    """
    _check(m, r, v, delta)
    check_alpha(alpha)

    def objective(eps: float) -> float:  # > 0 while eps is rejected
        return alpha - one_run_p_value(m, r, v, eps, delta)

    if objective(0.0) <= 0:
        return 0.0
    hi = 1.0
    while objective(hi) > 0:
        hi *= 2
        if hi > 1e3:  # all guesses right with delta = 0 still gives a finite bound; guard anyway
            return math.inf
    return float(brentq(objective, 0.0, hi, xtol=1e-7))


__all__ = ["one_run_epsilon_lower_bound", "one_run_p_value"]
