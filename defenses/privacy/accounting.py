"""Privacy accounting through Opacus's accountants: epsilon, noise calibration, step budgets.

A training history is a list of ``(noise_multiplier, sample_rate, steps)`` triples, the
format of Opacus's accountants. Three accountants are registered:

* ``prv``: privacy loss random variables (Gopi et al. 2021); the tightest, an upper bound.
* ``rdp``: Renyi DP of the sampled Gaussian mechanism (Mironov et al. 2019) converted with
  Balle et al. 2020; an upper bound, looser than ``prv``.
* ``gdp``: Gaussian DP via the central limit theorem; an approximation that can
  *under*-estimate epsilon. :func:`upper_epsilon` (what budgets and reports use) takes the
  larger of the gdp and the prv figure, so a gdp run never reports less than an upper bound.

Degenerate inputs are refused or bounded here, whoever calls: a history with more than
:data:`MAX_STEPS` steps is refused (:class:`~securetrain.errors.PrivacyError`), prv refuses
noise multipliers below :data:`PRV_MIN_NOISE` (its discretisation would need hundreds of
GiB), and a prv history whose discretisation would need more than :data:`PRV_MAX_POINTS`
points is accounted with rdp instead (also an upper bound, a little looser), so no call
allocates more than a few hundred MiB.

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

MAX_EPSILON = 1000.0
"""The largest target epsilon or ``max_epsilon`` accepted (e**1000 bounds nothing)."""

CAVEATS: dict[str, str] = {
    "gdp": "the gdp accountant is a central-limit approximation and can under-estimate epsilon; use prv or rdp for a guarantee",
}

MAX_STEPS = 10_000_000
"""The most steps any history or plan may have (the step-budget search stops there too)."""

PRV_MIN_NOISE = 0.1
"""The smallest positive noise multiplier the prv (and gdp) accountant takes."""

PRV_MAX_POINTS = 2_000_000
"""The largest prv discretisation (points of its domain); beyond it the rdp bound is used."""

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


def _prv() -> Any:
    """Opacus's prv accountant, with its discretisation domain computed from cached per-step RDP curves."""
    from opacus.accountants.prv import PRVAccountant

    class CachedDomainPRVAccountant(PRVAccountant):  # type: ignore[misc]
        """Opacus's prv accountant; only the domain (a pure function of the history) is cached.

        Opacus sizes the domain from RDP bounds it recomputes on every call (the most
        expensive part of an epsilon: fractional RDP orders in pure Python); here the
        same bound comes from :func:`_rdp_per_step`, computed once per noise and rate.
        """

        def _get_domain(
            self, prvs: Sequence[Any], num_self_compositions: Sequence[int], eps_error: float, delta_error: float
        ) -> Any:
            hist = tuple(
                (float(p.noise_multiplier), float(p.sample_rate), int(n)) for p, n in zip(prvs, num_self_compositions)
            )
            return _prv_domain(hist, float(eps_error), float(delta_error))

    return CachedDomainPRVAccountant()


ACCOUNTANTS.add("prv", _prv)
for _name in ("rdp", "gdp"):
    ACCOUNTANTS.add(_name, _opacus(_name))


def make_accountant(name: str) -> Any:
    """A fresh Opacus accountant registered as ``name``."""
    return ACCOUNTANTS.get(name)()


def epsilon(name: str, history: History, delta: float) -> float:
    """Epsilon spent by ``history`` at ``delta`` according to accountant ``name``.

    ``inf`` when any step had no noise; ``0.0`` for an empty history.
    """
    hist = tuple((float(s), float(q), int(n)) for s, q, n in history if int(n) > 0)
    if not hist:
        return 0.0
    if any(s <= 0 for s, _, _ in hist):
        return math.inf
    return _epsilon_cached(name, hist, float(delta))


@lru_cache(maxsize=1024)
def _epsilon_cached(name: str, hist: tuple[tuple[float, float, int], ...], delta: float) -> float:
    """:func:`epsilon` of a normalised history (a pure function: the same history is accounted once)."""
    _check_history(name, hist)
    if name == "rdp":
        return _rdp_epsilon(tuple(hist), float(delta))
    if name == "prv" and _prv_points(hist, float(delta)) > PRV_MAX_POINTS:
        return _rdp_epsilon(tuple(hist), float(delta))  # an upper bound too; prv would need GiBs here
    acc = make_accountant(name)
    if name == "gdp" and len({(s, q) for s, q, _ in hist}) > 1:
        raise PrivacyError("the gdp accountant needs a constant noise multiplier and sample rate; use prv or rdp")
    acc.history = list(hist) if name != "gdp" else [(hist[0][0], hist[0][1], sum(n for _, _, n in hist))]
    with warnings.catch_warnings():
        for msg in _QUIET:
            warnings.filterwarnings("ignore", message=msg)
        return float(acc.get_epsilon(delta=float(delta)))


def upper_epsilon(name: str, history: History, delta: float) -> float:
    """An epsilon that bounds ``history``: accountant ``name``'s, or for ``gdp`` the larger of gdp and prv.

    Budgets, calibration and reports use this, so no reported figure is below an upper bound.

    Example:
        >>> h = [(0.9, 64 / 1400, 44)]
        >>> upper_epsilon("gdp", h, 1e-5) == max(epsilon("gdp", h, 1e-5), epsilon("prv", h, 1e-5))
        True
    """
    eps = epsilon(name, history, delta)
    if name == "gdp":
        eps = max(eps, epsilon("prv", history, delta))
    return eps


def _check_history(name: str, hist: Sequence[tuple[float, float, int]]) -> None:
    total = sum(n for _, _, n in hist)
    if total > MAX_STEPS:
        raise PrivacyError(
            f"cannot account {total} steps: at most {MAX_STEPS:,} steps are supported; train for fewer steps "
            "(fewer epochs or a larger batch)"
        )
    if name in ("prv", "gdp"):
        low = min(s for s, _, _ in hist)
        if low < PRV_MIN_NOISE:
            raise PrivacyError(
                f"noise multiplier {low:g} is below {PRV_MIN_NOISE} the smallest the {name} accountant takes "
                f"(its analysis would need unbounded memory and the epsilon would be huge anyway); "
                "use accountant='rdp' or a larger noise_multiplier"
            )


PRV_EPS_ERROR = 0.01
"""The epsilon error Opacus's prv accountant is asked for (its default)."""


@lru_cache(maxsize=1024)
def _prv_points(hist: tuple[tuple[float, float, int], ...], delta: float) -> int:
    """Points of the domain the prv accountant discretises ``hist`` on (the same, cached, domain it then uses)."""
    try:
        return int(_prv_domain(hist, PRV_EPS_ERROR, delta / 1000).size)
    except (ValueError, OverflowError, FloatingPointError):
        return PRV_MAX_POINTS + 1


@lru_cache(maxsize=1024)
def _prv_domain(hist: tuple[tuple[float, float, int], ...], eps_error: float, delta_error: float) -> Any:
    """The prv discretisation domain of ``hist``: Opacus's safe domain size (Gopi et al., remark 5.6) and mesh.

    The size is the larger of the RDP epsilon of the whole history at ``delta_error / 4``
    and of each single step at ``delta_error / (8 * steps)``, plus 3, as Opacus computes
    it; the RDP curves come from :func:`_rdp_per_step` (cached), so the figures are
    Opacus's to the last bit, computed once per noise level and sample rate.
    """
    from opacus.accountants.analysis.prv import Domain

    total = sum(n for _, _, n in hist)
    size = _rdp_epsilon(hist, delta_error / 4)
    for s, q, _ in hist:
        size = max(size, _rdp_epsilon(((s, q, 1),), delta_error / (8 * total)))
    half = max(size, eps_error) + 3
    mesh = eps_error / np.sqrt(total * np.log(12 / delta_error) / 2)
    return Domain.create_aligned(-half, half, mesh)


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

    By accountant ``name``'s own figure; for ``gdp`` a run calibrates with
    ``max(calibrate_noise("gdp", ...), calibrate_noise("prv", ...))`` so that the reported
    upper bound (:func:`upper_epsilon`) meets the target.

    Raises :class:`PrivacyError` when no noise level reaches the target.
    """
    from opacus.accountants.utils import get_noise_multiplier

    if steps < 1:
        raise PrivacyError(f"cannot calibrate noise for {steps} steps; train for at least one step")
    if not math.isfinite(target) or target > MAX_EPSILON:
        raise PrivacyError(
            f"cannot calibrate noise to epsilon {target}: a target epsilon must be at most {MAX_EPSILON:g}"
        )
    _check_history("rdp", [(1.0, float(sample_rate), int(steps))])  # the step count
    try:
        with warnings.catch_warnings():
            for msg in _QUIET:
                warnings.filterwarnings("ignore", message=msg)
            if name == "rdp":
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
            else:  # Opacus's search through the guarded epsilon (bounded memory, bounded iterations)
                sigma = _search_noise(name, float(target), float(delta), float(sample_rate), int(steps))
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


def _search_noise(name: str, target: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise (to 0.01 in epsilon or 0.1% in noise) whose guarded :func:`epsilon` meets ``target``.

    Never below :data:`PRV_MIN_NOISE`. Each evaluation is an accounting run, so the search
    is short: it starts from the Gaussian-DP (central limit) estimate of the noise, which
    is close, brackets the answer, and narrows the bracket by secant steps on
    ``(log noise, log epsilon)`` (a smooth, decreasing curve), kept inside the inner 80%
    of the bracket so that it also shrinks when the secant is poor. About 4 to 6 accounting
    runs instead of a bisection's 12 to 15.
    """

    def eps(sigma: float) -> float:
        # below the floor the accountant refuses: count it as too little noise (the answer is then >= the floor)
        return epsilon(name, [(sigma, sample_rate, steps)], delta) if sigma >= PRV_MIN_NOISE else math.inf

    start = max(_gdp_noise(target, delta, sample_rate, steps), PRV_MIN_NOISE)
    high, eps_high = start, eps(start)
    low, eps_low = 0.0, math.inf
    while eps_high > target:  # too little noise: step up until the target is met
        low, eps_low = high, eps_high
        high *= 1.25
        if high > 1e6:
            raise ValueError("The privacy budget is too low.")
        eps_high = eps(high)
    if low == 0.0:  # the start met the target: step down until it does not
        while True:
            s = high / 1.25
            if s < PRV_MIN_NOISE:
                low, eps_low = s, math.inf
                break
            e = eps(s)
            if e > target:
                low, eps_low = s, e
                break
            high, eps_high = s, e
    for _ in range(100):  # invariant: eps(low) > target >= eps(high)
        if target - eps_high <= 0.01 or high - low <= 1e-3 * high:
            break
        width = high - low
        sigma = low + width / 2
        if math.isfinite(eps_low) and low > 0 and eps_high > 0:
            # secant through the bracket's ends in log-log coordinates
            x0, x1, y0, y1 = math.log(low), math.log(high), math.log(eps_low), math.log(eps_high)
            if y0 != y1:
                sigma = math.exp(x0 + (math.log(target) - y0) * (x1 - x0) / (y1 - y0))
        sigma = min(max(sigma, low + 0.1 * width), high - 0.1 * width)
        e = eps(sigma)
        if e <= target:
            high, eps_high = sigma, e
        else:
            low, eps_low = sigma, e
    return high


def _gdp_noise(target: float, delta: float, sample_rate: float, steps: int) -> float:
    """The noise multiplier at which the Gaussian-DP (central limit) approximation spends ``target``.

    A starting point only (the approximation can be off either way); ``1.0`` if it has no answer.
    """
    from scipy.optimize import brentq
    from scipy.stats import norm

    def excess(mu: float) -> float:  # delta(eps; mu) - delta: increasing in mu
        return float(norm.cdf(-target / mu + mu / 2) - math.exp(target) * norm.cdf(-target / mu - mu / 2)) - delta

    try:
        if excess(1e-3) > 0 or excess(50.0) < 0:
            return 1.0
        mu = float(brentq(excess, 1e-3, 50.0, xtol=1e-6))
        return 1.0 / math.sqrt(math.log1p(mu * mu / (sample_rate * sample_rate * steps)))
    except (ValueError, OverflowError, ZeroDivisionError):
        return 1.0


def max_steps(
    name: str,
    *,
    noise_multiplier: float,
    sample_rate: float,
    delta: float,
    target: float,
    spent: History = (),
    hint: int | None = None,
    limit: int = MAX_STEPS,
) -> int:
    """The largest number of further steps after ``spent`` whose total epsilon is at most ``target``.

    Epsilon grows with the number of steps, so a binary search finds the last step that
    fits. ``hint`` (a step count expected to fit) only speeds the search up. The answer
    is at most ``limit`` (:data:`MAX_STEPS`, and never more than that less the steps
    already ``spent``), whatever the target: the search never grows past it.
    """
    base = [(float(s), float(q), int(n)) for s, q, n in spent]
    limit = max(0, min(int(limit), MAX_STEPS - sum(n for _, _, n in base)))
    if noise_multiplier <= 0:
        return 0 if target < math.inf else limit

    def eps_after(n: int) -> float:
        hist = [*base, (noise_multiplier, sample_rate, n)] if n > 0 else base
        return upper_epsilon(name, hist, delta)

    if eps_after(0) > target:
        return 0
    lo = 0
    if name == "prv" and not base:  # prv <= rdp: the rdp answer is a lower bound
        lo = max_steps(
            "rdp", noise_multiplier=noise_multiplier, sample_rate=sample_rate, delta=delta, target=target, limit=limit
        )
        if lo and eps_after(lo) > target:
            lo = 0
    hi = min(max(lo * 2, int(hint or 0), 1), limit)
    if limit == 0:
        return 0
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
    """``[[step, epsilon], ...]`` at about ``points`` steps from 0 to the end of ``history`` (:func:`upper_epsilon`)."""
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
        out.append([m, upper_epsilon(name, prefix, delta) if m else 0.0])
    return out
