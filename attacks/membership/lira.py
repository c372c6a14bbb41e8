"""The likelihood-ratio attack (LiRA, Carlini et al. 2022) with shadow models.

For each target example, the logit-scaled confidence ``phi = log(p_y / (1 - p_y))`` of the
shadow models that did NOT train on it (OUT) and of those that did (IN) is modelled as a
Gaussian; the target model's ``phi`` is then tested against them:

* **online**: score = ``log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out)`` (needs IN and
  OUT models per example: the shadow pool contains the target's candidate examples);
* **offline**: score = ``(phi - mu_out) / s_out``, the one-sided test against the OUT
  distribution only (monotone in Carlini et al.'s ``1 - Pr[Z > phi]``). Only shadow models that
  never saw the example are used, so shadow models may be trained on data disjoint from the
  targets.

With few shadow models the per-example variance is poorly estimated; ``fixed_variance=True``
(the default, as the paper recommends below 64 models) uses one pooled within-example standard
deviation for all examples. Examples with no OUT (offline) or no IN (online) observation fall
back to population statistics; the result's notes say how many.

Example:
    >>> import numpy as np
    >>> target = np.array([3.0, 0.0])
    >>> shadow = np.array([[3.1, 0.1], [0.2, 0.0], [2.9, -0.1], [0.0, 0.1]])
    >>> keep = np.array([[True, True], [False, False], [True, True], [False, False]])
    >>> scores, notes = lira_scores(target, shadow, keep, online=False)
    >>> bool(scores[0] > scores[1])
    True
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from scipy.stats import norm
from torch import nn

from attacks.membership.base import MembershipAttack
from attacks.membership.shadow import ShadowSet
from attacks.membership.signals import model_signal
from securetrain.errors import AttackError

MIN_STD = 1e-4


def _stats(obs: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Per-example mean (NaN where unobserved), per-example std (NaN below 2 obs), pooled std."""
    count = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, (obs * mask).sum(axis=0) / np.maximum(count, 1), np.nan)
        resid2 = (((obs - np.nan_to_num(mean)[None, :]) ** 2) * mask).sum(axis=0)
        std = np.where(count > 1, np.sqrt(resid2 / np.maximum(count - 1, 1)), np.nan)
    dof = int(count.sum() - (count > 0).sum())
    pooled = math.sqrt(float(resid2.sum()) / dof) if dof > 0 else None
    return mean, std, pooled


def _scale(obs: np.ndarray, mask: np.ndarray, std: np.ndarray, pooled: float | None, fixed: bool) -> np.ndarray:
    if pooled is None:  # one observation per example: fall back to the spread of all observations
        pooled = float(np.std(obs[mask])) if mask.any() else 1.0
    base = np.full(std.shape, max(pooled, MIN_STD))
    if fixed:
        return base
    return np.where(np.isnan(std), base, np.maximum(std, MIN_STD))


def lira_scores(
    target: np.ndarray,
    shadow: np.ndarray,
    keep: np.ndarray,
    *,
    online: bool,
    fixed_variance: bool = True,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """LiRA scores from the target's signal ``(n,)``, shadow signals ``(K, n)`` and inclusion ``(K, n)``.

    Returns the scores (higher means more likely a member) and notes about fallbacks.
    """
    target = np.asarray(target, dtype=np.float64)
    shadow = np.asarray(shadow, dtype=np.float64)
    keep = np.asarray(keep, dtype=bool)
    if shadow.ndim != 2 or shadow.shape != keep.shape or shadow.shape[1] != target.shape[0]:
        raise AttackError(
            f"LiRA needs shadow signals and inclusion of shape (K, n) matching the {target.shape[0]} targets, "
            f"got {shadow.shape} and {keep.shape}"
        )
    notes: list[str] = []
    out_mask = ~keep
    if not out_mask.any():
        raise AttackError(
            "LiRA has no OUT observation: every shadow model trained on every target example; "
            "train shadow models on random halves of the pool (train_shadow_models does)"
        )
    mu_out, sd_out, pooled_out = _stats(shadow, out_mask)
    s_out = _scale(shadow, out_mask, sd_out, pooled_out, fixed_variance)
    missing_out = np.isnan(mu_out)
    if not online:
        if missing_out.any():
            mu_out = np.where(missing_out, float(shadow[out_mask].mean()), mu_out)
            notes.append(
                f"{int(missing_out.sum())} of {target.size} examples had no OUT shadow model; "
                "scored against the mean of all OUT observations"
            )
        return (target - mu_out) / s_out, tuple(notes)

    mu_in, sd_in, pooled_in = _stats(shadow, keep)
    both = ~np.isnan(mu_in) & ~missing_out
    if not both.any():
        raise AttackError(
            "online LiRA needs, for some examples, shadow models that trained on them and models that did not; "
            "use at least 2 shadow models whose pool contains the targets, or LiRA offline"
        )
    s_in = _scale(shadow, keep, sd_in, pooled_in, fixed_variance)
    shift = float(np.mean(mu_in[both] - mu_out[both]))
    missing_in = np.isnan(mu_in)
    if missing_in.any() or missing_out.any():
        notes.append(
            f"{int(missing_in.sum() + missing_out.sum())} of {target.size} examples lacked IN or OUT shadow models; "
            f"their missing mean is the other one shifted by the average IN-OUT gap ({shift:.3f})"
        )
    mu_in = np.where(missing_in, mu_out + shift, mu_in)
    mu_out = np.where(missing_out, mu_in - shift, mu_out)
    score = norm.logpdf(target, mu_in, s_in) - norm.logpdf(target, mu_out, s_out)
    return score, tuple(notes)


class LiRA(MembershipAttack):
    """LiRA against a target model, given trained shadow models (see the module docstring).

    Example:
        >>> import torch
        >>> from attacks.membership import LiRA, train_shadow_models
        >>> def recipe(xy, seed):
        ...     torch.manual_seed(seed)
        ...     return torch.nn.Linear(2, 2)
        >>> pool = (torch.rand(8, 2), torch.randint(0, 2, (8,)))
        >>> attack = LiRA(train_shadow_models(recipe, pool, 2), online=False)
        >>> attack.name
        'lira-offline'
    """

    name: ClassVar[str] = "lira"

    def __init__(
        self, shadows: ShadowSet, *, online: bool = True, fixed_variance: bool = True, signal: str = "scaled_logit"
    ) -> None:
        if not isinstance(shadows, ShadowSet):
            raise AttackError(f"LiRA needs a ShadowSet (from train_shadow_models), got {type(shadows).__name__}")
        self.shadows = shadows
        self.online = bool(online)
        self.fixed_variance = bool(fixed_variance)
        self.signal = signal
        self.name = "lira-online" if self.online else "lira-offline"  # type: ignore[misc]  # per-instance name (online/offline) over the ClassVar
        self._notes: tuple[str, ...] = ()

    def scores(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        target = model_signal(model, x, y, self.signal)
        shadow = self.shadows.signals(x, y, self.signal)
        keep = self.shadows.inclusion(x, y)
        scores, self._notes = lira_scores(target, shadow, keep, online=self.online, fixed_variance=self.fixed_variance)
        return scores

    def notes(self) -> tuple[str, ...]:
        return self._notes


__all__ = ["LiRA", "lira_scores"]
