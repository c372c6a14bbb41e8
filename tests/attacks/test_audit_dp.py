"""Audits of differentially private runs: an honest epsilon survives, a planted accounting bug is caught."""

from __future__ import annotations

from pathlib import Path

import pytest

import securetrain
from attacks.membership import TrainingRecipe, audit_membership_run, build_defense
from defenses.privacy import DifferentialPrivacy
from securetrain.report import Report
from securetrain.training import TrainConfig


@pytest.fixture(scope="module")
def private_run(tmp_path_factory) -> Path:
    """Breast-cancer MLP trained with DP-SGD at epsilon 1, delta 1e-5."""
    d = tmp_path_factory.mktemp("dp_eps1")
    dp = DifferentialPrivacy(epsilon=1.0, delta=1e-5, max_grad_norm=1.0)
    securetrain.train(TrainConfig(data="breast_cancer", epochs=5, progress=False), d, [dp], write_html=False)
    return d


@pytest.fixture(scope="module")
def low_noise_run(tmp_path_factory) -> Path:
    """Trained with noise multiplier 0.05 for 40 epochs: its honest epsilon is in the hundreds."""
    d = tmp_path_factory.mktemp("dp_low_noise")
    dp = DifferentialPrivacy(noise_multiplier=0.05, delta=1e-5, max_grad_norm=1.0, accountant="rdp")
    securetrain.train(TrainConfig(data="breast_cancer", epochs=40, progress=False), d, [dp], write_html=False)
    return d


@pytest.mark.slow  # trains 4 DP models
def test_private_model_at_epsilon_1_is_not_flagged(private_run, monkeypatch):
    import attacks.membership.recipe as recipe_mod

    trained: list[tuple[list[str], float | None]] = []
    real_fit = recipe_mod.fit

    def spy(model, train_xy, test_xy, config, defenses, **kw):
        result = real_fit(model, train_xy, test_xy, config, defenses, **kw)
        trained.append(([type(d).__name__ for d in defenses], (result.sections.get("privacy") or {}).get("epsilon")))
        return result

    monkeypatch.setattr(recipe_mod, "fit", spy)
    claimed = Report.from_json(private_run).privacy
    assert claimed is not None and claimed["epsilon"] <= 1.0

    out = audit_membership_run(private_run, shadow_models=2, seed=0)
    assert out["epsilon_lower_bound"] <= 1.0
    assert out["privacy_violated"] is False
    if out["epsilon_lower_bound"] > 0:
        assert "does not exceed the reported epsilon" in out["consistency"]
    else:
        assert out["consistency"].startswith(
            "no measurement (loss, confidence, entropy, lira-offline, lira-online, canary)"
        )
        assert out["epsilon_lower_bound_source"] is None
    assert out["delta"] == 1e-5
    # the 2 shadow models and the canary run were trained with DP at the same target epsilon
    assert len(trained) == 3
    for names, eps in trained:
        assert names == ["DifferentialPrivacy"]
        assert eps is not None and 0 < eps <= 1.0


def test_privacy_defense_is_rebuilt_from_its_config():
    original = DifferentialPrivacy(epsilon=1.0, delta=1e-5, max_grad_norm=0.7, accountant="rdp", seed=123)
    cfg = original.config()
    assert cfg["name"] == "privacy"
    recipe = TrainingRecipe(
        model_name="mlp",
        input_shape=(30,),
        num_classes=2,
        bounds=(-12.0, 12.0),
        train_config=TrainConfig(epochs=1, progress=False),
        defense_configs=[cfg],
    )
    assert recipe.private
    rebuilt = build_defense(cfg)
    assert isinstance(rebuilt, DifferentialPrivacy)
    # every setting is kept, except the fixed seed: shadow models draw sampling and noise from their own seed
    assert {k: v for k, v in rebuilt.config().items() if k != "seed"} == {k: v for k, v in cfg.items() if k != "seed"}
    assert rebuilt.config()["seed"] is None


@pytest.mark.slow  # trains 2 DP models for 40 epochs
def test_planted_accounting_bug_is_flagged(low_noise_run):
    honest = Report.from_json(low_noise_run).privacy
    assert honest["epsilon"] > 50  # what the accountant really says about noise 0.05
    # The bug: the report claims epsilon 0.1 for a model trained with noise multiplier 0.05.
    report = Report.from_json(low_noise_run)
    report.privacy = {**report.privacy, "epsilon": 0.1}
    report.write_json(low_noise_run / "report.json")
    try:
        out = audit_membership_run(low_noise_run, shadow_models=1, seed=0, attacks=("loss",))
    finally:
        report.privacy = honest
        report.write_json(low_noise_run / "report.json")
    assert out["privacy_violated"] is True
    assert out["epsilon_lower_bound"] > 0.3
    assert out["epsilon_lower_bound_source"] == "canary"
    assert "exceeds the reported epsilon 0.1 at delta 1e-05" in out["consistency"]
    # the same measurement does not refute the honest epsilon
    again = audit_membership_run(low_noise_run, shadow_models=1, seed=0, attacks=("loss",))
    assert again["privacy_violated"] is False
    assert again["epsilon_lower_bound"] == out["epsilon_lower_bound"]
