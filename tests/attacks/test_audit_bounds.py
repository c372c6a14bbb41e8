"""Epsilon lower bounds: Clopper-Pearson conversion, one-run audit statistics, consistency check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from attacks.audit import (
    audit_canary_scores,
    check_consistency,
    check_counts,
    clopper_pearson,
    default_guess_counts,
    epsilon_from_rates,
    epsilon_lower_bound,
    epsilon_lower_bound_from_scores,
    one_run_epsilon_lower_bound,
    one_run_p_value,
)
from securetrain.errors import AttackError

# ---------------------------------------------------------------- Clopper-Pearson conversion


def test_hand_computed_bound_at_the_extremes():
    # 100/100 members caught, 0/100 non-members flagged, alpha 0.05 split in two one-sided 0.025 limits:
    # TPR >= 0.025^(1/100) = 0.963783, FPR <= 1 - 0.025^(1/100) = 0.036217, eps >= log(0.963783/0.036217)
    b = epsilon_lower_bound(tp=100, n_pos=100, fp=0, n_neg=100, delta=0.0, alpha=0.05)
    assert b.tpr_low == pytest.approx(0.963783, abs=1e-6)
    assert b.fpr_high == pytest.approx(0.036217, abs=1e-6)
    assert b.epsilon == pytest.approx(3.28130, abs=1e-4)
    assert b.confidence == pytest.approx(0.95)
    # delta lowers it: log((0.963783 - 0.01) / 0.036217)
    b2 = epsilon_lower_bound(tp=100, n_pos=100, fp=0, n_neg=100, delta=0.01, alpha=0.05)
    assert b2.epsilon == pytest.approx(math.log((0.963783 - 0.01) / 0.036217), abs=1e-4)


def test_hand_computed_point_estimates():
    assert epsilon_from_rates(tpr=0.5, fpr=0.05, delta=0.0) == pytest.approx(math.log(10))
    # the second inequality: 1 - FPR <= e^eps (1 - TPR) + delta -> log(0.9 / 0.1)
    assert epsilon_from_rates(tpr=0.9, fpr=0.1, delta=0.0) == pytest.approx(math.log(9))
    assert epsilon_from_rates(tpr=0.3, fpr=0.3, delta=0.0) == 0.0
    assert epsilon_from_rates(tpr=0.5, fpr=0.0, delta=0.0) == math.inf
    # delta 0.5 leaves TPR - delta = 0 on the first side; the second: log((1 - 0.05 - 0.5) / 0.5) < 0 -> 0
    assert epsilon_from_rates(tpr=0.5, fpr=0.05, delta=0.5) == 0.0


def test_clopper_pearson_matches_binomial_tails():
    lo, hi = clopper_pearson(30, 100, alpha=0.1)
    # exact limits: P[Bin(100, lo) >= 30] = 0.05 and P[Bin(100, hi) <= 30] = 0.05
    assert binom.sf(29, 100, lo) == pytest.approx(0.05, abs=1e-9)
    assert binom.cdf(30, 100, hi) == pytest.approx(0.05, abs=1e-9)
    assert clopper_pearson(0, 10, 0.1) == (0.0, pytest.approx(1 - 0.05**0.1))
    assert clopper_pearson(10, 10, 0.1) == (pytest.approx(0.05**0.1), 1.0)


def test_bound_is_valid_for_a_mechanism_of_known_epsilon():
    # Randomized response at eps = 1: the best test has TPR = e/(1+e), FPR = 1/(1+e), exactly eps = 1.
    # The 95% lower bound may exceed 1 in at most 5% of repetitions: of 1000, at most 50 expected
    # (70 leaves room for sampling noise; a bound without confidence limits exceeds it about half the time).
    rng = np.random.default_rng(0)
    eps, n = 1.0, 500
    tpr, fpr = math.e / (1 + math.e), 1 / (1 + math.e)
    over = naive = 0
    for _ in range(1000):
        tp, fp = int(rng.binomial(n, tpr)), int(rng.binomial(n, fpr))
        over += epsilon_lower_bound(tp=tp, n_pos=n, fp=fp, n_neg=n, delta=0.0).epsilon > eps
        naive += epsilon_from_rates(tp / n, fp / n) > eps
    assert over <= 70
    assert naive > 300  # the check above can fail: point estimates would
    # ... and it is not vacuous: with many trials it gets close to the truth
    big = epsilon_lower_bound(tp=int(tpr * 100_000), n_pos=100_000, fp=int(fpr * 100_000), n_neg=100_000, delta=0.0)
    assert 0.95 < big.epsilon <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            dict(tp=1, n_pos=0, fp=0, n_neg=5),
            r"the number of trials must be positive, got 0; an empty set gives no bound",
        ),
        (dict(tp=6, n_pos=5, fp=0, n_neg=5), r"count 6 is outside \[0, 5\]"),
        (dict(tp=1, n_pos=5, fp=-1, n_neg=5), r"count -1 is outside \[0, 5\]"),
        (dict(tp=1, n_pos=5, fp=0, n_neg=5, delta=1.0), r"delta must be in \[0, 1\), got 1.0"),
        (dict(tp=1, n_pos=5, fp=0, n_neg=5, delta=-0.1), r"delta must be in \[0, 1\), got -0.1"),
        (dict(tp=1, n_pos=5, fp=0, n_neg=5, alpha=0.0), r"alpha \(1 - confidence\) must be in \(0, 1\), got 0.0"),
    ],
)
def test_bad_counts_are_refused(kwargs, message):
    kwargs.setdefault("delta", 1e-5)
    with pytest.raises(AttackError, match=message):
        epsilon_lower_bound(**kwargs)


def test_rates_outside_unit_interval_are_refused():
    with pytest.raises(AttackError, match=r"FPR must be in \[0, 1\], got 1.5"):
        epsilon_from_rates(tpr=0.5, fpr=1.5)


def test_bound_from_scores_selects_on_one_half_and_counts_on_the_other():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(3, 1, 400), rng.normal(0, 1, 400)
    b = epsilon_lower_bound_from_scores(pos, neg, delta=1e-5, seed=1)
    assert (b.n_pos, b.n_neg) == (200, 200)
    assert b.threshold is not None and math.isfinite(b.threshold)
    assert 1.0 < b.epsilon < 6.0
    assert b.epsilon == epsilon_lower_bound_from_scores(pos, neg, delta=1e-5, seed=1).epsilon  # deterministic
    # identical distributions give (almost always) nothing
    same = epsilon_lower_bound_from_scores(rng.normal(0, 1, 400), rng.normal(0, 1, 400), delta=1e-5, seed=0)
    assert same.epsilon < 0.5


def test_bound_from_scores_needs_two_of_each():
    with pytest.raises(AttackError, match="needs at least 2 members and 2 non-members, got 1 and 3"):
        epsilon_lower_bound_from_scores([1.0], [0.0, 0.1, 0.2], delta=0.0)
    with pytest.raises(AttackError, match="member scores is empty"):
        epsilon_lower_bound_from_scores([], [0.0, 0.1], delta=0.0)


# ---------------------------------------------------------------- one-run audit (Steinke et al. 2023)


def test_one_run_hand_computed_case():
    # 50 guesses, all right, delta 0: p-value q^50 = 0.05 -> q = 0.05^(1/50), eps = log(q / (1 - q))
    q = 0.05 ** (1 / 50)
    assert one_run_epsilon_lower_bound(100, 50, 50, delta=0.0, alpha=0.05) == pytest.approx(
        math.log(q / (1 - q)), abs=1e-6
    )
    assert one_run_epsilon_lower_bound(100, 50, 50, delta=0.0, alpha=0.05) == pytest.approx(2.7847, abs=1e-4)


def test_one_run_p_value_at_zero_epsilon_is_a_fair_coin_tail():
    assert one_run_p_value(20, 20, 14, 0.0, 0.0) == pytest.approx(binom.sf(13, 20, 0.5))
    assert one_run_p_value(20, 20, 0, 1.0, 0.0) == 1.0


def test_delta_makes_the_bound_smaller():
    no_delta = one_run_epsilon_lower_bound(1000, 200, 170, delta=0.0)
    with_delta = one_run_epsilon_lower_bound(1000, 200, 170, delta=1e-4)
    assert 0 < with_delta < no_delta
    assert one_run_p_value(1000, 200, 170, 1.0, 1e-4) > one_run_p_value(1000, 200, 170, 1.0, 0.0)


def test_one_run_bound_is_valid_for_a_mechanism_of_known_epsilon():
    # Each guess right with probability e/(1+e) (randomized response at eps = 1): the bound may exceed 1
    # in at most 5% of runs (50 of 1000 expected at most; 70 leaves room for sampling noise).
    rng = np.random.default_rng(0)
    q = math.e / (1 + math.e)
    over = sum(one_run_epsilon_lower_bound(400, 200, int(rng.binomial(200, q)), delta=0.0) > 1.0 for _ in range(1000))
    assert over <= 70


def test_chance_guesses_give_no_bound():
    assert one_run_epsilon_lower_bound(200, 100, 50, delta=1e-5) == 0.0


@pytest.mark.parametrize(
    ("m", "r", "v", "message"),
    [
        (0, 0, 0, "the one-run audit needs at least one canary, got m=0"),
        (10, 5, 6, "need 0 <= correct guesses <= guesses <= canaries, got v=6, r=5, m=10"),
        (10, 11, 3, "need 0 <= correct guesses <= guesses <= canaries, got v=3, r=11, m=10"),
    ],
)
def test_one_run_bad_counts_are_refused(m, r, v, message):
    with pytest.raises(AttackError, match=message):
        one_run_epsilon_lower_bound(m, r, v, delta=0.0)


def test_canary_scores_hand_case_and_bonferroni():
    included = np.array([True, False] * 20)
    scores = np.where(included, 1.0, -1.0) + np.linspace(0, 0.1, 40)
    one = audit_canary_scores(scores, included, delta=0.0, alpha=0.05, guess_counts=(10,))
    q = 0.05 ** (1 / 20)
    assert (one.guesses, one.correct) == (20, 20)
    assert one.epsilon_lower_bound == pytest.approx(math.log(q / (1 - q)), abs=1e-6)
    # with two guess counts each gets alpha / 2; k=20 guesses all 40 right
    two = audit_canary_scores(scores, included, delta=0.0, alpha=0.05, guess_counts=(10, 20))
    q40 = 0.025 ** (1 / 40)
    assert (two.guesses, two.correct, two.k) == (40, 40, 20)
    assert two.epsilon_lower_bound == pytest.approx(math.log(q40 / (1 - q40)), abs=1e-6)
    d = two.to_dict()
    assert d["canaries"] == 40 and d["included"] == 20 and d["accuracy"] == 1.0


def test_random_canary_scores_give_small_bounds():
    rng = np.random.default_rng(3)
    bounds = [
        audit_canary_scores(rng.normal(size=200), rng.random(200) < 0.5, delta=1e-5).epsilon_lower_bound
        for _ in range(40)
    ]
    assert sum(b > 0 for b in bounds) <= 4


def test_default_guess_counts():
    assert default_guess_counts(200) == (10, 20, 40, 100)
    assert default_guess_counts(4) == (1, 2)
    assert default_guess_counts(2) == (1,)


def test_bad_canary_inputs_are_refused():
    with pytest.raises(AttackError, match="included must have one entry per canary score"):
        audit_canary_scores(np.zeros(4), np.zeros(3, dtype=bool), delta=0.0)
    with pytest.raises(AttackError, match="the canary audit needs at least 2 canaries, got 1"):
        audit_canary_scores(np.zeros(1), np.zeros(1, dtype=bool), delta=0.0)
    with pytest.raises(AttackError, match=r"guess counts must be between 1 and m/2 = 2 per side, got \(3,\)"):
        audit_canary_scores(np.zeros(4), np.zeros(4, dtype=bool), delta=0.0, guess_counts=(3,))
    with pytest.raises(AttackError, match="canary scores is empty"):
        audit_canary_scores(np.zeros(0), np.zeros(0, dtype=bool), delta=0.0)


# ---------------------------------------------------------------- consistency check


def test_planted_accounting_bug_is_flagged_from_counts():
    # claimed eps 0.1 (delta 1e-5); the attack catches 60/100 members at 5/100 non-members
    c = check_counts(0.1, 1e-5, tp=60, n_pos=100, fp=5, n_neg=100, alpha=0.05)
    assert c.violated
    assert c.lower_bound == pytest.approx(1.4831, abs=1e-3)
    assert c.explanation.startswith(
        "empirical lower bound 1.483 (counts, 95% confidence) exceeds the reported epsilon 0.1"
    )
    assert "check the privacy accounting" in c.explanation


def test_consistent_claim_is_not_flagged():
    c = check_counts(3.0, 1e-5, tp=60, n_pos=100, fp=5, n_neg=100)
    assert not c.violated
    assert "does not exceed the reported epsilon 3" in c.explanation
    assert "never prove it" in c.explanation
    # a bound exactly at the claim is no violation
    assert not check_consistency(1.0, 1e-5, {"a": 1.0}, confidence=0.95).violated


def test_no_positive_bound_says_so():
    c = check_consistency(1.0, 1e-5, {"loss": 0.0, "canary": 0.0}, confidence=0.95)
    assert not c.violated and c.source is None and c.lower_bound == 0.0
    assert c.explanation == (
        "no measurement (loss, canary) gives a positive lower bound at 95% confidence: consistent with the "
        "reported epsilon 1 at delta 1e-05 (an audit can refute a guarantee, never prove it)"
    )
    # a claim of exactly 0 is refuted by any positive bound
    assert check_consistency(0.0, 1e-5, {"canary": 0.01}, confidence=0.95).violated


def test_a_weak_attack_cannot_refute_a_small_claim():
    # 12/100 vs 8/100: noise; a correct eps = 0.1 claim survives
    assert not check_counts(0.1, 1e-5, tp=12, n_pos=100, fp=8, n_neg=100).violated


def test_the_largest_bound_decides():
    c = check_consistency(0.5, 1e-5, {"loss": 0.2, "canary": 0.9, "lira": 0.0}, confidence=0.95)
    assert c.violated and c.source == "canary" and c.lower_bound == 0.9
    assert c.to_dict()["violated"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1.0, 1e-5, {"a": 0.1}), "the reported epsilon must be a non-negative number, got -1.0"),
        ((float("nan"), 1e-5, {"a": 0.1}), "the reported epsilon must be a non-negative number, got nan"),
        ((1.0, 2.0, {"a": 0.1}), r"delta must be in \[0, 1\), got 2.0"),
        ((1.0, 1e-5, {}), "no lower bound to compare with"),
        ((1.0, 1e-5, {"a": -0.1}), "lower bound 'a' must be a non-negative number, got -0.1"),
    ],
)
def test_bad_consistency_inputs_are_refused(args, message):
    with pytest.raises(AttackError, match=message):
        check_consistency(*args, confidence=0.95)
    with pytest.raises(AttackError, match=r"confidence must be in \(0, 1\), got 1.0"):
        check_consistency(1.0, 1e-5, {"a": 0.1}, confidence=1.0)
