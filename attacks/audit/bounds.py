"""Lower bounds on epsilon from an attack's true- and false-positive rates.

If a mechanism is (epsilon, delta)-DP, every membership test satisfies (Kairouz et al. 2015)

    TPR <= e^eps * FPR + delta      and      1 - FPR <= e^eps * (1 - TPR) + delta,

so a measured pair gives ``eps >= max(log((TPR - delta) / FPR), log((1 - FPR - delta) / (1 - TPR)))``.
Measured rates are estimates: the bound uses a Clopper-Pearson lower confidence limit of TPR and
an upper limit of FPR, each at level ``alpha / 2``, so the bound holds with confidence
``1 - alpha`` (union bound) under the assumption that the trials are independent.

Example (hand-computable: 100/100 members caught, 0/100 non-members flagged, delta 0):
    >>> b = epsilon_lower_bound(tp=100, n_pos=100, fp=0, n_neg=100, delta=0.0, alpha=0.05)
    >>> round(b.tpr_low, 6), round(0.025 ** (1 / 100), 6)         # all caught: lower limit is (alpha/2)^(1/n)
    (0.963783, 0.963783)
    >>> round(b.fpr_high, 6), round(1 - 0.025 ** (1 / 100), 6)    # none flagged: upper limit is 1 - (alpha/2)^(1/n)
    (0.036217, 0.036217)
    >>> round(b.epsilon, 4)                                        # log(0.963783 / 0.036217)
    3.2813
    >>> round(epsilon_from_rates(tpr=0.5, fpr=0.05, delta=0.0), 6)   # log(10), no confidence interval
    2.302585
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import beta as beta_dist

from attacks.checks import as_scores, check_alpha, check_audit_delta
from securetrain.errors import AttackError
from securetrain.validation import check_fraction


def _check_count(k: int, n: int, what: str) -> None:
    if n <= 0:
        raise AttackError(f"{what}: the number of trials must be positive, got {n}; an empty set gives no bound")
    if not (0 <= k <= n):
        raise AttackError(f"{what}: count {k} is outside [0, {n}]")


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval for a binomial proportion ``k / n`` at confidence ``1 - alpha``.

    Each side has level ``alpha / 2`` (so the lower limit alone is a one-sided ``1 - alpha/2`` bound).

    Example:
        >>> lo, hi = clopper_pearson(0, 10, alpha=0.1)
        >>> lo, round(hi, 6), round(1 - 0.05 ** (1 / 10), 6)
        (0.0, 0.258866, 0.258866)
    """
    _check_count(k, n, "clopper_pearson")
    a = check_alpha(alpha) / 2
    lo = 0.0 if k == 0 else float(beta_dist.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta_dist.ppf(1 - a, k + 1, n - k))
    return lo, hi


def epsilon_from_rates(tpr: float, fpr: float, delta: float = 0.0) -> float:
    """The epsilon implied by a (TPR, FPR) pair, with no confidence interval (a point estimate).

    ``max(log((TPR - delta) / FPR), log((1 - FPR - delta) / (1 - TPR)), 0)``; ``inf`` when a rate
    makes a side unbounded (e.g. FPR = 0 with TPR > delta).
    """
    d = check_audit_delta(delta)
    for v, what in ((tpr, "TPR"), (fpr, "FPR")):
        if not (0.0 <= float(v) <= 1.0):
            raise AttackError(f"{what} must be in [0, 1], got {v}")
    return max(_side(float(tpr) - d, float(fpr)), _side(1.0 - float(fpr) - d, 1.0 - float(tpr)), 0.0)


def _side(num: float, den: float) -> float:
    if num <= 0:
        return 0.0
    if den <= 0:
        return math.inf
    return math.log(num / den)


@dataclass(frozen=True)
class EpsilonBound:
    """A lower bound on epsilon with the counts and confidence limits it came from."""

    epsilon: float
    tp: int
    n_pos: int
    fp: int
    n_neg: int
    tpr_low: float
    fpr_high: float
    delta: float
    confidence: float
    threshold: float | None = None
    method: str = "clopper-pearson"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (floats rounded to 6 digits)."""
        d = asdict(self)
        return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in d.items()}


def epsilon_lower_bound(
    *, tp: int, n_pos: int, fp: int, n_neg: int, delta: float, alpha: float = 0.05, threshold: float | None = None
) -> EpsilonBound:
    """Lower bound on epsilon, with confidence ``1 - alpha``, from measured counts.

    ``tp`` of ``n_pos`` members were flagged, ``fp`` of ``n_neg`` non-members were flagged.
    The Clopper-Pearson limits are one-sided at ``alpha / 2`` each.
    """
    _check_count(tp, n_pos, "members (tp of n_pos)")
    _check_count(fp, n_neg, "non-members (fp of n_neg)")
    d = check_audit_delta(delta)
    a = check_alpha(alpha)
    tpr_low = clopper_pearson(tp, n_pos, a)[0]
    fpr_high = clopper_pearson(fp, n_neg, a)[1]
    eps = max(_side(tpr_low - d, fpr_high), _side(1.0 - fpr_high - d, 1.0 - tpr_low), 0.0)
    return EpsilonBound(
        epsilon=float(eps),
        tp=int(tp),
        n_pos=int(n_pos),
        fp=int(fp),
        n_neg=int(n_neg),
        tpr_low=tpr_low,
        fpr_high=fpr_high,
        delta=d,
        confidence=1.0 - a,
        threshold=threshold,
    )


def _counts_at(pos: np.ndarray, neg: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Members and non-members with a score >= each threshold."""
    ps, ns = np.sort(pos), np.sort(neg)
    tp = pos.size - np.searchsorted(ps, thresholds, side="left")
    fp = neg.size - np.searchsorted(ns, thresholds, side="left")
    return tp, fp


def _bound_vec(tp: np.ndarray, n_pos: int, fp: np.ndarray, n_neg: int, delta: float, alpha: float) -> np.ndarray:
    """Vectorised :func:`epsilon_lower_bound` over arrays of counts (the same formulas)."""
    a = alpha / 2
    tp = tp.astype(np.float64)
    fp = fp.astype(np.float64)
    tpr_low = np.where(tp > 0, beta_dist.ppf(a, np.maximum(tp, 1), n_pos - tp + 1), 0.0)
    fpr_high = np.where(fp < n_neg, beta_dist.ppf(1 - a, fp + 1, np.maximum(n_neg - fp, 1)), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s1 = np.where(tpr_low - delta > 0, np.log(np.maximum(tpr_low - delta, 1e-300) / fpr_high), 0.0)
        s2 = np.where(1 - fpr_high - delta > 0, np.log(np.maximum(1 - fpr_high - delta, 1e-300) / (1 - tpr_low)), 0.0)
    return np.maximum(np.maximum(s1, s2), 0.0)


def epsilon_lower_bound_from_scores(
    member_scores: Any,
    nonmember_scores: Any,
    *,
    delta: float,
    alpha: float = 0.05,
    seed: int = 0,
    selection_fraction: float = 0.5,
) -> EpsilonBound:
    """Lower bound on epsilon from attack scores (higher = member), with an honest threshold.

    Choosing the threshold on the same scores that are counted would overstate the bound; so the
    members and non-members are split at random (``selection_fraction`` of each, seeded): the
    threshold that maximises the bound on the first part is then evaluated on the second part only.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> b = epsilon_lower_bound_from_scores(rng.normal(3, 1, 400), rng.normal(0, 1, 400), delta=1e-5)
        >>> 1.0 < b.epsilon < 6.0, b.n_pos, b.n_neg
        (True, 200, 200)
    """
    pos = as_scores(member_scores, "member scores")
    neg = as_scores(nonmember_scores, "non-member scores")
    d, a = check_audit_delta(delta), check_alpha(alpha)
    check_fraction("selection_fraction", selection_fraction, error=AttackError, closed_low=False)
    if pos.size < 2 or neg.size < 2:
        raise AttackError(
            f"a threshold-selected bound needs at least 2 members and 2 non-members, got {pos.size} and {neg.size}"
        )
    rng = np.random.default_rng(seed)
    pp, nn_ = rng.permutation(pos.size), rng.permutation(neg.size)
    kp = min(max(1, round(pos.size * selection_fraction)), pos.size - 1)
    kn = min(max(1, round(neg.size * selection_fraction)), neg.size - 1)
    sel_pos, ev_pos = pos[pp[:kp]], pos[pp[kp:]]
    sel_neg, ev_neg = neg[nn_[:kn]], neg[nn_[kn:]]

    candidates = np.unique(np.concatenate([sel_pos, sel_neg, [np.inf]]))
    tp, fp = _counts_at(sel_pos, sel_neg, candidates)
    eps = _bound_vec(tp, sel_pos.size, fp, sel_neg.size, d, a)
    best_t = float(candidates[int(np.argmax(eps))])  # first maximum: the lowest threshold reaching it
    tp_ev, fp_ev = _counts_at(ev_pos, ev_neg, np.array([best_t]))
    return epsilon_lower_bound(
        tp=int(tp_ev[0]), n_pos=ev_pos.size, fp=int(fp_ev[0]), n_neg=ev_neg.size, delta=d, alpha=a, threshold=best_t
    )


__all__ = [
    "EpsilonBound",
    "clopper_pearson",
    "epsilon_from_rates",
    "epsilon_lower_bound",
    "epsilon_lower_bound_from_scores",
]
