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


# ---------------------------------------------------------------------- the parameter average (EMA)


def _private_loop(ema_decay):
    import torch
    from torch import nn

    from defenses.privacy import DifferentialPrivacy
    from securetrain.training import protect

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(96, 4), torch.randint(0, 2, (96,)))
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    dp = DifferentialPrivacy(noise_multiplier=1.0, epochs=2, accountant="rdp", seed=3, ema_decay=ema_decay)
    iterates = []
    with protect(model, opt, loader, [dp]) as session:
        for _ in range(2):
            for x, y in session.train_loader:
                if not session.can_step():
                    break
                session.optimizer.zero_grad()
                session.loss(x, y).backward()
                session.step()
                iterates.append([p.detach().clone() for p in model.parameters()])
    return model, iterates, session.report()["privacy"]


def test_the_parameter_average_is_post_processing_accounted_as_the_plain_run():
    import torch

    from defenses.privacy.ema import warmup_decay

    raw_model, raw_iterates, raw_privacy = _private_loop(None)
    ema_model, ema_iterates, ema_privacy = _private_loop(0.9)
    # the same noisy iterates were released, at the same epsilon, noise, rate and steps
    assert len(raw_iterates) == len(ema_iterates) == raw_privacy["steps"] > 3
    for a, b in zip(raw_iterates, ema_iterates):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    for key in ("epsilon", "noise_multiplier", "sample_rate", "steps", "valid"):
        assert ema_privacy[key] == raw_privacy[key], key
    assert ema_privacy["ema_decay"] == 0.9 and raw_privacy["ema_decay"] is None
    # the model the run delivers is the moving average of those iterates, computed here by hand
    torch.manual_seed(0)
    first = _initial_parameters()
    avg = [p.clone() for p in first]
    for t, params in enumerate(ema_iterates, start=1):
        d = warmup_decay(0.9, t)
        avg = [d * a + (1 - d) * p for a, p in zip(avg, params)]
    for got, want in zip(ema_model.parameters(), avg):
        assert torch.allclose(got, want, atol=1e-6)
    assert not all(torch.equal(a, b) for a, b in zip(ema_model.parameters(), raw_model.parameters()))


def _initial_parameters():
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.randn(96, 4), torch.randint(0, 2, (96,))
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    return [p.detach().clone() for p in model.parameters()]


def test_ema_decay_is_checked():
    import pytest

    from defenses.privacy import DifferentialPrivacy
    from securetrain.errors import PrivacyError

    for bad in (0.0, 1.0, 1.5, True, "0.9"):
        with pytest.raises(PrivacyError, match=r"ema_decay must be a number in \(0, 1\), such as 0.999"):
            DifferentialPrivacy(epsilon=1.0, ema_decay=bad)
    assert DifferentialPrivacy(epsilon=1.0, ema_decay=0.99).config()["ema_decay"] == 0.99


# ---------------------------------------------------------------------- tempered sigmoid (tanh) activations


def test_tanh_models_train_privately_with_the_same_accounting_and_reload_as_trained(tmp_path):
    import torch
    from torch import nn

    import securetrain
    from defenses.privacy import DifferentialPrivacy
    from securetrain.training import TrainConfig

    privacy = {}
    for activation in ("relu", "tanh"):
        cfg = TrainConfig(
            data="breast_cancer",
            model="mlp",
            model_kwargs={"hidden": [8], "activation": activation},
            epochs=1,
            batch_size=64,
            progress=False,
        )
        dp = DifferentialPrivacy(noise_multiplier=1.0, accountant="rdp", grad_sample_mode="auto")
        result = securetrain.train(cfg, tmp_path / activation, [dp], write_html=False)
        privacy[activation] = result.report.privacy
        model = securetrain.load_model(tmp_path / activation)
        kinds = {type(m) for m in model.modules()}
        assert (nn.Tanh in kinds) == (activation == "tanh") and (nn.ReLU in kinds) == (activation == "relu")
        x, _ = securetrain.data.load("breast_cancer", "test")
        assert torch.equal(model(x), result.model.eval()(x))  # the reloaded model is the trained one
    # an activation has no parameters: the per-sample gradients were verified and the accounting is the same
    for key in ("epsilon", "noise_multiplier", "sample_rate", "steps", "valid"):
        assert privacy["tanh"][key] == privacy["relu"][key], key
    assert privacy["tanh"]["valid"] is True


def test_sweep_points_carry_the_validation_accuracy(tmp_path):
    import securetrain
    from defenses.privacy import sweep
    from securetrain.training import TrainConfig, evaluate

    cfg = TrainConfig(data="breast_cancer", epochs=1, progress=False)
    result = sweep(cfg, [2.0], tmp_path, privacy={"accountant": "rdp"}, non_private=False, write_html=False)
    (point,) = result.points
    model = securetrain.load_model(point["run_dir"])
    want = evaluate(model, *securetrain.data.load("breast_cancer", "validation"))["accuracy"]
    assert point["validation_accuracy"] == want
    assert result.report.extra["sweep"]["non_private_validation_accuracy"] is None


def test_a_sweep_refit_on_train_and_validation_reports_no_validation_accuracy(tmp_path):
    """Trained on the validation split, its accuracy there is no held-out figure: none is reported."""
    from defenses.privacy import sweep
    from securetrain.training import TrainConfig

    cfg = TrainConfig(data="breast_cancer", epochs=1, progress=False, train_split="train+validation")
    result = sweep(cfg, [2.0], tmp_path, privacy={"accountant": "rdp"}, write_html=False)
    (point,) = result.points
    assert point["validation_accuracy"] is None
    assert result.report.extra["sweep"]["non_private_validation_accuracy"] is None
    assert point["accuracy"] is not None  # the test figure is still there


def test_model_options_given_override_the_recipe_ones():
    import argparse

    from securetrain.cli.commands.train import add_training_arguments, config_from_args, recipe_from_args
    from securetrain.cli.plugins import load_providers

    p = argparse.ArgumentParser()
    add_training_arguments(p)
    for provider in load_providers():
        provider.add_arguments(p)
    recipe_kwargs = recommended("digits").train["model_kwargs"]
    args = p.parse_args(["--data", "digits", "--dp"])
    assert config_from_args(args, recipe_from_args(args)).model_kwargs == recipe_kwargs
    args = p.parse_args(["--data", "digits", "--dp", "--model-kwargs", "{}"])
    assert config_from_args(args, recipe_from_args(args)).model_kwargs == {}
