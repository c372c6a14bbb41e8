"""Recipes by default (``--dp`` alone), flags overriding them, and the recipe's record in config.json."""

from __future__ import annotations

import json

from defenses.privacy import recommended
from securetrain.cli.main import main


def _config(run) -> dict:
    return json.loads((run / "config.json").read_text())


def test_dp_alone_trains_with_the_recommended_recipe(tmp_path, capsys):
    out = tmp_path / "run"
    # only the length is given: every other setting comes from the breast-cancer recipe
    assert main(["train", "--data", "breast_cancer", "--dp", "--epochs", "1", "--out", str(out), "--no-html"]) == 0
    err = capsys.readouterr().err
    rec = recommended("breast_cancer")
    cfg = _config(out)
    assert "recipe: the recommended private recipe for breast_cancer/mlp" in err
    assert f"batch_size={rec.train['batch_size']}" in err and "epsilon=1.0" in err
    train = cfg["train"]
    assert (train["batch_size"], train["lr"], train["optimizer"]) == (
        rec.train["batch_size"],
        rec.train["lr"],
        rec.train["optimizer"],
    )
    assert train["epochs"] == 1 and cfg["model"]["kwargs"] == rec.train["model_kwargs"]
    (dp,) = cfg["defenses"]
    assert (dp["epsilon"], dp["max_grad_norm"], dp["delta"]) == (
        rec.epsilon,
        rec.settings["max_grad_norm"],
        rec.settings["delta"],
    )
    assert cfg["recipe"]["epsilon"] == rec.epsilon and cfg["recipe"]["train"] == rec.train
    report = json.loads((out / "report.json").read_text())
    assert report["privacy"]["epsilon"] <= rec.epsilon and report["privacy"]["max_grad_norm"] == 0.1


def test_flags_given_override_the_recipe(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", "breast_cancer", "--dp", "--epochs", "1", "--out", str(out), "--no-html"]
    args += ["--epsilon", "2", "--batch-size", "32", "--lr", "0.05", "--max-grad-norm", "0.5", "--accountant", "rdp"]
    assert main(args) == 0
    cfg = _config(out)
    assert (cfg["train"]["batch_size"], cfg["train"]["lr"]) == (32, 0.05)
    (dp,) = cfg["defenses"]
    assert (dp["epsilon"], dp["max_grad_norm"], dp["accountant"]) == (2.0, 0.5, "rdp")
    assert cfg["recipe"]["epsilon"] == 2.0  # the recipe at the epsilon asked for


def test_without_dp_or_without_a_recipe_the_generic_defaults_apply(tmp_path, capsys):
    from securetrain.cli.commands.train import GENERIC

    plain = tmp_path / "plain"
    assert main(["train", "--data", "breast_cancer", "--epochs", "1", "--out", str(plain), "--no-html"]) == 0
    cfg = _config(plain)
    assert "recipe" not in cfg and cfg["train"]["batch_size"] == GENERIC["batch_size"]
    assert "recipe:" not in capsys.readouterr().err
