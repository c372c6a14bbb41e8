"""End to end: every zoo model trains privately; securetrain.train, the CLI, the sweep, the example."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import pytest
import torch

import securetrain
from defenses.privacy import DifferentialPrivacy, recommended
from securetrain import data
from securetrain.cli.main import main
from securetrain.models import build_model
from securetrain.training import TrainConfig, fit

ROOT = Path(__file__).resolve().parents[2]


ZOO_DATA = {
    "mlp": "breast_cancer",
    "cnn": "digits",
    "resnet": "digits",
    "he": "digits",
    "he-cnn": "digits",
    "lstm": "sequences",
    "transformer": "sequences",
}
EXPECTED_ENGINE: dict[str, str] = {}


@pytest.mark.parametrize("model_name", sorted(ZOO_DATA))
def test_every_zoo_model_takes_private_steps(model_name):
    name = ZOO_DATA[model_name]
    info = data.get_info(name)
    x, y = data.load(name, "train")
    x, y = x[:96], y[:96]
    torch.manual_seed(0)
    model = build_model(model_name, info.input_shape, info.num_classes)
    before = [p.detach().clone() for p in model.parameters()]
    dp = DifferentialPrivacy(noise_multiplier=1.0, accountant="rdp", seed=0)
    result = fit(
        model,
        (x, y),
        None,
        TrainConfig(data=name, epochs=1, batch_size=32, progress=False),
        [dp],
        num_classes=info.num_classes,
    )
    privacy = result.sections["privacy"]
    assert privacy["steps"] == 3 and privacy["valid"] is True, privacy["warnings"]
    assert privacy["grad_sample_mode"] == EXPECTED_ENGINE.get(model_name, "bk")
    assert privacy["model_changes"] == []  # the zoo is DP-ready as it is
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(result.model.parameters(), before))
    assert result.model is model and not hasattr(result.model, "hooks_enabled")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_securetrain_train_fills_the_privacy_section_and_load_model_is_plain(tmp_path):
    cfg = TrainConfig(data="digits", epochs=2, batch_size=128, progress=False)
    run = securetrain.train(cfg, tmp_path, [DifferentialPrivacy(epsilon=3.0, accountant="rdp")], write_html=True)
    report = json.loads((tmp_path / "report.json").read_text())
    privacy = report["privacy"]
    for key in (
        "epsilon",
        "delta",
        "accountant",
        "noise_multiplier",
        "max_grad_norm",
        "sample_rate",
        "steps",
        "poisson_sampling",
        "valid",
        "warnings",
        "epsilon_history",
        "target_epsilon",
        "model_changes",
        "grad_sample_mode",
    ):
        assert key in privacy
    n_train = int(data.load("digits", "train")[0].shape[0])
    assert privacy["epsilon"] <= 3.0 and privacy["valid"] is True and privacy["steps"] == 2 * math.ceil(n_train / 128)
    assert privacy["epsilon_history"][0] == [0, 0.0] and privacy["epsilon_history"][-1][0] == privacy["steps"]
    assert privacy["sample_rate"] == pytest.approx(128 / n_train)
    assert [h["epsilon"] for h in report["training"]["history"]] == sorted(
        h["epsilon"] for h in report["training"]["history"]
    )
    assert "Privacy budget spent" in (tmp_path / "report.html").read_text()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["defenses"][0]["name"] == "privacy" and config["defenses"][0]["epsilon"] == 3.0
    model = securetrain.load_model(tmp_path)
    assert type(model).__name__ == "CNN" and not model.training
    assert not hasattr(model, "_module") and all(not m._forward_hooks for m in model.modules())
    torch.testing.assert_close(model.state_dict(), run.model.state_dict())


def test_cli_train_with_dp_flags(tmp_path, capsys):
    rc = main(
        [
            "train",
            "--data",
            "breast_cancer",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--dp",
            "--epsilon",
            "3",
            "--delta",
            "1e-5",
            "--max-grad-norm",
            "0.5",
            "--accountant",
            "rdp",
            "--grad-sample-mode",
            "bk",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--no-html",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "epsilon" in out and "(valid)" in out
    privacy = json.loads((tmp_path / "report.json").read_text())["privacy"]
    assert privacy["epsilon"] <= 3.0 and privacy["max_grad_norm"] == 0.5 and privacy["grad_sample_mode"] == "bk"


def test_cli_dp_options_without_dp_are_an_error(tmp_path, capsys):
    rc = main(
        ["train", "--data", "breast_cancer", "--epochs", "1", "--epsilon", "3", "--out", str(tmp_path), "--no-progress"]
    )
    assert rc == 2
    assert "--epsilon only apply with --dp; add --dp to train privately" in capsys.readouterr().err


def test_cli_max_epsilon_stops_training_and_says_so(tmp_path, capsys):
    rc = main(
        [
            "train",
            "--data",
            "breast_cancer",
            "--epochs",
            "20",
            "--batch-size",
            "64",
            "--dp",
            "--noise-multiplier",
            "3.0",
            "--max-epsilon",
            "1.0",
            "--accountant",
            "rdp",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--no-html",
        ]
    )
    assert rc == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["privacy"]["stopped_by_budget"] is True and report["privacy"]["epsilon"] <= 1.0
    assert any("privacy budget: stopped after" in n for n in report["notes"])


def test_cli_sweep_writes_the_curve(tmp_path, capsys):
    rc = main(
        [
            "sweep",
            "--data",
            "breast_cancer",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--epsilons",
            "1,4",
            "--accountant",
            "rdp",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--no-html",
        ]
    )
    assert rc == 0
    report = json.loads((tmp_path / "report.json").read_text())
    sweep = report["sweep"]
    assert [p["epsilon"] for p in sweep["points"]] == [1.0, 4.0]
    assert all(p["epsilon_spent"] <= p["epsilon"] and p["valid"] for p in sweep["points"])
    assert sweep["non_private_accuracy"] == report["accuracy"]
    assert (tmp_path / "epsilon_1" / "report.json").exists() and (
        tmp_path / "non_private" / "model.safetensors"
    ).exists()
    assert "epsilon 4: accuracy" in capsys.readouterr().out


def test_cli_sweep_rejects_bad_epsilons(tmp_path, capsys):
    rc = main(["sweep", "--data", "breast_cancer", "--epsilons", "1,x", "--out", str(tmp_path)])
    assert rc == 2 and "--epsilons must be comma-separated numbers" in capsys.readouterr().err


def test_sweep_report_draws_the_privacy_utility_plot(tmp_path):
    from defenses.privacy import sweep
    from securetrain.report.plots import plot_sweep

    result = sweep(
        TrainConfig(data="breast_cancer", epochs=1, batch_size=64, progress=False),
        [2.0],
        tmp_path,
        privacy={"accountant": "rdp"},
        write_html=True,
    )
    assert plot_sweep(result.report.to_dict()) is not None
    assert "Privacy-utility curve" in (tmp_path / "report.html").read_text()


def test_recommended_recipes_are_complete_and_usable():
    from defenses.adversarial import recommended_adversarial
    from defenses.privacy.presets import available
    from defenses.recipe import Recipe

    for name, model in available():
        rec = recommended(name, model)
        assert isinstance(rec, Recipe) and rec.defense_name == "privacy"
        cfg = rec.train_config()  # valid training settings
        assert cfg.resolved_model() == model and cfg.data == name
        dp = rec.defense()  # valid privacy settings
        assert isinstance(dp, DifferentialPrivacy) and dp.target_epsilon == rec.epsilon
    assert recommended("digits", epsilon=8).epsilon == 8.0
    assert type(recommended_adversarial()) is Recipe  # one type for both families
    with pytest.raises(
        KeyError, match="unknown data set with a recommended recipe 'imagenet'; choose one of: breast_cancer, digits"
    ):
        recommended("imagenet")
    with pytest.raises(
        KeyError, match="unknown model with a recommended recipe for 'digits' 'lstm'; choose one of: cnn, mlp, scatter"
    ):
        recommended("digits", model="lstm")


def test_the_custom_loop_example_runs():
    module = runpy.run_path(str(ROOT / "examples" / "dp_custom_loop.py"))
    result = module["main"](epochs=2)
    assert result["epsilon"] <= 3.0 and result["valid"] is True
    assert result["model_changes"] and "GroupNorm" in result["model_changes"][0]
    assert result["accuracy"] > 0.3  # it learns something in two private epochs


def test_sweep_refuses_bad_input(tmp_path):
    from defenses.privacy import sweep
    from securetrain.errors import PrivacyError

    cfg = TrainConfig(data="breast_cancer", epochs=1, progress=False)
    with pytest.raises(PrivacyError, match="give at least one epsilon to sweep"):
        sweep(cfg, [], tmp_path)
    with pytest.raises(PrivacyError, match=r"every epsilon must be positive, got \[-1.0\]"):
        sweep(cfg, [1.0, -1.0], tmp_path)
    with pytest.raises(PrivacyError, match="privacy= must not set 'epsilon'"):
        sweep(cfg, [1.0], tmp_path, privacy={"epsilon": 2.0})


def test_the_old_dictionary_form_recommended_privacy_is_deprecated():
    import defenses.privacy

    with pytest.deprecated_call(match="recommended_privacy is deprecated; use defenses.privacy.recommended"):
        old = defenses.privacy.recommended_privacy("digits", epsilon=8)
    rec = recommended("digits", epsilon=8)
    assert old["privacy"] == {"epsilon": 8.0, **rec.settings}
    assert old["train"] == {k: v for k, v in rec.train.items() if k != "data"}
