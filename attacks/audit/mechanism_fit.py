"""An epsilon lower bound from the measured mechanism: the subsampled Gaussian the run really applied.

The white-box audit sees, at every canary coordinate and every released step, the privatized
gradient ``x_t = Delta * b_t + d_t + sigma_eff * xi_t`` (any units): ``b_t`` says whether the
canary was in the step's batch, ``Delta`` is what one sampled canary adds after clipping, ``d_t``
is the data's own gradient there and ``xi_t`` the noise. If the implementation is a subsampled
Gaussian mechanism of *some* rate, sensitivity and noise (the form DP-SGD's accounting assumes),
its epsilon is that of noise multiplier ``sigma_eff / Delta`` at rate ``q_eff`` over the ``T``
released steps. All three are measured, each with a one-sided confidence limit in the direction
that lowers epsilon:

* ``q_eff``: the fraction of (included canary, step) pairs in which the canary was sampled by the
  run's own sampler; Clopper-Pearson lower limit.
* ``sigma_eff``: the spread of the released gradient at the coordinates of *excluded* canaries
  (only noise and data there: data can only widen it, which lowers the bound); chi-square upper
  limit of the pooled per-step variance.
* ``Delta``: among included canaries, the mean release in sampled steps minus the mean in the other
  steps (the data's drift cancels: sampling is independent of it); normal lower limit. When the
  included canaries are sampled in (almost) every step (``q = 1``), the excluded canaries' release
  is the reference instead (data that pulls a pushed coordinate back lowers that estimate).

``sigma_eff`` and ``Delta`` are fitted per parameter tensor (a layer whose clipping or noise is
wrong shows up there) and the largest epsilon is kept; the confidence is split over every limit.
A step-dependent noise fitted by one pooled ``sigma_eff`` (e.g. some steps without noise) gives a
smaller epsilon than the truth (Renyi divergence is convex in ``1 / sigma^2``), so it stays a lower
bound. Epsilon comes from the prv accountant (Gopi et al. 2021) at its lower error margin.

What the bound assumes: the released gradient is (canary contribution when sampled) plus data
plus Gaussian noise independent of the canaries. That holds for any implementation that draws
Gaussian noise and adds it to some clipped (or not) sum, which covers the bugs this audit is for
(noise too small or missing on some steps, ranks or layers, clipping skipped, the wrong sample
rate accounted). The counting bound (:mod:`attacks.audit.one_run`) assumes nothing and is
reported beside it.

Example (a correct mechanism, sigma = 1, q = 0.1, 50 steps, whose epsilon at delta 1e-5 is 5.16:
the fitted bound sits just below it):
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> included = rng.random(2000) < 0.5
    >>> sampled = (rng.random((2000, 50)) < 0.1) & included[:, None]
    >>> grads = sampled + rng.normal(0, 1.0, (2000, 50))
    >>> fit = fit_subsampled_gaussian(grads, sampled, included, delta=1e-5, alpha=0.05)
    >>> round(fit.sample_rate, 2), round(fit.noise_multiplier, 2), 4.5 < fit.epsilon < 5.16
    (0.1, 1.0, True)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import beta, chi2, norm

from attacks.checks import check_alpha, check_audit_delta
from securetrain.errors import AttackError

MIN_NOISE = 0.3
"""Fitted noise multipliers below this are accounted at it (a smaller epsilon: still a lower bound; the
accountant's discretisation would need GiBs below)."""

PRV_MARGIN = 0.03
"""Subtracted from the prv accountant's epsilon: its upper error bound (eps_error 0.01 on each side, and
the delta error) becomes a lower one."""

MIN_PER_SIDE = 10
"""A parameter tensor is fitted only with at least this many observations on each side."""


@dataclass(frozen=True)
class GroupFit:
    """The fit for the canaries of one parameter tensor."""

    group: int
    canaries: int
    sigma: float
    sigma_high: float
    sensitivity: float
    sensitivity_low: float
    noise_multiplier: float
    epsilon: float


@dataclass(frozen=True)
class MechanismFit:
    """The measured subsampled Gaussian mechanism and the epsilon lower bound it gives (see the module docstring)."""

    epsilon: float
    sample_rate: float
    sample_rate_low: float
    noise_multiplier: float
    noise_multiplier_high: float
    steps: int
    delta: float
    confidence: float
    groups: tuple[GroupFit, ...] = field(default=())
    method: str = "fitted subsampled Gaussian (measured rate, sensitivity and noise; prv accountant)"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (floats rounded to 6 digits)."""
        return {
            "method": self.method,
            "epsilon": _r(self.epsilon),
            "sample_rate": _r(self.sample_rate),
            "sample_rate_low": _r(self.sample_rate_low),
            "noise_multiplier": _r(self.noise_multiplier),
            "noise_multiplier_high": _r(self.noise_multiplier_high),
            "steps": self.steps,
            "delta": self.delta,
            "confidence": self.confidence,
            "groups": [{k: _r(v) if isinstance(v, float) else v for k, v in g.__dict__.items()} for g in self.groups],
        }


def _r(v: float) -> float:
    return round(float(v), 6) if math.isfinite(v) else float(v)


def subsampled_gaussian_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """A lower estimate of the epsilon of ``steps`` subsampled Gaussian steps (prv accountant minus its error)."""
    if steps < 1 or sample_rate <= 0:
        return 0.0
    from opacus.accountants import PRVAccountant

    acc = PRVAccountant()
    acc.history = [(max(float(noise_multiplier), MIN_NOISE), min(float(sample_rate), 1.0), int(steps))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eps = float(acc.get_epsilon(delta=float(delta), eps_error=0.01))
    return max(eps - PRV_MARGIN, 0.0)


def _pooled_sd(x: np.ndarray) -> tuple[float, int]:
    """The per-step-centred pooled standard deviation of ``x`` (canaries, steps) and its degrees of freedom."""
    centred = x - x.mean(axis=0, keepdims=True)
    dof = x.size - x.shape[1]
    return float(math.sqrt(float((centred**2).sum()) / max(dof, 1))), dof


def fit_subsampled_gaussian(
    grads: Any,
    sampled: Any,
    included: Any,
    *,
    groups: Any = None,
    delta: float,
    alpha: float = 0.05,
) -> MechanismFit:
    """Fit rate, sensitivity and noise to the released canary gradients; epsilon lower bound at ``1 - alpha``.

    ``grads`` and ``sampled``: ``(canaries, steps)``, the released gradient at each canary coordinate
    and whether the canary was in that step's batch; ``included``: ``(canaries,)``; ``groups``: the
    parameter tensor of each canary (one group if omitted).
    """
    x = np.asarray(grads, dtype=np.float64)
    s = np.asarray(sampled, dtype=bool)
    inc = np.asarray(included, dtype=bool)
    g = np.zeros(inc.shape, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    d, a = check_audit_delta(delta), check_alpha(alpha)
    if x.ndim != 2 or s.shape != x.shape or inc.shape != (x.shape[0],) or g.shape != inc.shape:
        raise AttackError(
            f"need grads and sampled of shape (canaries, steps) and one inclusion flag and group per canary, got "
            f"{x.shape}, {s.shape}, {inc.shape}, {g.shape}"
        )
    if not np.isfinite(x).all():
        raise AttackError("the released canary gradients contain NaN or infinite values")
    if bool(s[~inc].any()):
        raise AttackError("an excluded canary was recorded as sampled: the canary bookkeeping is broken")
    m, steps = x.shape
    if steps < 1 or int(inc.sum()) < 2 or int((~inc).sum()) < 2:
        raise AttackError(f"the mechanism fit needs released steps and canaries on both sides (steps {steps})")
    fitted = [int(k) for k in np.unique(g) if _fittable(x, s, inc, g == k)]
    per = a / (1 + 2 * max(len(fitted), 1))
    trials, hits = int(inc.sum()) * steps, int(s.sum())
    q_hat = hits / trials
    q_low = float(beta.ppf(per, hits, trials - hits + 1)) if hits > 0 else 0.0
    z = float(norm.ppf(1 - per))
    fits: list[GroupFit] = []
    for k in fitted:
        sel = g == k
        sd, dof = _pooled_sd(x[sel & ~inc])
        sd_high = sd * math.sqrt(dof / float(chi2.ppf(per, dof)))
        xi, si = x[sel & inc], s[sel & inc]
        on, off = xi[si], xi[~si]
        if off.size < MIN_PER_SIDE:  # every included canary sampled in (almost) every step, e.g. q = 1
            off = x[sel & ~inc].reshape(-1)
        sens = float(on.mean() - off.mean())
        se = math.sqrt(float(on.var(ddof=1)) / on.size + float(off.var(ddof=1)) / off.size)
        sens_low = sens - z * se
        if sens_low <= 0 or sd_high <= 0:
            eps = 0.0 if sens_low <= 0 else math.inf
        else:
            eps = subsampled_gaussian_epsilon(sd_high / sens_low, q_low, steps, d)
        fits.append(
            GroupFit(
                group=k,
                canaries=int(sel.sum()),
                sigma=sd,
                sigma_high=sd_high,
                sensitivity=sens,
                sensitivity_low=sens_low,
                noise_multiplier=sd / sens if sens > 0 else math.inf,
                epsilon=eps,
            )
        )
    worst = max(fits, key=lambda f: f.epsilon, default=None)
    return MechanismFit(
        epsilon=worst.epsilon if worst is not None else 0.0,
        sample_rate=q_hat,
        sample_rate_low=q_low,
        noise_multiplier=worst.noise_multiplier if worst is not None else math.inf,
        noise_multiplier_high=(
            worst.sigma_high / worst.sensitivity_low if worst is not None and worst.sensitivity_low > 0 else math.inf
        ),
        steps=steps,
        delta=d,
        confidence=1.0 - a,
        groups=tuple(fits),
    )


def _fittable(x: np.ndarray, s: np.ndarray, inc: np.ndarray, sel: np.ndarray) -> bool:
    out = int((sel & ~inc).sum()) * x.shape[1]
    on = int(s[sel & inc].sum())
    return int((sel & ~inc).sum()) >= 2 and min(out, on) >= MIN_PER_SIDE


__all__ = [
    "MIN_NOISE",
    "PRV_MARGIN",
    "GroupFit",
    "MechanismFit",
    "fit_subsampled_gaussian",
    "subsampled_gaussian_epsilon",
]
