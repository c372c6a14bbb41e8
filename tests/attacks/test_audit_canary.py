"""The one-run canary audit end to end: a memorising recipe leaks, a data-independent one cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.audit import canary_audit, make_canaries
from securetrain.errors import AttackError
from securetrain.models import build_model
from securetrain.training import TrainConfig, fit


def _memorising_recipe(xy, seed):
    torch.manual_seed(seed)
    model = build_model("mlp", (1, 8, 8), 10, hidden=(64,))
    cfg = TrainConfig(epochs=40, batch_size=64, lr=5e-3, seed=seed, progress=False)
    return fit(model, xy, None, cfg, num_classes=10, bounds=(0.0, 1.0)).model.eval()


def _constant_recipe(xy, seed):
    """Ignores its data: a 0-DP mechanism. No audit may find epsilon > 0 except by chance (5%)."""
    torch.manual_seed(1234)
    return build_model("mlp", (1, 8, 8), 10, hidden=(8,)).eval()


@pytest.fixture(scope="module")
def digits_small():
    from securetrain import data

    x, y = data.load("digits", "train")
    tx, ty = data.load("digits", "test")
    return (x[:300], y[:300]), (tx, ty)


def test_memorising_recipe_is_caught(digits_small):
    train, test = digits_small
    canaries = make_canaries(*test, 10, 100, seed=0)
    result = canary_audit(_memorising_recipe, train, canaries, delta=1e-5, seed=0)
    assert result.m == 100
    assert result.correct / result.guesses > 0.75
    assert result.epsilon_lower_bound > 0.8
    again = canary_audit(_memorising_recipe, train, canaries, delta=1e-5, seed=0)
    assert again.epsilon_lower_bound == result.epsilon_lower_bound  # deterministic under a seed
    assert np.array_equal(again.included, result.included)


def test_data_independent_recipe_gives_no_bound(digits_small):
    train, test = digits_small
    canaries = make_canaries(*test, 10, 100, seed=0)
    bounds = [canary_audit(_constant_recipe, train, canaries, delta=1e-5, seed=s).epsilon_lower_bound for s in range(5)]
    assert sum(b > 0 for b in bounds) <= 1


def test_canaries_that_are_training_data_are_refused(digits_small):
    train, _ = digits_small
    with pytest.raises(AttackError, match=r"members and non-members overlap: 10 example\(s\) appear in both sets"):
        canary_audit(_constant_recipe, train, (train[0][:10], train[1][:10]), delta=1e-5)


def test_empty_canary_set_is_refused(digits_small):
    train, test = digits_small
    with pytest.raises(AttackError, match="the canaries is empty"):
        canary_audit(_constant_recipe, train, (test[0][:0], test[1][:0]), delta=1e-5)


def test_make_canaries_mislabels_every_canary(digits_small):
    _, (x, y) = digits_small
    cx, cy = make_canaries(x, y, 10, 50, seed=3)
    assert cx.shape == (50, 1, 8, 8) and cy.shape == (50,)
    originals = {tuple(r.flatten().tolist()): int(l) for r, l in zip(x, y)}
    assert all(originals[tuple(r.flatten().tolist())] != int(l) for r, l in zip(cx, cy))
    assert int(cy.min()) >= 0 and int(cy.max()) <= 9
    kept = make_canaries(x, y, 10, 50, seed=3, mislabel=False)[1]
    assert all(originals[tuple(r.flatten().tolist())] == int(l) for r, l in zip(cx, kept))


@pytest.mark.parametrize("beyond", [False, True], ids=["one", "one-more-than-the-candidates"])
def test_canary_count_out_of_range_is_refused(digits_small, beyond):
    _, (x, y) = digits_small
    n = int(x.shape[0])
    m = n + 1 if beyond else 1
    with pytest.raises(
        AttackError, match=f"the number of canaries must be between 2 and {n} .the candidates., got {m}"
    ):
        make_canaries(x, y, 10, m)
