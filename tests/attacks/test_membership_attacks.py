"""Membership attacks: threshold attacks, shadow models, LiRA online/offline, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.membership import (
    MEMBERSHIP_ATTACKS,
    ConfidenceThreshold,
    EntropyThreshold,
    LiRA,
    LossThreshold,
    ModifiedEntropyThreshold,
    ShadowSet,
    get_membership_attack,
    inclusion_matrix,
    lira_scores,
    train_shadow_models,
)
from securetrain.errors import AttackError, UnknownNameError
from securetrain.models import build_model
from securetrain.training import TrainConfig, fit

# ---------------------------------------------------------------- a deliberately overfit target

N_MEMBERS = 200
EPOCHS = 60


def _mlp_recipe(epochs: int):
    """Digits MLP trained to memorise: small data, many epochs, no regularisation."""

    def recipe(xy, seed):
        torch.manual_seed(seed)
        model = build_model("mlp", (1, 8, 8), 10, hidden=(64,))
        cfg = TrainConfig(epochs=epochs, batch_size=64, lr=5e-3, seed=seed, progress=False)
        return fit(model, xy, None, cfg, num_classes=10, bounds=(0.0, 1.0)).model.eval()

    return recipe


@pytest.fixture(scope="module")
def overfit():
    """400 digits: the target trains on the first 200 (members); 8 shadow models on random halves."""
    from securetrain import data

    x, y = data.load("digits", "train")
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[: 2 * N_MEMBERS]
    px, py = x[idx], y[idx]
    recipe = _mlp_recipe(EPOCHS)
    target = recipe((px[:N_MEMBERS], py[:N_MEMBERS]), 12345)
    shadows = train_shadow_models(recipe, (px, py), 8, seed=0)
    members, nonmembers = (px[:N_MEMBERS], py[:N_MEMBERS]), (px[N_MEMBERS:], py[N_MEMBERS:])
    results = {
        name: get_membership_attack(name, shadows)(target, members, nonmembers) for name in MEMBERSHIP_ATTACKS.names()
    }
    return {"target": target, "shadows": shadows, "members": members, "nonmembers": nonmembers, "results": results}


def test_overfit_target_is_really_overfit(overfit):
    from securetrain.training import evaluate

    train_acc = evaluate(overfit["target"], *overfit["members"])["accuracy"]
    test_acc = evaluate(overfit["target"], *overfit["nonmembers"])["accuracy"]
    assert train_acc == 1.0
    assert test_acc < 0.97


def test_attacks_find_membership_on_overfit_model(overfit):
    r = overfit["results"]
    assert r["loss"].metrics.auc > 0.55
    assert r["confidence"].metrics.auc > 0.55
    assert r["lira-online"].metrics.auc > 0.65
    assert r["lira-offline"].metrics.auc > 0.62
    for res in r.values():
        assert res.metrics.n_members == N_MEMBERS and res.metrics.n_nonmembers == N_MEMBERS


def test_lira_beats_loss_threshold_at_low_fpr(overfit):
    r = overfit["results"]
    loss = r["loss"].metrics.tpr_at_fpr
    online = r["lira-online"].metrics.tpr_at_fpr
    offline = r["lira-offline"].metrics.tpr_at_fpr
    assert online[0.01] >= loss[0.01] + 0.03
    assert online[0.001] > loss[0.001]
    assert offline[0.01] > loss[0.01]
    assert r["lira-online"].metrics.auc > r["loss"].metrics.auc + 0.05


def test_loss_and_confidence_rank_identically(overfit):
    # -loss = log p_y and confidence = p_y are monotone in each other: same ROC
    r = overfit["results"]
    assert r["loss"].metrics.auc == pytest.approx(r["confidence"].metrics.auc, abs=1e-9)


def test_attack_does_not_mutate_inputs_and_restores_mode():
    torch.manual_seed(0)
    model = build_model("mlp", (30,), 2).train()
    members = (torch.randn(20, 30), torch.randint(0, 2, (20,)))
    nonmembers = (torch.randn(15, 30), torch.randint(0, 2, (15,)))
    copies = [t.clone() for t in (*members, *nonmembers)]
    params = [p.detach().clone() for p in model.parameters()]
    for attack in (LossThreshold(), ConfidenceThreshold(), EntropyThreshold(), ModifiedEntropyThreshold()):
        result = attack(model, members, nonmembers)
        assert result.member_scores.shape == (20,) and result.nonmember_scores.shape == (15,)
        assert model.training
    for a, b in zip(copies, (*members, *nonmembers)):
        assert torch.equal(a, b)
    for a, b in zip(params, model.parameters()):
        assert torch.equal(a, b)


def _sets():
    x = torch.arange(24, dtype=torch.float32).reshape(8, 3)
    y = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    return x, y


def test_overlapping_members_and_nonmembers_are_refused():
    x, y = _sets()
    model = torch.nn.Linear(3, 2)
    with pytest.raises(AttackError, match=r"members and non-members overlap: 2 example\(s\) appear in both sets"):
        LossThreshold()(model, (x[:5], y[:5]), (x[3:], y[3:]))


def test_same_input_with_other_label_is_not_an_overlap():
    x, y = _sets()
    result = LossThreshold()(torch.nn.Linear(3, 2), (x[:4], y[:4]), (x[:4], 1 - y[:4]))
    assert result.metrics.n_members == 4


@pytest.mark.parametrize("which", ["members", "non-members"])
def test_empty_sets_are_refused(which):
    x, y = _sets()
    empty = (x[:0], y[:0])
    members, nonmembers = (empty, (x, y)) if which == "members" else ((x, y), empty)
    with pytest.raises(AttackError, match=f"^{which} is empty; membership inference needs at least one member"):
        LossThreshold()(torch.nn.Linear(3, 2), members, nonmembers)


def test_mismatched_and_non_tensor_sets_are_refused():
    x, y = _sets()
    with pytest.raises(AttackError, match="members: x has 8 rows but y has 7"):
        LossThreshold()(torch.nn.Linear(3, 2), (x, y[:7]), (x, y))
    with pytest.raises(AttackError, match="non-members must be a pair"):
        LossThreshold()(torch.nn.Linear(3, 2), (x, y), x)


def test_attack_call_checks_fprs():
    x, y = _sets()
    with pytest.raises(AttackError, match=r"FPR must be in \(0, 1\), got 0.0"):
        LossThreshold()(torch.nn.Linear(3, 2), (x[:4], y[:4]), (x[4:], y[4:]), fprs=(0.0,))


# ---------------------------------------------------------------- shadow models


@pytest.mark.parametrize("k", [2, 4, 8])
def test_inclusion_is_balanced_for_even_k(k):
    keep = inclusion_matrix(k, 1000, seed=3)
    assert keep.shape == (k, 1000)
    assert np.all(keep.sum(axis=0) == k // 2)
    # every model sees about half of the pool
    assert np.all(np.abs(keep.mean(axis=1) - 0.5) < 0.1)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_inclusion_for_odd_k_is_about_half(k):
    keep = inclusion_matrix(k, 2000, seed=0)
    counts = keep.sum(axis=0)
    assert set(np.unique(counts)) <= {k // 2, k // 2 + 1}
    assert np.all(np.abs(keep.mean(axis=1) - 0.5) < 0.1)


def test_inclusion_is_deterministic_under_seed():
    assert np.array_equal(inclusion_matrix(4, 50, seed=7), inclusion_matrix(4, 50, seed=7))
    assert not np.array_equal(inclusion_matrix(4, 50, seed=7), inclusion_matrix(4, 50, seed=8))


@pytest.mark.parametrize("k", [0, -3])
def test_fewer_than_one_shadow_model_is_refused(k):
    with pytest.raises(AttackError, match=f"the number of shadow models must be at least 1, got {k}"):
        inclusion_matrix(k, 10, seed=0)
    with pytest.raises(AttackError, match=f"the number of shadow models must be at least 1, got {k}"):
        train_shadow_models(lambda xy, s: torch.nn.Linear(3, 2), _sets(), k)


@pytest.mark.parametrize("k", [2.0, True, "4"])
def test_non_integer_shadow_model_count_is_refused(k):
    with pytest.raises(AttackError, match="the number of shadow models must be an integer"):
        train_shadow_models(lambda xy, s: torch.nn.Linear(3, 2), _sets(), k)


def test_empty_pool_is_refused():
    x, y = _sets()
    with pytest.raises(AttackError, match="the shadow-model pool is empty"):
        train_shadow_models(lambda xy, s: torch.nn.Linear(3, 2), (x[:0], y[:0]), 2)


def test_shadow_models_train_on_their_half_with_distinct_seeds():
    seen: list[tuple[int, int]] = []

    def recipe(xy, seed):
        seen.append((int(xy[0].shape[0]), seed))
        return torch.nn.Linear(3, 2)

    x, y = _sets()
    shadows = train_shadow_models(recipe, (x, y), 4, seed=2)
    assert [n for n, _ in seen] == shadows.keep.sum(axis=1).tolist()
    assert len({s for _, s in seen}) == 4 and shadows.seeds == [s for _, s in seen]
    # inclusion looked up by content; an example outside the pool was seen by no shadow model
    inc = shadows.inclusion(torch.cat([x[:3], x[:1] + 100]), torch.cat([y[:3], y[:1]]))
    assert np.array_equal(inc[:, :3], shadows.keep[:, :3])
    assert not inc[:, 3].any()


# ---------------------------------------------------------------- LiRA on synthetic signals


def _synthetic_lira(k: int, n: int = 400, seed: int = 0):
    """Per-example difficulty mu_i; IN signals shifted by +1, noise 0.3; half the targets are members."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 3, n)  # hard and easy examples: the loss threshold cannot calibrate this
    keep = inclusion_matrix(k, n, seed=seed)
    shadow = mu[None, :] + keep * 1.0 + rng.normal(0, 0.3, (k, n))
    member = np.zeros(n, dtype=bool)
    member[: n // 2] = True
    target = mu + member * 1.0 + rng.normal(0, 0.3, n)
    return target, shadow, keep, member


@pytest.mark.parametrize("online", [True, False])
def test_lira_calibrates_per_example(online):
    target, shadow, keep, member = _synthetic_lira(8)
    scores, notes = lira_scores(target, shadow, keep, online=online)
    from attacks.membership import membership_metrics

    lira = membership_metrics(scores[member], scores[~member])
    raw = membership_metrics(target[member], target[~member])  # uncalibrated threshold on the signal
    assert lira.auc > 0.9 > raw.auc
    assert notes == ()


def test_lira_offline_with_one_shadow_model_falls_back_and_says_so():
    target, shadow, keep, member = _synthetic_lira(1)
    scores, notes = lira_scores(target, shadow, keep, online=False)
    assert np.all(np.isfinite(scores))
    assert len(notes) == 1 and "had no OUT shadow model" in notes[0]


def test_online_lira_needs_in_and_out_models():
    target, shadow, keep, _ = _synthetic_lira(1)
    with pytest.raises(AttackError, match="online LiRA needs, for some examples, shadow models that trained on them"):
        lira_scores(target, shadow, keep, online=True)


def test_lira_without_any_out_model_is_refused():
    target, shadow, _, _ = _synthetic_lira(2)
    with pytest.raises(AttackError, match="LiRA has no OUT observation"):
        lira_scores(target, shadow, np.ones_like(shadow, dtype=bool), online=False)


def test_lira_shape_mismatch_is_refused():
    target, shadow, keep, _ = _synthetic_lira(2)
    with pytest.raises(AttackError, match="LiRA needs shadow signals and inclusion of shape"):
        lira_scores(target[:-1], shadow, keep, online=True)


def test_lira_per_example_variance_option_runs():
    target, shadow, keep, member = _synthetic_lira(16)
    scores, _ = lira_scores(target, shadow, keep, online=True, fixed_variance=False)
    from attacks.membership import membership_metrics

    assert membership_metrics(scores[member], scores[~member]).auc > 0.9


def test_lira_needs_a_shadow_set():
    with pytest.raises(AttackError, match="LiRA needs a ShadowSet"):
        LiRA([torch.nn.Linear(2, 2)])  # type: ignore[arg-type]
    with pytest.raises(AttackError, match="lira-online needs shadow models"):
        get_membership_attack("lira-online")


def test_unknown_attack_lists_choices():
    with pytest.raises(UnknownNameError, match="unknown membership attack 'lira'; choose one of: confidence"):
        get_membership_attack("lira")


def test_attacks_are_deterministic_under_a_seed():
    from securetrain import data

    x, y = data.load("breast_cancer", "train")
    recipe = _mlp_recipe_bc()
    runs = []
    for _ in range(2):
        target = recipe((x[:100], y[:100]), 0)
        shadows = train_shadow_models(recipe, (x[:200], y[:200]), 2, seed=5)
        assert isinstance(shadows, ShadowSet)
        res = LiRA(shadows, online=True)(target, (x[:100], y[:100]), (x[100:200], y[100:200]))
        runs.append(res)
    assert np.array_equal(runs[0].member_scores, runs[1].member_scores)
    assert np.array_equal(runs[0].nonmember_scores, runs[1].nonmember_scores)
    assert runs[0].metrics.auc == runs[1].metrics.auc


def _mlp_recipe_bc():
    def recipe(xy, seed):
        torch.manual_seed(seed)
        model = build_model("mlp", (30,), 2, hidden=(16,))
        cfg = TrainConfig(epochs=3, batch_size=32, seed=seed, progress=False)
        return fit(model, xy, None, cfg, num_classes=2).model.eval()

    return recipe
