"""``audit_membership_run`` on real run directories: report section, ROC plot, determinism, planted bugs, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

import securetrain
from attacks.membership import TrainingRecipe, audit_membership_run, build_defense, register_defense_builder
from securetrain.errors import AttackError, CheckpointError, UnknownNameError
from securetrain.report import Report, check_section
from securetrain.training import DEFENSES, Defense, TrainConfig

SCHEMA_KEYS = {"attack", "auc", "tpr_at_fpr", "advantage", "epsilon_lower_bound"}


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory) -> Path:
    """A non-private breast-cancer MLP trained long enough to memorise (20 epochs)."""
    d = tmp_path_factory.mktemp("bc_run")
    securetrain.train(TrainConfig(data="breast_cancer", epochs=20, progress=False), d, write_html=False)
    return d


@pytest.fixture(scope="module")
def bc_audit(bc_run) -> dict[str, Any]:
    return audit_membership_run(bc_run, shadow_models=2, seed=0)


def _claim(src: Path, dst: Path, epsilon: float, delta: float = 1e-5) -> Path:
    """Copy a run and make its report claim (epsilon, delta)-DP: the planted accounting bug."""
    shutil.copytree(src, dst)
    report = Report.from_json(dst)
    report.privacy = {
        "epsilon": epsilon,
        "delta": delta,
        "accountant": "prv",
        "noise_multiplier": 5.0,
        "max_grad_norm": 1.0,
        "sample_rate": 0.15,
        "steps": 140,
        "poisson_sampling": True,
        "valid": True,
        "warnings": [],
    }
    report.write_json(dst / "report.json")
    return dst


def test_audit_run_fills_the_membership_section(bc_audit):
    out = bc_audit
    assert SCHEMA_KEYS <= set(out)
    check_section("membership", out)
    assert set(out["tpr_at_fpr"]) == {"0.001", "0.01"}
    assert set(out["attacks"]) == {"loss", "confidence", "entropy", "lira-offline", "lira-online"}
    assert out["attack"] in out["attacks"]
    assert out["auc"] == out["attacks"][out["attack"]]["auc"]
    assert (out["members"], out["nonmembers"]) == tuple(
        len(securetrain.data.load("breast_cancer", s)[1]) for s in ("train", "test")
    )
    assert out["shadow_models"] == 2 and out["seed"] == 0 and out["delta"] == 1e-5
    # the headline bound is the largest of the per-attack and canary bounds
    per_attack = [a["epsilon_lower_bound"] for a in out["attacks"].values()]
    assert out["epsilon_lower_bound"] == max(per_attack + [out["canary"]["epsilon_lower_bound"]])
    assert out["canary"]["canaries"] == 143  # capped at the test split
    assert any("143 canaries" in n for n in out["notes"])
    # a non-private run has no claim to check
    assert "privacy_violated" not in out and "consistency" not in out
    json.dumps(out.to_dict())  # JSON-ready


def test_memorising_run_leaks_through_canaries(bc_audit):
    # 20 epochs on the 362 training examples memorise mislabelled canaries: the one-run audit proves epsilon > 0.5
    assert bc_audit["canary"]["epsilon_lower_bound"] > 0.5
    assert bc_audit["canary"]["correct"] > bc_audit["canary"]["guesses"] / 2


def test_roc_curves_are_downsampled_and_plot_on_log_axes(bc_run, bc_audit):
    for roc in bc_audit["roc_curves"].values():
        assert 2 <= len(roc["fpr"]) == len(roc["tpr"]) <= 300
        assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    from securetrain.report import PLOTS

    report = Report.from_json(bc_run)
    report.membership = bc_audit
    report.validate()
    fig = PLOTS.get("membership")[1](report.to_dict())
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.get_lines()) == len(bc_audit["roc_curves"]) + 1  # one per attack + chance


def test_audit_run_is_deterministic_under_a_seed(bc_run, bc_audit):
    again = audit_membership_run(bc_run, shadow_models=2, seed=0)
    a, b = dict(bc_audit), dict(again)
    a.pop("timing_s"), b.pop("timing_s")
    assert a == b
    other = audit_membership_run(bc_run, shadow_models=2, seed=1)
    assert other["attacks"]["lira-online"] != bc_audit["attacks"]["lira-online"]


def test_planted_accounting_bug_is_flagged(bc_run, tmp_path):
    # The model was trained without any noise; its report claims epsilon 0.1.
    bad = _claim(bc_run, tmp_path / "claims_0.1", 0.1)
    out = audit_membership_run(bad, shadow_models=2, seed=0)
    assert out["privacy_violated"] is True
    assert out["epsilon_lower_bound"] > 0.1
    assert out["consistency"].startswith(f"empirical lower bound {out['epsilon_lower_bound']:.3f}")
    assert "exceeds the reported epsilon 0.1 at delta 1e-05" in out["consistency"]
    assert out["consistency_check"]["source"] == out["epsilon_lower_bound_source"]


def test_honest_large_claim_is_not_flagged(bc_run, tmp_path):
    ok = _claim(bc_run, tmp_path / "claims_50", 50.0, delta=1e-6)
    out = audit_membership_run(ok, shadow_models=2, seed=0)
    assert out["privacy_violated"] is False
    assert out["delta"] == 1e-6  # the run's own delta is used
    assert "does not exceed the reported epsilon 50 at delta 1e-06" in out["consistency"]


def test_one_shadow_model_skips_online_lira(bc_run):
    out = audit_membership_run(
        bc_run, shadow_models=1, seed=0, canaries=0, attacks=("loss", "lira-offline", "lira-online")
    )
    assert set(out["attacks"]) == {"loss", "lira-offline"}
    assert "lira-online skipped: it needs at least 2 shadow models" in out["notes"]
    assert out["canary"] is None
    assert out["attacks"]["lira-offline"]["notes"][0].endswith("scored against the mean of all OUT observations")


def test_threshold_attacks_alone_train_no_shadow_model(bc_run, monkeypatch):
    import attacks.membership.run_audit as ra

    def boom(*a, **k):
        raise AssertionError("no shadow model should be trained")

    monkeypatch.setattr(ra, "train_shadow_models", boom)
    out = audit_membership_run(bc_run, shadow_models=3, seed=0, canaries=0, attacks=("loss", "entropy"))
    assert out["shadow_models"] == 0 and set(out["attacks"]) == {"loss", "entropy"}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(shadow_models=0), AttackError, "the number of shadow models must be at least 1, got 0"),
        (dict(shadow_models=-2), AttackError, "the number of shadow models must be at least 1, got -2"),
        (dict(canaries=1), AttackError, "canaries must be 0 .skip the canary audit. or at least 2, got 1"),
        (dict(alpha=1.5), AttackError, r"alpha \(1 - confidence\) must be in \(0, 1\), got 1.5"),
        (dict(attacks=()), AttackError, "no membership attack selected; choose from: confidence"),
        (dict(attacks=("loss", "lira")), UnknownNameError, "unknown membership attack 'lira'"),
        (dict(fprs=(0.001, 2.0)), AttackError, r"FPR must be in \(0, 1\), got 2.0"),
        (dict(shadow_models=1, attacks=("lira-online",)), AttackError, "lira-online needs at least 2 shadow models"),
        (dict(attacks="lira"), UnknownNameError, "unknown membership attack 'lira'"),
        (dict(delta=1.0), AttackError, r"delta must be in \[0, 1\), got 1.0"),
    ],
)
def test_bad_arguments_are_refused(bc_run, kwargs, error, message):
    kwargs = {"shadow_models": 2, "seed": 0, **kwargs}
    with pytest.raises(error, match=message):
        audit_membership_run(bc_run, **kwargs)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(CheckpointError, match="is not a securetrain run directory"):
        audit_membership_run(tmp_path, shadow_models=2, seed=0)


# ---------------------------------------------------------------- the recipe and its defenses


class _Smoothing(Defense):
    """A loss-transform defense (label smoothing) that counts how often it is built."""

    name: ClassVar[str] = "test-smoothing"
    built: ClassVar[list[dict]] = []

    def __init__(self, smoothing: float = 0.1) -> None:
        self.smoothing = smoothing

    def wrap_loss(self, loss_fn):
        s = self.smoothing

        def smoothed(model, x, y):
            return torch.nn.functional.cross_entropy(model(x), y, reduction="none", label_smoothing=s)

        return smoothed

    def config(self):
        return {"name": self.name, "smoothing": self.smoothing}


class _CountingSmoothing(_Smoothing):
    """Registered in DEFENSES for the test; records every rebuild from a config."""

    @classmethod
    def from_config(cls, cfg):
        _Smoothing.built.append(dict(cfg))
        return _Smoothing(cfg["smoothing"])


@pytest.fixture
def smoothing_registered():
    _Smoothing.built.clear()
    with DEFENSES.temporarily("test-smoothing", _CountingSmoothing):
        yield


def test_shadow_models_use_the_runs_defenses(tmp_path, smoothing_registered):
    securetrain.train(
        TrainConfig(data="breast_cancer", epochs=2, progress=False),
        tmp_path,
        defenses=[_Smoothing(0.3)],
        write_html=False,
    )
    out = audit_membership_run(tmp_path, shadow_models=3, seed=0, canaries=10)
    # 3 shadow models + 1 canary run, each rebuilt from config.json with the run's settings
    assert _Smoothing.built == [{"name": "test-smoothing", "smoothing": 0.3}] * 4
    assert out["shadow_models"] == 3


def test_unknown_defense_cannot_be_rebuilt():
    with pytest.raises(
        AttackError,
        match=r"cannot rebuild defense 'mystery' for shadow models; register its class "
        r"with securetrain.training.DEFENSES.add\('mystery', cls\)",
    ):
        build_defense({"name": "mystery"})
    with pytest.raises(AttackError, match="a defense config must be a dict with a 'name'"):
        build_defense({"epsilon": 1.0})


def test_a_config_the_defense_refuses_is_a_clear_error():
    with pytest.raises(
        AttackError,
        match=r"cannot rebuild defense 'adversarial' for shadow models: an adversarial-training "
        r"config needs a 'method'",
    ):
        build_defense({"name": "adversarial", "epsilon": 0.1})


def test_deprecated_builders_still_work_and_must_return_a_defense():
    try:
        with pytest.deprecated_call(match="register_defense_builder is deprecated"):
            register_defense_builder("test-bad", lambda cfg: object())
        with pytest.raises(AttackError, match="the builder for 'test-bad' returned object, not a Defense"):
            build_defense({"name": "test-bad"})
    finally:
        DEFENSES.remove("test-bad")


def test_recipe_from_config_checks_the_config(bc_run):
    cfg = json.loads((bc_run / "config.json").read_text())
    recipe = TrainingRecipe.from_config(cfg)
    assert (recipe.model_name, recipe.num_classes, recipe.input_shape) == ("mlp", 2, (30,))
    assert recipe.train_config.epochs == 20 and not recipe.private
    custom = {**cfg, "model": {**cfg["model"], "zoo": False, "name": "MyNet"}}
    with pytest.raises(AttackError, match=r"cannot train shadow models for a run with a custom model \(MyNet\)"):
        TrainingRecipe.from_config(custom)
    with pytest.raises(AttackError, match="a run config needs 'data', 'model' and 'train' sections; missing 'train'"):
        TrainingRecipe.from_config({"data": cfg["data"], "model": cfg["model"]})
