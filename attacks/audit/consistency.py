"""The consistency check: does a measured lower bound on epsilon refute the reported epsilon?

A lower bound computed at confidence ``1 - alpha`` that exceeds the epsilon a run reports means
the run cannot be (epsilon, delta)-DP as reported, except with probability ``alpha``: the
privacy accounting (noise multiplier, sample rate, number of steps) is wrong, or the training
did not do what the accountant assumed. Such a run is flagged as violated. The converse does
not hold: a bound below the claim never proves the claim.

Example (a planted accounting bug: a run claims epsilon 0.1, yet an attack catches 60 of 100 members
while flagging 5 of 100; Clopper-Pearson gives TPR >= 0.4972, FPR <= 0.1128, log(0.4972/0.1128) = 1.483):
    >>> c = check_counts(0.1, 1e-5, tp=60, n_pos=100, fp=5, n_neg=100, alpha=0.05)
    >>> c.violated, round(c.lower_bound, 3)
    (True, 1.483)
    >>> check_counts(3.0, 1e-5, tp=60, n_pos=100, fp=5, n_neg=100).violated
    False
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from attacks.audit.bounds import epsilon_lower_bound
from attacks.checks import check_alpha, check_audit_delta
from securetrain.errors import AttackError


@dataclass(frozen=True)
class ConsistencyCheck:
    """Whether the empirical lower bound refutes the reported epsilon, and why."""

    violated: bool
    claimed_epsilon: float
    delta: float
    lower_bound: float
    source: str | None
    confidence: float
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        d = asdict(self)
        for k in ("lower_bound", "claimed_epsilon"):
            if isinstance(d[k], float) and math.isfinite(d[k]):
                d[k] = round(d[k], 6)
        return d


def check_consistency(
    claimed_epsilon: float, delta: float, lower_bounds: Mapping[str, float], *, confidence: float
) -> ConsistencyCheck:
    """Flag a violation if any of ``lower_bounds`` (name -> epsilon bound) exceeds ``claimed_epsilon``.

    Each bound must already hold at ``confidence`` jointly with the others (split the error
    level between them, as :func:`attacks.membership.audit_membership_run` does).
    """
    eps = float(claimed_epsilon)
    if math.isnan(eps) or eps < 0:
        raise AttackError(f"the reported epsilon must be a non-negative number, got {claimed_epsilon}")
    check_audit_delta(delta)
    check_alpha(confidence, "confidence")
    if not lower_bounds:
        raise AttackError("no lower bound to compare with; run at least one attack or audit")
    for name, b in lower_bounds.items():
        if math.isnan(float(b)) or float(b) < 0:
            raise AttackError(f"lower bound {name!r} must be a non-negative number, got {b}")
    best = max(lower_bounds, key=lambda n: float(lower_bounds[n]))
    lb = float(lower_bounds[best])
    source = best if lb > 0 else None
    pct = f"{100 * confidence:g}%"
    if lb > eps:
        text = (
            f"empirical lower bound {lb:.3f} ({source}, {pct} confidence) exceeds the reported epsilon "
            f"{eps:g} at delta {delta:g}: the reported guarantee cannot hold; check the privacy accounting "
            "(noise multiplier, sample rate, steps) and that training used the noise the accountant assumed"
        )
    elif lb > 0:
        text = (
            f"empirical lower bound {lb:.3f} ({source}, {pct} confidence) does not exceed the reported epsilon "
            f"{eps:g} at delta {delta:g}: consistent (an audit can refute a guarantee, never prove it)"
        )
    else:
        text = (
            f"no measurement ({', '.join(lower_bounds)}) gives a positive lower bound at {pct} confidence: "
            f"consistent with the reported epsilon {eps:g} at delta {delta:g} (an audit can refute a guarantee, "
            "never prove it)"
        )
    return ConsistencyCheck(
        violated=lb > eps,
        claimed_epsilon=eps,
        delta=float(delta),
        lower_bound=lb,
        source=source,
        confidence=float(confidence),
        explanation=text,
    )


def check_counts(
    claimed_epsilon: float, delta: float, *, tp: int, n_pos: int, fp: int, n_neg: int, alpha: float = 0.05
) -> ConsistencyCheck:
    """:func:`check_consistency` from raw counts: ``tp`` of ``n_pos`` members, ``fp`` of ``n_neg`` non-members flagged."""
    bound = epsilon_lower_bound(tp=tp, n_pos=n_pos, fp=fp, n_neg=n_neg, delta=delta, alpha=alpha)
    return check_consistency(claimed_epsilon, delta, {"counts": bound.epsilon}, confidence=1.0 - alpha)


__all__ = ["ConsistencyCheck", "check_consistency", "check_counts"]
