"""Epsilon against an independent computation of the sampled Gaussian mechanism's RDP.

The reference here does not use Opacus: Renyi DP of the Poisson-subsampled Gaussian
(Mironov, Talwar, Zhang 2019): ``A_alpha = E_{z ~ N(0, s^2)}[((1-q) + q exp((2z-1)/(2 s^2)))^alpha]``,
by the binomial expansion for integer orders and by numerical integration for fractional
ones, ``RDP(alpha) = log(A_alpha) / (alpha - 1)``, converted to (epsilon, delta) with
Balle et al. 2020, Theorem 21.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special

from defenses.privacy import accounting
from securetrain.errors import PrivacyError, UnknownNameError

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


def log_a_binomial(q: float, sigma: float, alpha: int) -> float:
    terms = [
        math.log(special.comb(alpha, k, exact=True))
        + (alpha - k) * math.log1p(-q)
        + k * math.log(q)
        + (k * k - k) / (2 * sigma**2)
        for k in range(alpha + 1)
    ]
    return float(special.logsumexp(terms))


def log_a_integral(q: float, sigma: float, alpha: float) -> float:
    # integrand in log space, shifted by its maximum for numerical stability
    def log_f(z: float) -> float:
        log_ratio = np.logaddexp(math.log1p(-q), math.log(q) + (2 * z - 1) / (2 * sigma**2))
        return -(z**2) / (2 * sigma**2) - math.log(sigma * math.sqrt(2 * math.pi)) + alpha * log_ratio

    grid = np.linspace(-40 * sigma, 40 * sigma + alpha, 4001)
    shift = max(log_f(z) for z in grid)
    val, _ = integrate.quad(
        lambda z: math.exp(log_f(z) - shift), -50 * sigma, 50 * sigma + 2 * alpha, limit=500, points=[0.5, alpha / 2]
    )
    return math.log(val) + shift


def reference_rdp(q: float, sigma: float, order: float) -> float:
    if float(order).is_integer():
        return log_a_binomial(q, sigma, int(order)) / (order - 1)
    return log_a_integral(q, sigma, order) / (order - 1)


def reference_epsilon(q: float, sigma: float, steps: int, delta: float, orders=ORDERS) -> float:
    best = math.inf
    for a in orders:
        rdp = steps * reference_rdp(q, sigma, a)
        eps = rdp - (math.log(delta) + math.log(a)) / (a - 1) + math.log((a - 1) / a)
        best = min(best, eps)
    return best


@pytest.mark.parametrize("q,sigma", [(0.05, 1.0), (0.2, 2.0), (64 / 1400, 0.9)])
def test_rdp_of_the_sampled_gaussian_matches_the_binomial_expansion(q, sigma):
    from opacus.accountants.analysis.rdp import compute_rdp

    ints = [2, 3, 5, 8, 16, 32, 63]
    ours = [reference_rdp(q, sigma, a) for a in ints]
    theirs = compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=ints)
    np.testing.assert_allclose(theirs, ours, rtol=1e-9)


def test_rdp_at_fractional_orders_matches_numerical_integration():
    from opacus.accountants.analysis.rdp import compute_rdp

    q, sigma = 0.05, 1.1
    orders = [1.5, 2.5, 3.7, 6.3, 9.9]
    ours = [reference_rdp(q, sigma, a) for a in orders]
    theirs = compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=orders)
    np.testing.assert_allclose(theirs, ours, rtol=1e-6)


@pytest.mark.parametrize(
    "q,sigma,steps,delta", [(0.05, 1.0, 100, 1e-5), (64 / 1400, 0.9, 44, 1e-5), (0.25, 3.0, 30, 1e-6)]
)
def test_reported_rdp_epsilon_agrees_with_the_independent_computation(q, sigma, steps, delta):
    ours = reference_epsilon(q, sigma, steps, delta)
    reported = accounting.epsilon("rdp", [(sigma, q, steps)], delta)
    assert reported == pytest.approx(ours, rel=1e-6)


def test_prv_is_tighter_than_rdp_and_gdp_is_close():
    for q, sigma, steps in [(0.05, 1.0, 100), (0.2, 2.0, 300), (64 / 1400, 0.9, 44)]:
        rdp = accounting.epsilon("rdp", [(sigma, q, steps)], 1e-5)
        prv = accounting.epsilon("prv", [(sigma, q, steps)], 1e-5)
        gdp = accounting.epsilon("gdp", [(sigma, q, steps)], 1e-5)
        assert prv <= rdp
        assert prv > 0.5 * rdp  # same mechanism: the bounds are of the same order
        assert 0.3 * rdp < gdp < 2 * rdp


def test_epsilon_grows_with_steps_and_is_zero_or_infinite_at_the_ends():
    assert accounting.epsilon("rdp", [], 1e-5) == 0.0
    assert accounting.epsilon("prv", [(0.0, 0.1, 10)], 1e-5) == math.inf
    eps = [accounting.epsilon("rdp", [(1.0, 0.05, n)], 1e-5) for n in (1, 10, 100, 1000)]
    assert eps == sorted(eps) and len(set(eps)) == 4


def test_a_split_history_spends_the_same_as_one_block():
    one = accounting.epsilon("rdp", [(1.0, 0.05, 100)], 1e-5)
    split = accounting.epsilon("rdp", [(1.0, 0.05, 60), (1.0, 0.05, 40)], 1e-5)
    assert split == pytest.approx(one, rel=1e-12)


@pytest.mark.parametrize("name", ["rdp", "prv", "gdp"])
def test_calibrated_noise_meets_the_target_and_is_not_wasteful(name):
    q, steps, target = 64 / 1400, 66, 3.0
    sigma = accounting.calibrate_noise(name, target=target, delta=1e-5, sample_rate=q, steps=steps)
    spent = accounting.epsilon(name, [(sigma, q, steps)], 1e-5)
    assert spent <= target
    assert spent > 0.97 * target  # tolerance of the search: within 3% of the budget


@pytest.mark.parametrize("name", ["rdp", "prv"])
def test_max_steps_is_the_last_step_that_fits(name):
    q, sigma, target = 0.05, 1.0, 2.5
    n = accounting.max_steps(name, noise_multiplier=sigma, sample_rate=q, delta=1e-5, target=target)
    assert n > 0
    assert accounting.epsilon(name, [(sigma, q, n)], 1e-5) <= target
    assert accounting.epsilon(name, [(sigma, q, n + 1)], 1e-5) > target


def test_max_steps_counts_what_was_already_spent():
    q, sigma, target = 0.05, 1.0, 2.5
    total = accounting.max_steps("rdp", noise_multiplier=sigma, sample_rate=q, delta=1e-5, target=target)
    left = accounting.max_steps(
        "rdp", noise_multiplier=sigma, sample_rate=q, delta=1e-5, target=target, spent=[(sigma, q, 10)]
    )
    assert left == total - 10


def test_an_unreachable_target_is_a_clear_error():
    # RDP's conversion with orders up to 63 cannot go below about 0.1 at delta=1e-5
    with pytest.raises(PrivacyError, match=r"target epsilon 0.05 is unreachable for this schedule \(100 steps"):
        accounting.calibrate_noise("rdp", target=0.05, delta=1e-5, sample_rate=0.05, steps=100)


def test_an_unknown_accountant_lists_the_choices():
    with pytest.raises(UnknownNameError, match="unknown accountant 'moments'; choose one of: gdp, prv, rdp"):
        accounting.make_accountant("moments")


def test_the_epsilon_curve_starts_at_zero_and_ends_at_the_total():
    curve = accounting.epsilon_curve("rdp", [(1.0, 0.05, 100)], 1e-5, points=6)
    assert curve[0] == [0, 0.0]
    assert curve[-1][0] == 100
    assert curve[-1][1] == pytest.approx(accounting.epsilon("rdp", [(1.0, 0.05, 100)], 1e-5))
    assert [e for _, e in curve] == sorted(e for _, e in curve)


@pytest.mark.parametrize("hist", [[(0.9, 64 / 1400, 44)], [(1.0, 0.05, 100), (2.0, 0.1, 30)], [(5.0, 0.3, 10)]])
def test_prv_with_the_cached_domain_is_opacus_prv_to_the_last_bit(hist):
    import warnings

    from opacus.accountants.prv import PRVAccountant

    from defenses.privacy.accounting import make_accountant

    ours, theirs = make_accountant("prv"), PRVAccountant()
    ours.history, theirs.history = list(hist), list(hist)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ours.get_epsilon(1e-5) == theirs.get_epsilon(1e-5)


def test_noise_search_is_short_and_tight():
    from defenses.privacy import accounting

    accounting._epsilon_cached.cache_clear()
    sigma = accounting.calibrate_noise.__wrapped__("prv", target=3.0, delta=1e-5, sample_rate=0.05, steps=150)
    runs = accounting._epsilon_cached.cache_info().misses
    eps = accounting.epsilon("prv", [(sigma, 0.05, 150)], 1e-5)
    assert 3.0 - 0.01 <= eps <= 3.0 or accounting.epsilon("prv", [(sigma / 1.001, 0.05, 150)], 1e-5) > 3.0
    assert runs <= 8  # a bisection took 12 to 15 accounting runs
