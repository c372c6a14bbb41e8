"""Membership metrics and signals against hand-computed answers and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from attacks.membership import SIGNALS, RocCurve, membership_metrics, tpr_at_fpr
from securetrain.errors import AttackError


def _pairwise_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUC as the Mann-Whitney statistic: P[member score > non-member score] (+ half ties)."""
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins) / (pos.size * neg.size)


def test_hand_computed_small_case():
    pos = np.array([3.0, 2.0, 1.5])
    neg = np.array([1.0, 0.0, 2.5])
    m = membership_metrics(pos, neg, fprs=(0.01, 0.34, 0.5))
    assert m.auc == pytest.approx(7 / 9)
    # FPR 0: only the 3.0 member is above every non-member -> TPR 1/3; FPR 1/3 (threshold 1.5): TPR 1.
    assert m.tpr_at_fpr[0.01] == pytest.approx(1 / 3)
    assert m.tpr_at_fpr[0.34] == pytest.approx(1.0)
    assert m.tpr_at_fpr[0.5] == pytest.approx(1.0)
    assert m.advantage == pytest.approx(2 / 3)
    assert (m.n_members, m.n_nonmembers) == (3, 3)
    assert m.min_resolvable_fpr == pytest.approx(1 / 3)


def test_auc_matches_mann_whitney_and_sklearn_with_ties():
    rng = np.random.default_rng(1)
    pos = np.round(rng.normal(0.5, 1, 300), 1)
    neg = np.round(rng.normal(0.0, 1, 200), 1)
    m = membership_metrics(pos, neg)
    assert m.auc == pytest.approx(_pairwise_auc(pos, neg), abs=1e-12)
    labels = np.r_[np.ones(300), np.zeros(200)]
    assert m.auc == pytest.approx(roc_auc_score(labels, np.r_[pos, neg]))
    # advantage = max over thresholds of TPR - FPR, checked by brute force
    ts = np.unique(np.r_[pos, neg])
    brute = max(float((pos >= t).mean() - (neg >= t).mean()) for t in ts)
    assert m.advantage == pytest.approx(brute)
    # TPR at 1% FPR by brute force: the best TPR over thresholds whose FPR is <= 1%
    ok = [float((pos >= t).mean()) for t in np.r_[ts, np.inf] if (neg >= t).mean() <= 0.01]
    assert m.tpr_at_fpr[0.01] == pytest.approx(max(ok))


def test_perfect_and_chance_separation():
    perfect = membership_metrics(np.arange(10.0) + 100, np.arange(10.0))
    assert perfect.auc == 1.0 and perfect.advantage == 1.0
    assert perfect.tpr_at_fpr == {0.001: 1.0, 0.01: 1.0}
    rng = np.random.default_rng(0)
    chance = membership_metrics(rng.normal(size=4000), rng.normal(size=4000))
    assert abs(chance.auc - 0.5) < 0.03
    assert chance.tpr_at_fpr[0.01] < 0.03


def test_to_dict_uses_report_keys():
    d = membership_metrics(np.array([1.0, 2.0]), np.array([0.0, 1.5])).to_dict()
    assert set(d["tpr_at_fpr"]) == {"0.001", "0.01"}
    assert set(d) >= {"auc", "advantage", "tpr_at_fpr", "n_members", "n_nonmembers"}


def test_tpr_at_fpr_below_resolution_is_tpr_at_zero_false_positives():
    fpr = np.array([0.0, 0.0, 0.25, 1.0])
    tpr = np.array([0.0, 0.4, 0.8, 1.0])
    assert tpr_at_fpr(fpr, tpr, 0.001) == 0.4
    assert tpr_at_fpr(fpr, tpr, 0.25) == 0.8


def test_roc_downsample_keeps_shape_and_low_fpr():
    rng = np.random.default_rng(2)
    m = membership_metrics(rng.normal(1, 1, 5000), rng.normal(0, 1, 5000))
    full = m.roc
    small = full.downsample(200)
    assert len(small.fpr) <= 200 < len(full.fpr)
    assert small.fpr[0] == 0.0 and small.fpr[-1] == 1.0 and small.tpr[-1] == 1.0
    assert np.all(np.diff(small.fpr) >= 0) and np.all(np.diff(small.tpr) >= 0)
    # every kept point lies on the full curve, and TPR at 1% FPR is unchanged
    for f, t in zip(small.fpr, small.tpr):
        assert t in set(full.tpr[full.fpr == f])
    assert tpr_at_fpr(small.fpr, small.tpr, 0.01) == pytest.approx(m.tpr_at_fpr[0.01])
    d = small.to_dict()
    assert len(d["fpr"]) == len(d["tpr"]) == len(small.fpr)
    assert full.downsample(len(full.fpr)) is full


def test_roc_downsample_rejects_tiny_budgets():
    c = RocCurve(np.linspace(0, 1, 50), np.linspace(0, 1, 50))
    with pytest.raises(ValueError, match="max_points must be at least 4"):
        c.downsample(3)


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, -0.1, float("nan")])
def test_fpr_outside_open_unit_interval_is_refused(bad):
    with pytest.raises(AttackError, match=r"FPR must be in \(0, 1\), got"):
        membership_metrics(np.array([1.0]), np.array([0.0]), fprs=(0.01, bad))


def test_no_fpr_is_refused():
    with pytest.raises(AttackError, match="fprs is empty"):
        membership_metrics(np.array([1.0]), np.array([0.0]), fprs=())


@pytest.mark.parametrize(
    ("pos", "neg", "message"),
    [
        (np.array([]), np.array([0.0]), "member scores is empty"),
        (np.array([1.0]), np.array([]), "non-member scores is empty"),
        (np.array([1.0, np.nan]), np.array([0.0]), "member scores contains 1 non-finite"),
        (np.array([1.0]), np.array([np.inf, 0.0]), "non-member scores contains 1 non-finite"),
        (np.ones((2, 2)), np.array([0.0]), "member scores must be a 1-D array"),
    ],
)
def test_bad_scores_are_refused(pos, neg, message):
    with pytest.raises(AttackError, match=message):
        membership_metrics(pos, neg)


def test_signals_match_their_definitions():
    torch.manual_seed(0)
    logits = torch.randn(50, 5) * 3
    y = torch.randint(0, 5, (50,))
    p = F.softmax(logits.double(), 1)
    py = p[torch.arange(50), y]
    np.testing.assert_allclose(
        SIGNALS.get("loss")(logits, y), F.cross_entropy(logits.double(), y, reduction="none").numpy()
    )
    np.testing.assert_allclose(SIGNALS.get("confidence")(logits, y), py.numpy())
    np.testing.assert_allclose(SIGNALS.get("scaled_logit")(logits, y), torch.log(py / (1 - py)).numpy(), rtol=1e-9)
    np.testing.assert_allclose(SIGNALS.get("entropy")(logits, y), (-(p * p.log()).sum(1)).numpy())
    mentr = []
    for i in range(50):
        row = p[i].numpy()
        j = int(y[i])
        mentr.append(-(1 - row[j]) * math.log(row[j]) - sum(row[k] * math.log(1 - row[k]) for k in range(5) if k != j))
    np.testing.assert_allclose(SIGNALS.get("modified_entropy")(logits, y), mentr, rtol=1e-9)


def test_scaled_logit_is_stable_for_confident_predictions():
    logits = torch.tensor([[60.0, 0.0, 0.0], [0.0, 60.0, 0.0]])
    y = torch.tensor([0, 0])
    out = SIGNALS.get("scaled_logit")(logits, y)
    assert np.all(np.isfinite(out))
    assert out[0] == pytest.approx(60.0 - math.log(2.0))
    assert out[1] == pytest.approx(-60.0, abs=1e-9)
