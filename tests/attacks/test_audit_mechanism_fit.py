"""Known answers for the white-box audit's statistics on draws from the exact DP-SGD mechanism (no training).

At a canary coordinate, in units of the clipping norm, DP-SGD releases ``b_t + sigma * xi_t`` per
step (``b_t = 1`` when the canary was sampled, rate ``q``, only if it is included). These tests
draw from that mechanism directly and check the fitted bound against the true epsilon (prv).
"""

from __future__ import annotations

import numpy as np
import pytest

from attacks.audit import audit_canary_scores
from attacks.audit.likelihood import likelihood_ratio_scores
from attacks.audit.mechanism_fit import fit_subsampled_gaussian, subsampled_gaussian_epsilon
from securetrain.errors import AttackError

Q, SIGMA, STEPS, DELTA = 0.1, 1.0, 50, 1e-5


def draws(m: int, seed: int, *, sigma: float = SIGMA, q: float = Q, drift: float = 0.0, steps: int = STEPS):
    """(released, sampled, included) for ``m`` canaries; ``drift``: a data gradient random walk per coordinate."""
    rng = np.random.default_rng(seed)
    included = rng.random(m) < 0.5
    sampled = (rng.random((m, steps)) < q) & included[:, None]
    released = sampled + rng.normal(0.0, sigma, (m, steps))
    if drift:
        released += np.cumsum(rng.normal(0.0, drift, (m, steps)), axis=1) + rng.normal(0.0, 3 * drift, (m, 1))
    return released, sampled, included


@pytest.fixture(scope="module")
def true_epsilon() -> float:
    eps = subsampled_gaussian_epsilon(SIGMA, Q, STEPS, DELTA)
    assert 5.0 < eps < 5.2  # 5.16 by the prv accountant, less its error margin
    return eps


def test_fitted_bound_approaches_the_true_epsilon_and_never_exceeds_it(true_epsilon):
    ratios = {}
    for m in (250, 4000):
        ratios[m] = []
        for seed in range(3):
            fit = fit_subsampled_gaussian(*draws(m, seed), delta=DELTA, alpha=0.05)
            assert fit.epsilon <= true_epsilon, (m, seed, fit)
            ratios[m].append(fit.epsilon / true_epsilon)
    assert min(ratios[4000]) > 0.85
    assert np.mean(ratios[4000]) > np.mean(ratios[250])  # more canaries: a tighter bound


def test_the_data_gradient_only_lowers_the_fitted_bound(true_epsilon):
    clean = fit_subsampled_gaussian(*draws(2000, 0), delta=DELTA, alpha=0.05)
    drifting = fit_subsampled_gaussian(*draws(2000, 0, drift=0.3), delta=DELTA, alpha=0.05)
    assert drifting.noise_multiplier_high > clean.noise_multiplier_high
    assert drifting.epsilon < clean.epsilon <= true_epsilon
    assert abs(drifting.groups[0].sensitivity - 1.0) < 0.15  # the drift cancels in the sensitivity


def test_half_the_noise_or_a_larger_rate_is_measured(true_epsilon):
    half = fit_subsampled_gaussian(*draws(1000, 1, sigma=SIGMA / 2), delta=DELTA, alpha=0.05)
    assert half.epsilon > 2 * true_epsilon
    double_rate = fit_subsampled_gaussian(*draws(1000, 1, q=2 * Q), delta=DELTA, alpha=0.05)
    assert double_rate.sample_rate_low > 1.8 * Q and double_rate.epsilon > 1.3 * true_epsilon


def test_one_layer_without_clipping_is_found_in_its_group(true_epsilon):
    released, sampled, included = draws(2000, 2)
    groups = np.arange(2000) % 2
    released[groups == 1] += 9.0 * sampled[groups == 1]  # the canaries of tensor 1 reach 10 C: not clipped
    fit = fit_subsampled_gaussian(released, sampled, included, groups=groups, delta=DELTA, alpha=0.05)
    by_group = {g.group: g for g in fit.groups}
    assert by_group[0].epsilon <= true_epsilon < by_group[1].epsilon == fit.epsilon
    assert by_group[1].sensitivity_low > 8


def test_full_batch_training_is_fitted_against_the_excluded_canaries():
    # q = 1: an included canary is in every step, the excluded ones are the reference for its sensitivity
    fit = fit_subsampled_gaussian(*draws(1000, 4, q=1.0, sigma=2.0, steps=20), delta=DELTA, alpha=0.05)
    true = subsampled_gaussian_epsilon(2.0, 1.0, 20, DELTA)
    assert 0.75 * true < fit.epsilon <= true


def test_likelihood_ratio_score_beats_the_linear_sum_at_small_rates(true_epsilon):
    released, sampled, included = draws(2000, 3, q=0.05, steps=100)
    lr = likelihood_ratio_scores(released, sample_rate=0.05, noise_multiplier=SIGMA)
    linear = released.sum(axis=1)
    lr_bound = audit_canary_scores(lr, included, delta=DELTA, alpha=0.05).epsilon_lower_bound
    linear_bound = audit_canary_scores(linear, included, delta=DELTA, alpha=0.05).epsilon_lower_bound
    assert linear_bound < lr_bound <= subsampled_gaussian_epsilon(SIGMA, 0.05, 100, DELTA)


def test_bad_observations_are_refused():
    released, sampled, included = draws(20, 0)
    with pytest.raises(AttackError, match="excluded canary was recorded as sampled"):
        fit_subsampled_gaussian(released, np.ones_like(sampled), included, delta=DELTA)
    with pytest.raises(AttackError, match="shape"):
        fit_subsampled_gaussian(released[:, :3], sampled, included, delta=DELTA)
    with pytest.raises(AttackError, match="NaN"):
        likelihood_ratio_scores(np.full((2, 2), np.nan), sample_rate=0.1, noise_multiplier=1.0)
    with pytest.raises(AttackError, match="noise multiplier"):
        likelihood_ratio_scores(released, sample_rate=0.1, noise_multiplier=0.0)
