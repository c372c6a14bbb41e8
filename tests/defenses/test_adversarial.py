"""Adversarial training defenses: settings, bad input, the loss contract, no leaks, the CLI."""

from __future__ import annotations

import argparse
import copy
import doctest
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from defenses.adversarial import (
    KLPGD,
    METHODS,
    TRADES,
    FastAdversarialTraining,
    PGDAdversarialTraining,
    kl_from_clean,
    make_adversarial,
    recommended_adversarial,
)
from securetrain.errors import AttackError, ConfigurationError
from securetrain.training import RunPlan, TrainConfig, fit, protect
from securetrain.training.defense import per_sample_cross_entropy

EPS = 0.1
FACTORIES = {
    "pgd": lambda **kw: PGDAdversarialTraining(EPS, steps=3, **kw),
    "fgsm": lambda **kw: FastAdversarialTraining(EPS, **kw),
    "trades": lambda **kw: TRADES(EPS, steps=3, **kw),
}


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 10)
    )


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(12, 1, 8, 8, generator=g), torch.randint(0, 10, (12,), generator=g)


class Recorder:
    """Wraps an attack; keeps what its ``perturb`` returned (the training examples)."""

    def __init__(self, attack):
        self.inner = attack
        self.outputs: list[torch.Tensor] = []
        self.inputs: list[torch.Tensor] = []

    def perturb(self, model, x, y, epsilon, **kw):
        self.inputs.append(x.clone())
        out = self.inner.perturb(model, x, y, epsilon, **kw)
        self.outputs.append(out.clone())
        return out


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("eps", [0, -0.1, float("nan"), float("inf")])
@pytest.mark.parametrize("method", sorted(FACTORIES))
def test_non_positive_epsilon_is_refused(method, eps):
    with pytest.raises(ConfigurationError, match=r"adversarial epsilon must be a finite number > 0, got"):
        make_adversarial(method, eps)


def test_epsilon_outside_the_data_range_is_refused_at_setup(digits):
    (x, y), _ = digits
    small = (x[:64], y[:64])
    with pytest.raises(
        ConfigurationError,
        match=r"adversarial epsilon 1\.5 is outside the input range: the inputs of "
        r"'digits' lie in \[0, 1\] \(width 1\).*0 < epsilon < 1 \(e\.g\. 0\.1\)",
    ):
        fit(tiny_cnn(), small, None, TrainConfig(epochs=1, progress=False), [FastAdversarialTraining(1.5)])
    # An epsilon that is fine for a wider range (breast_cancer is standardised) passes that setup.
    from securetrain.data import get_info

    lo, hi = get_info("breast_cancer").bounds
    at = PGDAdversarialTraining(1.5)
    model = nn.Linear(30, 2)
    info = get_info("breast_cancer")
    with protect(
        model, torch.optim.SGD(model.parameters(), lr=0.1), [], [], plan=RunPlan(bounds=info.bounds, data=info)
    ) as session:
        at.setup(session)
    assert at.bounds == (lo, hi)


def test_epsilon_outside_explicit_or_default_bounds_is_refused(batch):
    with pytest.raises(
        ConfigurationError,
        match=r"adversarial epsilon 300 is outside the input range: the inputs lie in "
        r"\[0, 255\]",
    ):
        PGDAdversarialTraining(300, bounds=(0, 255))
    at = TRADES(2.0)  # default bounds (0, 1): checked when first used
    with pytest.raises(ConfigurationError, match=r"adversarial epsilon 2 is outside the input range"):
        at.per_sample_loss(tiny_cnn(), *batch)
    with pytest.raises(ConfigurationError, match=r"bounds must be finite with lower < upper, got \(1, 0\)"):
        FastAdversarialTraining(0.1, bounds=(1, 0))


@pytest.mark.parametrize("steps", [0, -3, 1.5, True])
@pytest.mark.parametrize("method", ["pgd", "trades"])
def test_steps_below_one_are_refused(method, steps):
    with pytest.raises(ConfigurationError, match=r"steps must be an integer >= 1, got"):
        make_adversarial(method, EPS, steps=steps)


def test_fgsm_takes_no_steps_setting():
    with pytest.raises(ConfigurationError, match=r"fgsm takes no setting 'steps' \(it makes exactly one step\)"):
        make_adversarial("fgsm", EPS, steps=3)


@pytest.mark.parametrize("beta", [-1, -1e-9, float("nan")])
def test_negative_beta_is_refused(beta):
    with pytest.raises(ConfigurationError, match=r"TRADES beta must be a finite number >= 0, got"):
        TRADES(EPS, beta=beta)


@pytest.mark.parametrize("share", [1.0, 1.5, -0.1])
def test_clean_share_outside_unit_interval_is_refused(share):
    with pytest.raises(ConfigurationError, match=r"clean_share must be"):
        PGDAdversarialTraining(EPS, clean_share=share)


@pytest.mark.parametrize("step_size", [0, -0.01])
def test_non_positive_step_size_is_refused(step_size):
    with pytest.raises(ConfigurationError, match=r"step_size must be a finite number > 0"):
        FastAdversarialTraining(EPS, step_size=step_size)


def test_unknown_method_lists_the_choices():
    with pytest.raises(KeyError, match=r"unknown adversarial training method 'free'; choose one of: fgsm, pgd, trades"):
        make_adversarial("free", EPS)


def test_trades_refuses_a_custom_base_loss():
    def smooth_ce(model, x, y):
        return F.cross_entropy(model(x), y, reduction="none", label_smoothing=0.1)

    with pytest.raises(ConfigurationError, match=r"TRADES trains on the cross-entropy .* \(smooth_ce\)"):
        TRADES(EPS).wrap_loss(smooth_ce)


def test_inputs_outside_the_bounds_are_an_attack_error(batch):
    x, y = batch
    with pytest.raises(AttackError, match=r"outside the declared bounds \[0, 1\]"):
        PGDAdversarialTraining(EPS, steps=2).per_sample_loss(tiny_cnn(), x * 3, y)


# --------------------------------------------------------------------------- the loss contract


@pytest.mark.parametrize("method", sorted(FACTORIES))
def test_loss_is_per_sample_and_leaves_model_and_inputs_alone(method, batch):
    x, y = batch
    x0 = x.clone()
    model = tiny_cnn().train()
    at = FACTORIES[method]()
    rec = Recorder(at.attack)
    at.attack = rec
    losses = at.per_sample_loss(model, x, y)
    assert losses.shape == (12,) and losses.requires_grad
    assert torch.equal(x, x0)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    (adv,) = rec.outputs
    assert float((adv - x).abs().max()) <= EPS + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert not torch.equal(adv, x)
    assert at.examples == 12


@pytest.mark.parametrize("method", ["pgd", "fgsm"])
def test_example_replacement_trains_on_the_attacked_batch(method, batch):
    x, y = batch
    model = tiny_cnn()
    at = FACTORIES[method]()
    seen = []

    def base(m, xb, yb):
        seen.append(xb.detach().clone())
        return per_sample_cross_entropy(m, xb, yb)

    torch.manual_seed(3)
    losses = at.per_sample_loss(model, x, y, loss_fn=base)
    (x_train,) = seen
    assert torch.allclose(losses, F.cross_entropy(model(x_train), y, reduction="none"))
    clean_losses = F.cross_entropy(model(x), y, reduction="none")
    assert float(losses.detach().mean()) > float(clean_losses.detach().mean())  # the attack raised the loss


def test_trades_loss_is_clean_ce_plus_beta_kl(batch):
    x, y = batch
    model = tiny_cnn()
    at = TRADES(EPS, beta=3.0, steps=3)
    rec = Recorder(at.attack)
    at.attack = rec
    losses = at.per_sample_loss(model, x, y)
    (adv,) = rec.outputs
    clean, other = model(x), model(adv)
    want = F.cross_entropy(clean, y, reduction="none") + 3.0 * kl_from_clean(clean, other)
    assert torch.allclose(losses, want, atol=1e-6)
    assert float(kl_from_clean(clean, other).detach().min()) >= 0


@pytest.mark.parametrize("method", sorted(FACTORIES))
def test_clean_share_leaves_that_share_unattacked(method, batch):
    x, y = batch
    at = FACTORIES[method](clean_share=0.5)
    rec = Recorder(at.attack)
    at.attack = rec
    at.per_sample_loss(tiny_cnn(), x, y)
    (attacked,) = rec.inputs
    assert attacked.shape[0] == 6 and at.examples == 6
    rows = [int(torch.nonzero((x == a).flatten(1).all(1)).item()) for a in attacked]
    assert len(set(rows)) == 6


@pytest.mark.parametrize("method", sorted(FACTORIES))
def test_empty_batch_gives_empty_losses(method):
    losses = FACTORIES[method]().per_sample_loss(tiny_cnn(), torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    assert losses.shape == (0,)


def test_kl_attack_moves_the_prediction_more_than_noise(batch):
    x, y = batch
    torch.manual_seed(0)
    model = tiny_cnn()
    adv = KLPGD(steps=10).perturb(model, x, y, EPS, seed=0)
    noise = (x + torch.empty_like(x).uniform_(-EPS, EPS)).clamp(0, 1)
    with torch.no_grad():
        clean = model(x)
        assert float(kl_from_clean(clean, model(adv)).mean()) > 2 * float(kl_from_clean(clean, model(noise)).mean())
    assert float((adv - x).abs().max()) <= EPS + 1e-6
    with pytest.raises(AttackError, match=r"trades-kl: steps must be an integer >= 1, got 0"):
        KLPGD(steps=0)


def test_same_seed_same_training(digits):
    (x, y), _ = digits
    small = (x[:128], y[:128])

    def run():
        torch.manual_seed(0)
        r = fit(
            tiny_cnn(),
            small,
            None,
            TrainConfig(epochs=1, progress=False, seed=5),
            [PGDAdversarialTraining(EPS, steps=2)],
        )
        return [p.detach().clone() for p in r.model.parameters()]

    a, b = run(), run()
    assert all(torch.equal(p, q) for p, q in zip(a, b))


# --------------------------------------------------------------------------- no leaks into the step


class BNNet(nn.Module):
    """Batch norm makes a mode leak visible (running statistics), SGD without momentum makes a
    gradient leak visible (the update is exactly lr times the gradient)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


class LeakyPGD(PGDAdversarialTraining):
    """A careless implementation: attacks in train mode and keeps the attack's gradients."""

    def _adversarial_loss(self, model, x, y, loss_fn):
        model.train()
        xg = x.clone().requires_grad_(True)
        F.cross_entropy(model(xg), y).backward()  # accumulates into p.grad and BN statistics
        x_adv = (x + self.epsilon * xg.grad.sign()).clamp(0, 1).detach()
        self.attack.outputs.append(x_adv)
        return loss_fn(model, x_adv, y)


def _step_and_reference(defense, x, y):
    """One optimizer step through ``protect``, and the same step computed on a fresh copy from
    the training batch alone. Returns (trained model, reference model)."""
    torch.manual_seed(0)
    model = BNNet().train()
    fresh = copy.deepcopy(model)
    rec = Recorder(defense.attack)
    defense.attack = rec
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with protect(model, opt, [(x, y)], [defense]) as session:
        for xb, yb in session.train_loader:
            assert session.can_step()
            session.optimizer.zero_grad(set_to_none=True)
            session.loss(xb, yb).backward()
            session.step()
    (adv,) = rec.outputs
    ref_opt = torch.optim.SGD(fresh.parameters(), lr=0.5)
    fresh.train()
    ref_opt.zero_grad()
    if isinstance(defense, TRADES):
        clean, other = fresh(x), fresh(adv)
        loss = F.cross_entropy(clean, y, reduction="none") + defense.beta * kl_from_clean(clean, other)
    else:
        loss = F.cross_entropy(fresh(adv), y, reduction="none")
    loss.mean().backward()
    ref_opt.step()
    return model, fresh


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.allclose(sa[k].float(), sb[k].float(), rtol=1e-5, atol=1e-6) for k in sa)


@pytest.mark.parametrize("method", sorted(FACTORIES))
def test_attack_leaks_no_gradient_or_mode_into_the_step(method, batch):
    x, y = batch
    model, ref = _step_and_reference(FACTORIES[method](), x, y)
    assert model.training
    assert _same_state(model, ref)


def test_the_leak_check_catches_a_leaky_attack(batch):
    x, y = batch
    model, ref = _step_and_reference(LeakyPGD(EPS, steps=1), x, y)
    assert not _same_state(model, ref)


# --------------------------------------------------------------------------- loop, report, registry


def test_fit_reports_the_adversarial_section(digits):
    (x, y), test = digits
    at = FastAdversarialTraining(EPS)
    r = fit(
        tiny_cnn(),
        (x[:128], y[:128]),
        (test[0][:64], test[1][:64]),
        TrainConfig(epochs=2, batch_size=32, progress=False),
        [at],
    )
    section = r.sections["adversarial"]
    assert section["method"] == "fgsm" and section["epsilon"] == EPS and section["examples"] == 256
    assert section["attack_time_s"] > 0 and section["bounds"] == [0.0, 1.0]
    assert all(row["adv_attack_s"] > 0 for row in r.history)
    json.dumps(section)  # JSON-ready


def test_registry_and_recipes():
    assert METHODS.names() == ["fgsm", "pgd", "trades"]
    assert recommended_adversarial().defense().method == "fgsm"
    cfg = recommended_adversarial(private=True).train_config(epochs=2)
    assert cfg.epochs == 2 and cfg.batch_size == 128


def test_one_adversarial_defense_per_run():
    with pytest.raises(ConfigurationError, match=r"each defense may be used once; repeated: adversarial"):
        protect(
            tiny_cnn(), torch.optim.SGD(tiny_cnn().parameters(), lr=0.1), [], [PGDAdversarialTraining(EPS), TRADES(EPS)]
        )


# --------------------------------------------------------------------------- CLI


def _parse(argv):
    from defenses.adversarial.cli import OPTION

    p = argparse.ArgumentParser()
    OPTION.add_arguments(p)
    return OPTION, p.parse_args(argv)


def test_cli_builds_each_method():
    opt, args = _parse(["--adversarial", "trades", "--adv-eps", "0.2", "--adv-steps", "4", "--trades-beta", "2"])
    d = opt.build(args)
    assert isinstance(d, TRADES) and (d.epsilon, d.steps, d.beta) == (0.2, 4, 2.0)
    opt, args = _parse(
        ["--adversarial", "pgd", "--adv-eps", "0.1", "--adv-step-size", "0.02", "--adv-clean-share", "0.25"]
    )
    d = opt.build(args)
    assert isinstance(d, PGDAdversarialTraining) and (d.steps, d.step_size, d.clean_share) == (7, 0.02, 0.25)
    opt, args = _parse(["--adversarial", "fgsm", "--adv-eps", "0.1", "--adv-steps", "1"])
    assert isinstance(opt.build(args), FastAdversarialTraining)
    opt, args = _parse([])
    assert opt.build(args) is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--adversarial", "pgd"], r"--adversarial pgd needs --adv-eps"),
        (["--adv-eps", "0.1"], r"--adv-eps given without --adversarial"),
        (
            ["--adversarial", "pgd", "--adv-eps", "0.1", "--trades-beta", "1"],
            r"--trades-beta applies to --adversarial trades only",
        ),
        (
            ["--adversarial", "fgsm", "--adv-eps", "0.1", "--adv-steps", "3"],
            r"--adversarial fgsm makes exactly one step",
        ),
        (["--adversarial", "pgd", "--adv-eps", "0.1", "--adv-steps", "0"], r"steps must be an integer >= 1, got 0"),
        (
            ["--adversarial", "trades", "--adv-eps", "0.1", "--trades-beta", "-1"],
            r"TRADES beta must be a finite number >= 0",
        ),
    ],
)
def test_cli_bad_flags(argv, message):
    opt, args = _parse(argv)
    with pytest.raises(ConfigurationError, match=message):
        opt.build(args)


def test_cli_docstring_example_runs():
    import defenses.adversarial.cli as cli

    assert doctest.testmod(cli).failed == 0


def test_securetrain_train_adversarial_end_to_end(tmp_path, capsys):
    from securetrain.cli.main import main

    out = tmp_path / "run"
    argv = [
        "train",
        "--data",
        "digits",
        "--epochs",
        "1",
        "--out",
        str(out),
        "--no-html",
        "--no-progress",
        "--adversarial",
        "fgsm",
        "--adv-eps",
        "0.1",
    ]
    assert main(argv) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["adversarial"]["method"] == "fgsm" and rep["adversarial"]["examples"] > 0
    cfg = json.loads((out / "config.json").read_text())
    assert any(d.get("name") == "adversarial" and d["epsilon"] == 0.1 for d in cfg["defenses"])
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                "--data",
                "digits",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "bad"),
                "--no-html",
                "--adversarial",
                "pgd",
                "--adv-eps",
                "1",
            ]
        )
        == 2
    )
    assert "adversarial epsilon 1 is outside the input range" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["pgd", "trades"])
def test_resumed_run_ends_where_an_uninterrupted_one_does(method, digits, tmp_path):
    (x, y), _ = digits
    small = (x[:192], y[:192])

    def run(epochs, ckpt, resume=False):
        torch.manual_seed(0)
        at = FACTORIES[method]()
        r = fit(
            tiny_cnn(),
            small,
            None,
            TrainConfig(epochs=epochs, batch_size=64, progress=False, seed=2),
            [at],
            checkpoint_path=ckpt,
            resume=resume,
        )
        return r, at

    full, at_full = run(3, tmp_path / "full.safetensors")
    run(2, tmp_path / "part.safetensors")
    resumed, at_resumed = run(3, tmp_path / "part.safetensors", resume=True)
    assert resumed.resumed_from_epoch == 2
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    assert at_resumed.examples == at_full.examples == 3 * 192


def test_the_old_name_recommended_is_deprecated():
    import defenses.adversarial

    with pytest.deprecated_call(match="use defenses.adversarial.recommended_adversarial"):
        old = defenses.adversarial.recommended(private=True)
    assert old == recommended_adversarial(private=True)
