"""The one-training-run canary audit (Steinke, Nasr and Jagielski 2023), black-box variant.

1. Take ``m`` canaries (by default real held-out examples given a wrong label, which a model
   can only fit by memorising them) disjoint from the training data.
2. Include each canary in the training set independently with probability 1/2; train once with
   the recipe under audit.
3. Score each canary with the trained model (``-loss``: a memorised canary has a low loss), guess
   "included" for the ``k`` highest scores and "excluded" for the ``k`` lowest, abstain on the rest.
4. Convert ``v`` correct of ``r = 2k`` guesses into an epsilon lower bound
   (:func:`attacks.audit.one_run.one_run_epsilon_lower_bound`). Several ``k`` are tried; the
   confidence level is split between them (Bonferroni), so the best one is still a valid bound.

Example (perfect separation: 20 correct guesses of 20 on 40 canaries; 0.05 = q^20 gives log(q/(1-q)) = 1.823):
    >>> import numpy as np
    >>> included = np.array([True, False] * 20)
    >>> scores = np.where(included, 1.0, -1.0) + np.linspace(0, 0.1, 40)
    >>> r = audit_canary_scores(scores, included, delta=0.0, alpha=0.05, guess_counts=(10,))
    >>> r.guesses, r.correct, round(r.epsilon_lower_bound, 3)
    (20, 20, 1.823)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from attacks.audit.one_run import one_run_epsilon_lower_bound
from attacks.checks import as_scores, check_alpha, check_disjoint, check_xy
from attacks.membership.shadow import Recipe
from attacks.membership.signals import member_scores
from securetrain.errors import AttackError


@dataclass(frozen=True)
class CanaryAuditResult:
    """Outcome of a one-run canary audit."""

    epsilon_lower_bound: float
    m: int
    guesses: int
    correct: int
    k: int
    delta: float
    confidence: float
    guess_counts: tuple[int, ...]
    included: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-canary arrays)."""
        eps = self.epsilon_lower_bound
        return {
            "method": "one-run canaries (Steinke, Nasr and Jagielski 2023)",
            "epsilon_lower_bound": round(eps, 6) if math.isfinite(eps) else eps,
            "canaries": self.m,
            "included": int(self.included.sum()),
            "guesses": self.guesses,
            "correct": self.correct,
            "accuracy": round(self.correct / self.guesses, 6) if self.guesses else None,
            "k": self.k,
            "guess_counts": list(self.guess_counts),
            "delta": self.delta,
            "confidence": self.confidence,
        }


def default_guess_counts(m: int) -> tuple[int, ...]:
    """Guesses per side tried by default: about 5%, 10%, 20% and 50% of the canaries.

    Example:
        >>> default_guess_counts(200)
        (10, 20, 40, 100)
    """
    ks = sorted({max(1, round(m * f)) for f in (0.05, 0.1, 0.2, 0.5)})
    return tuple(k for k in ks if 2 * k <= m) or ((m // 2,) if m >= 2 else ())


def audit_canary_scores(
    scores: Any,
    included: Any,
    *,
    delta: float,
    alpha: float = 0.05,
    guess_counts: Sequence[int] | None = None,
) -> CanaryAuditResult:
    """Epsilon lower bound from canary scores (higher = included) and the true inclusion mask."""
    s = as_scores(scores, "canary scores")
    inc = np.asarray(included, dtype=bool)
    if inc.shape != s.shape:
        raise AttackError(f"included must have one entry per canary score: {inc.shape} vs {s.shape}")
    m = int(s.size)
    if m < 2:
        raise AttackError(f"the canary audit needs at least 2 canaries, got {m}")
    check_alpha(alpha)
    ks = tuple(int(k) for k in (guess_counts if guess_counts is not None else default_guess_counts(m)))
    if not ks or any(k < 1 or 2 * k > m for k in ks):
        raise AttackError(f"guess counts must be between 1 and m/2 = {m // 2} per side, got {ks}")
    order = np.argsort(-s, kind="stable")  # highest score first
    per_k_alpha = alpha / len(ks)
    best = (-1.0, 0, 0, ks[0])
    for k in ks:
        top, bottom = order[:k], order[m - k :]
        v = int(inc[top].sum() + (~inc[bottom]).sum())
        eps = one_run_epsilon_lower_bound(m, 2 * k, v, delta=delta, alpha=per_k_alpha)
        if eps > best[0]:
            best = (eps, 2 * k, v, k)
    eps, r, v, k = best
    return CanaryAuditResult(
        epsilon_lower_bound=float(eps),
        m=m,
        guesses=r,
        correct=v,
        k=k,
        delta=float(delta),
        confidence=1.0 - alpha,
        guess_counts=ks,
        included=inc,
        scores=s,
    )


def make_canaries(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, m: int, *, seed: int = 0, mislabel: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``m`` canaries drawn from ``(x, y)``; with ``mislabel`` each gets a random wrong label.

    Example:
        >>> import torch
        >>> cx, cy = make_canaries(torch.rand(10, 2), torch.zeros(10, dtype=torch.long), 3, 4)
        >>> cx.shape[0], bool((cy != 0).all())
        (4, True)
    """
    x, y = check_xy((x, y), "canary candidates")
    if m < 2 or m > x.shape[0]:
        raise AttackError(f"the number of canaries must be between 2 and {x.shape[0]} (the candidates), got {m}")
    if mislabel and num_classes < 2:
        raise AttackError("mislabelled canaries need at least 2 classes")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(x.shape[0], generator=g)[:m]
    cx, cy = x[idx].clone(), y[idx].clone()
    if mislabel:
        cy = (cy + torch.randint(1, num_classes, (m,), generator=g)) % num_classes
    return cx, cy


def canary_audit(
    recipe: Recipe,
    train_xy: tuple[torch.Tensor, torch.Tensor],
    canaries: tuple[torch.Tensor, torch.Tensor],
    *,
    delta: float,
    alpha: float = 0.05,
    seed: int = 0,
    signal: str = "loss",
    guess_counts: Sequence[int] | None = None,
) -> CanaryAuditResult:
    """Audit ``recipe`` with one training run: ``train_xy`` plus a random half of ``canaries``.

    Raises :class:`securetrain.errors.AttackError` if the canaries overlap the training data
    (an excluded canary would still be trained on) or a set is empty.

    Example:
        >>> import torch
        >>> from securetrain.training import TrainConfig, fit
        >>> def recipe(xy, seed):
        ...     torch.manual_seed(seed)
        ...     cfg = TrainConfig(epochs=1, progress=False, seed=seed)
        ...     return fit(torch.nn.Linear(4, 2), xy, None, cfg, num_classes=2).model
        >>> train = (torch.rand(64, 4), torch.randint(0, 2, (64,)))
        >>> canaries = (torch.rand(20, 4) + 2, torch.randint(0, 2, (20,)))
        >>> result = canary_audit(recipe, train, canaries, delta=1e-5)
        >>> result.m, result.epsilon_lower_bound >= 0
        (20, True)
    """
    tx, ty = check_xy(train_xy, "the training data")
    cx, cy = check_xy(canaries, "the canaries")
    check_disjoint((tx, ty), (cx, cy))
    m = int(cx.shape[0])
    rng = np.random.default_rng(seed)
    included = rng.random(m) < 0.5
    inc_idx = torch.from_numpy(np.flatnonzero(included))
    model = recipe((torch.cat([tx, cx[inc_idx]]), torch.cat([ty, cy[inc_idx]])), int(seed) * 1000 + 999)
    scores = member_scores(model, cx, cy, signal)
    return audit_canary_scores(scores, included, delta=delta, alpha=alpha, guess_counts=guess_counts)


__all__ = ["CanaryAuditResult", "audit_canary_scores", "canary_audit", "default_guess_counts", "make_canaries"]
