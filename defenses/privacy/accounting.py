"""Privacy accounting through Opacus's accountants: epsilon, noise calibration, step budgets.

A training history is a list of ``(noise_multiplier, sample_rate, steps)`` triples, the
format of Opacus's accountants. Three accountants are registered:

* ``prv``: privacy loss random variables (Gopi et al. 2021); the tightest, an upper bound.
* ``rdp``: Renyi DP of the sampled Gaussian mechanism (Mironov et al. 2019) converted with
  Balle et al. 2020; an upper bound, looser than ``prv``.
* ``gdp``: Gaussian DP via the central limit theorem; an approximation that can
  *under*-estimate epsilon (reported as a caveat).

Example:
    >>> from defenses.privacy.accounting import epsilon, max_steps
    >>> eps = epsilon("rdp", [(1.0, 0.05, 100)], delta=1e-5)
    >>> round(eps, 2)
    4.04
    >>> n = max_steps("rdp", noise_multiplier=1.0, sample_rate=0.05, delta=1e-5, target=eps)
    >>> n
    100
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from securetrain.errors import PrivacyError
from securetrain.registry import Registry

History = Sequence[tuple[float, float, int]]

ACCOUNTANTS: Registry[Callable[[], Any]] = Registry("accountant")

CAVEATS: dict[str, str] = {
    "gdp": "the gdp accountant is a central-limit approximation and can under-estimate epsilon; use prv or rdp for a guarantee",
}

_QUIET = (
    "Optimal order is the",
    "GDP accounting is experimental",
)


def _opacus(name: str) -> Callable[[], Any]:
    def make() -> Any:
        from opacus.accountants import create_accountant

        with warnings.catch_warnings():
            for msg in _QUIET:
                warnings.filterwarnings("ignore", message=msg)
            return create_accountant(mechanism=name)

    return make


for _name in ("prv", "rdp", "gdp"):
    ACCOUNTANTS.add(_name, _opacus(_name))


def make_accountant(name: str) -> Any:
    """A fresh Opacus accountant registered as ``name``."""
    return ACCOUNTANTS.get(name)()


def epsilon(name: str, history: History, delta: float) -> float:
    """Epsilon spent by ``history`` at ``delta`` according to accountant ``name``.

    ``inf`` when any step had no noise; ``0.0`` for an empty history.
    """
    hist = [(float(s), float(q), int(n)) for s, q, n in history if int(n) > 0]
    if not hist:
        return 0.0
    if any(s <= 0 for s, _, _ in hist):
        return math.inf
    if name == "rdp":
        return _rdp_epsilon(tuple(hist), float(delta))
    acc = make_accountant(name)
    if name == "gdp" and len({(s, q) for s, q, _ in hist}) > 1:
        raise PrivacyError("the gdp accountant needs a constant noise multiplier and sample rate; use prv or rdp")
    acc.history = list(hist) if name != "gdp" else [(hist[0][0], hist[0][1], sum(n for _, _, n in hist))]
    with warnings.catch_warnings():
        for msg in _QUIET:
            warnings.filterwarnings("ignore", message=msg)
        return float(acc.get_epsilon(delta=float(delta)))


@lru_cache(maxsize=256)
def _rdp_per_step(sigma: float, q: float) -> np.ndarray:
    from opacus.accountants.analysis import rdp as analysis
    from opacus.accountants.rdp import RDPAccountant

    return np.asarray(analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=RDPAccountant.DEFAULT_ALPHAS))


def _rdp_epsilon(hist: tuple[tuple[float, float, int], ...], delta: float) -> float:
    from opacus.accountants.analysis import rdp as analysis
    from opacus.accountants.rdp import RDPAccountant

    total = sum(_rdp_per_step(s, q) * n for s, q, n in hist)
    with warnings.catch_warnings():
        for msg in _QUIET:
            warnings.filterwarnings("ignore", message=msg)
        eps, _ = analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=total, delta=delta)
    return float(eps)


@lru_cache(maxsize=128)
def calibrate_noise(name: str, *, target: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier (to 1%) with which ``steps`` steps spend at most ``target``.

    Raises :class:`PrivacyError` when no noise level reaches the target.
    """
    from opacus.accountants.utils import get_noise_multiplier

    if steps < 1:
        raise PrivacyError(f"cannot calibrate noise for {steps} steps; train for at least one step")
    try:
        with warnings.catch_warnings():
            for msg in _QUIET:
                warnings.filterwarnings("ignore", message=msg)
            sigma = float(
                get_noise_multiplier(
                    target_epsilon=float(target),
                    target_delta=float(delta),
                    sample_rate=float(sample_rate),
                    steps=int(steps),
                    accountant=name,
                    epsilon_tolerance=0.01,
                )
            )
    except ValueError as exc:
        raise PrivacyError(
            f"target epsilon {target} is unreachable for this schedule ({steps} steps at sample rate "
            f"{sample_rate:.4g}, delta {delta:g}, accountant {name}): even a noise multiplier of 1e6 spends more "
            f"({exc}); raise the epsilon, train for fewer steps or use a smaller batch"
        ) from exc
    # get_noise_multiplier stops within its tolerance above the target in rare cases: walk up.
    for _ in range(60):
        if epsilon(name, [(sigma, sample_rate, steps)], delta) <= target:
            return sigma
        sigma *= 1.01
    raise PrivacyError(f"could not calibrate a noise multiplier for target epsilon {target}")


def max_steps(
    name: str,
    *,
    noise_multiplier: float,
    sample_rate: float,
    delta: float,
    target: float,
    spent: History = (),
    hint: int | None = None,
    limit: int = 10_000_000,
) -> int:
    """The largest number of further steps after ``spent`` whose total epsilon is at most ``target``.

    Epsilon grows with the number of steps, so a binary search finds the last step that
    fits. ``hint`` (a step count expected to fit) only speeds the search up.
    """
    if noise_multiplier <= 0:
        return 0 if target < math.inf else limit
    base = [(float(s), float(q), int(n)) for s, q, n in spent]

    def eps_after(n: int) -> float:
        return (
            epsilon(name, [*base, (noise_multiplier, sample_rate, n)], delta) if n > 0 else epsilon(name, base, delta)
        )

    if eps_after(0) > target:
        return 0
    lo = 0
    if name == "prv" and not base:  # prv <= rdp: the rdp answer is a lower bound
        lo = max_steps(
            "rdp", noise_multiplier=noise_multiplier, sample_rate=sample_rate, delta=delta, target=target, limit=limit
        )
        if lo and eps_after(lo) > target:
            lo = 0
    hi = max(lo * 2, int(hint or 0), 1)
    while eps_after(hi) <= target:
        lo = hi
        if hi >= limit:
            return limit
        hi = min(hi * 2, limit)
    while hi - lo > 1:  # invariant: eps_after(lo) <= target < eps_after(hi)
        mid = (lo + hi) // 2
        if eps_after(mid) <= target:
            lo = mid
        else:
            hi = mid
    return lo


def epsilon_curve(name: str, history: History, delta: float, points: int = 12) -> list[list[float]]:
    """``[[step, epsilon], ...]`` at about ``points`` steps from 0 to the end of ``history``."""
    hist = [(float(s), float(q), int(n)) for s, q, n in history if int(n) > 0]
    total = sum(n for _, _, n in hist)
    if total == 0:
        return [[0, 0.0]]
    marks = sorted({round(total * i / max(points - 1, 1)) for i in range(points)} | {total})
    out: list[list[float]] = []
    for m in marks:
        prefix: list[tuple[float, float, int]] = []
        left = m
        for s, q, n in hist:
            if left <= 0:
                break
            prefix.append((s, q, min(n, left)))
            left -= n
        out.append([m, epsilon(name, prefix, delta) if m else 0.0])
    return out
