"""A Gaussian-statistic lower bound on epsilon (Gaussian differential privacy fitted to canary scores).

For DP-SGD with a linear canary statistic (the sum of the model updates' projections on a
canary's direction), the statistic of an excluded canary is the sum of Gaussian noise (plus the
data's drift) and that of an included canary is the same shifted by the canary's contributions:
two near-Gaussian distributions, whose separation ``mu = (mean_in - mean_out) / sd_out`` is the
parameter of the Gaussian-DP (mu-GDP) trade-off curve they trace (Nasr et al. 2023, Dong, Roth
and Su 2022). A mu-GDP mechanism is (epsilon, delta)-DP exactly for

    delta(epsilon) = Phi(-epsilon / mu + mu / 2) - e^epsilon * Phi(-epsilon / mu - mu / 2),

so a lower confidence limit on ``mu`` gives a lower bound on epsilon at the run's delta. The
limit combines a Welch lower limit of the mean difference and a chi-square upper limit of the
standard deviation, each at level ``alpha / 2``.

For DP-SGD with noise multiplier ``sigma``, sample rate ``q`` and ``T`` steps this statistic's
``mu`` is about ``q * sqrt(T) / sigma``, below the ``q * sqrt(T * (e^(1 / sigma^2) - 1))`` of
the central-limit approximation of DP-SGD itself, whose epsilon in turn sits below the exact
accountants' (Gopi et al. 2021): a correct implementation is not flagged, while one that adds
half the noise doubles ``mu``.

Example (mu = 1; then 400 + 400 scores two standard deviations apart):
    >>> round(gdp_epsilon(1.0, 1e-5), 4)
    4.3772
    >>> round(gdp_delta(gdp_epsilon(1.0, 1e-5), 1.0), 7)
    1e-05
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> b = gaussian_epsilon_lower_bound(rng.normal(2, 1, 400), rng.normal(0, 1, 400), delta=1e-5)
    >>> 1.6 < b.mu_low < b.mu_hat < 2.2, round(b.epsilon, 2) == round(gdp_epsilon(b.mu_low, 1e-5), 2)
    (True, True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.stats import chi2, norm, t

from attacks.checks import as_scores, check_alpha, check_audit_delta
from securetrain.errors import AttackError


def gdp_delta(epsilon: float, mu: float) -> float:
    """The delta at which a mu-GDP mechanism is (epsilon, delta)-DP."""
    if mu <= 0:
        return 0.0
    return float(norm.cdf(-epsilon / mu + mu / 2) - math.exp(epsilon) * norm.cdf(-epsilon / mu - mu / 2))


def gdp_epsilon(mu: float, delta: float) -> float:
    """The smallest epsilon at which a mu-GDP mechanism is (epsilon, delta)-DP (0 if delta covers it all)."""
    if not math.isfinite(mu):
        return math.inf
    if mu <= 0 or gdp_delta(0.0, mu) <= delta:
        return 0.0
    hi = 1.0
    while gdp_delta(hi, mu) > delta:
        hi *= 2
        if hi > 1e4:
            return math.inf
    return float(brentq(lambda e: gdp_delta(e, mu) - delta, 0.0, hi, xtol=1e-9))


@dataclass(frozen=True)
class GaussianBound:
    """The fitted separation ``mu``, its lower confidence limit, and the epsilon bound it gives."""

    epsilon: float
    mu_hat: float
    mu_low: float
    mean_in: float
    mean_out: float
    sd_in: float
    sd_out: float
    n_in: int
    n_out: int
    delta: float
    confidence: float
    method: str = "gaussian (mu-GDP fitted to the canary statistic)"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (floats rounded to 6 digits)."""
        d = asdict(self)
        return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in d.items()}


def gaussian_epsilon_lower_bound(
    included_scores: Any, excluded_scores: Any, *, delta: float, alpha: float = 0.05
) -> GaussianBound:
    """Lower bound on epsilon, with confidence ``1 - alpha``, from the statistics of included and excluded canaries."""
    s_in = as_scores(included_scores, "included canary scores")
    s_out = as_scores(excluded_scores, "excluded canary scores")
    d, a = check_audit_delta(delta), check_alpha(alpha)
    if s_in.size < 2 or s_out.size < 2:
        raise AttackError(
            f"the Gaussian bound needs at least 2 included and 2 excluded canaries, got {s_in.size} and {s_out.size}"
        )
    m_in, m_out = float(np.mean(s_in)), float(np.mean(s_out))
    sd_in, sd_out = float(np.std(s_in, ddof=1)), float(np.std(s_out, ddof=1))
    n_in, n_out = int(s_in.size), int(s_out.size)
    if sd_out <= 0:
        raise AttackError("the excluded canaries' statistic has no spread; the Gaussian fit needs a noisy statistic")
    v_in, v_out = sd_in**2 / n_in, sd_out**2 / n_out
    se = math.sqrt(v_in + v_out)
    df = (v_in + v_out) ** 2 / (v_in**2 / (n_in - 1) + v_out**2 / (n_out - 1)) if se > 0 else float(n_in + n_out - 2)
    diff_low = (m_in - m_out) - float(t.ppf(1 - a / 2, df)) * se
    sd_high = sd_out * math.sqrt((n_out - 1) / float(chi2.ppf(a / 2, n_out - 1)))
    mu_hat = (m_in - m_out) / sd_out
    mu_low = max(diff_low, 0.0) / sd_high
    return GaussianBound(
        epsilon=gdp_epsilon(mu_low, d),
        mu_hat=mu_hat,
        mu_low=mu_low,
        mean_in=m_in,
        mean_out=m_out,
        sd_in=sd_in,
        sd_out=sd_out,
        n_in=n_in,
        n_out=n_out,
        delta=d,
        confidence=1.0 - a,
    )


__all__ = ["GaussianBound", "gaussian_epsilon_lower_bound", "gdp_delta", "gdp_epsilon"]
