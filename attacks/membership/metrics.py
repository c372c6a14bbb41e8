"""Membership-inference metrics: ROC curve, AUC, TPR at low FPR, membership advantage.

The ROC curve and the AUC come from scikit-learn (``roc_curve``, ``roc_auc_score``). Scores
follow one convention throughout: a higher score means "more likely a member".

``tpr_at_fpr[f]`` is the largest true-positive rate among thresholds whose false-positive
rate is at most ``f`` (Carlini et al. 2022). With ``n`` non-members the smallest non-zero FPR
is ``1/n``: below it the figure is the TPR at zero false positives (``min_resolvable_fpr``
records ``1/n`` so that a reader knows).

Example:
    >>> import numpy as np
    >>> m = membership_metrics(np.array([3.0, 2.0, 1.5]), np.array([1.0, 0.0, 2.5]))
    >>> round(m.auc, 4), round(m.tpr_at_fpr[0.01], 4), round(m.advantage, 4)
    (0.7778, 0.3333, 0.6667)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from attacks.checks import as_scores, check_fprs

DEFAULT_FPRS: tuple[float, ...] = (0.001, 0.01)
DEFAULT_ROC_POINTS = 300


@dataclass(frozen=True)
class RocCurve:
    """A ROC curve: false- and true-positive rates, both non-decreasing, from (0, 0) to (1, 1)."""

    fpr: np.ndarray
    tpr: np.ndarray

    def downsample(self, max_points: int = DEFAULT_ROC_POINTS, keep_fprs: Iterable[float] = DEFAULT_FPRS) -> RocCurve:
        """At most ``max_points`` points that keep the curve's shape on log and linear axes.

        The point with the highest TPR below each FPR of a log-spaced and a linear grid, and of
        ``keep_fprs`` (the reported FPRs), is kept, so TPR at low FPR (what a log-scale plot shows)
        is preserved exactly at those FPRs.

        Example:
            >>> import numpy as np
            >>> c = RocCurve(np.linspace(0, 1, 5000), np.linspace(0, 1, 5000) ** 0.5)
            >>> len(c.downsample(100).fpr) <= 100
            True
        """
        n = len(self.fpr)
        if n <= max_points:
            return self
        if max_points < 4:
            raise ValueError("max_points must be at least 4")
        positive = self.fpr[self.fpr > 0]
        lo = float(positive.min()) if positive.size else 1e-6
        must = np.searchsorted(self.fpr, np.array([float(f) for f in keep_fprs]) + 1e-12, side="right") - 1
        must = np.unique(np.concatenate([[0, n - 1], np.clip(must, 0, n - 1)]))
        half = max(2, (max_points - len(must)) // 2)
        grid = np.unique(np.concatenate([np.geomspace(lo, 1.0, half), np.linspace(0.0, 1.0, half)]))
        last_le = np.clip(np.searchsorted(self.fpr, grid, side="right") - 1, 0, n - 1)
        rest = np.setdiff1d(np.unique(last_le), must)
        budget = max_points - len(must)
        if len(rest) > budget:
            rest = rest[np.unique(np.round(np.linspace(0, len(rest) - 1, budget)).astype(int))]
        idx = np.union1d(must, rest)
        return RocCurve(self.fpr[idx], self.tpr[idx])

    def to_dict(self, digits: int = 6) -> dict[str, list[float]]:
        """``{"fpr": [...], "tpr": [...]}`` rounded to ``digits`` (the report's ROC format)."""
        return {"fpr": [round(float(v), digits) for v in self.fpr], "tpr": [round(float(v), digits) for v in self.tpr]}


@dataclass(frozen=True)
class MembershipMetrics:
    """How well member scores separate from non-member scores."""

    auc: float
    tpr_at_fpr: dict[float, float]
    advantage: float
    roc: RocCurve = field(repr=False)
    n_members: int
    n_nonmembers: int

    @property
    def min_resolvable_fpr(self) -> float:
        """The smallest non-zero FPR the non-member count can measure (``1 / n_nonmembers``)."""
        return 1.0 / self.n_nonmembers

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (TPR keys as strings, e.g. ``"0.001"``); no curve."""
        return {
            "auc": float(self.auc),
            "tpr_at_fpr": {fpr_key(f): float(t) for f, t in self.tpr_at_fpr.items()},
            "advantage": float(self.advantage),
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
            "min_resolvable_fpr": self.min_resolvable_fpr,
        }


def fpr_key(fpr: float) -> str:
    """The report's key for an FPR (``0.001 -> "0.001"``)."""
    return repr(float(fpr))


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """Largest TPR among ROC points with FPR at most ``target``.

    Example:
        >>> import numpy as np
        >>> tpr_at_fpr(np.array([0.0, 0.1, 0.5, 1.0]), np.array([0.2, 0.6, 0.9, 1.0]), 0.2)
        0.6
    """
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def membership_metrics(
    member_scores: Any, nonmember_scores: Any, fprs: Iterable[float] = DEFAULT_FPRS
) -> MembershipMetrics:
    """AUC, TPR at each FPR in ``fprs``, advantage (max TPR - FPR) and the full ROC curve.

    Raises :class:`securetrain.errors.AttackError` for empty or non-finite scores or an FPR
    outside (0, 1).
    """
    targets = check_fprs(fprs)
    pos = as_scores(member_scores, "member scores")
    neg = as_scores(nonmember_scores, "non-member scores")
    labels = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    scores = np.concatenate([pos, neg])
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    auc = float(roc_auc_score(labels, scores))
    return MembershipMetrics(
        auc=auc,
        tpr_at_fpr={f: tpr_at_fpr(fpr, tpr, f) for f in targets},
        advantage=float(np.max(tpr - fpr)),
        roc=RocCurve(fpr.astype(np.float64), tpr.astype(np.float64)),
        n_members=int(pos.size),
        n_nonmembers=int(neg.size),
    )


__all__ = ["DEFAULT_FPRS", "MembershipMetrics", "RocCurve", "fpr_key", "membership_metrics", "tpr_at_fpr"]
