"""Adversarial training stacked with differential privacy: per-sample gradients, accounting, validity."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader, TensorDataset

from defenses.adversarial import TRADES, FastAdversarialTraining, PGDAdversarialTraining, kl_from_clean
from securetrain.modes import unwrap
from securetrain.training import TrainConfig, fit, protect

privacy = pytest.importorskip("defenses.privacy.defense")
DifferentialPrivacy = privacy.DifferentialPrivacy

EPS = 0.1
FACTORIES = {
    "pgd": lambda: PGDAdversarialTraining(EPS, steps=3),
    "fgsm": lambda: FastAdversarialTraining(EPS),
    "trades": lambda: TRADES(EPS, steps=3, beta=4.0),
}


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 10)
    )


class Recorder:
    """Wraps an attack; keeps the adversarial examples its ``perturb`` returned."""

    def __init__(self, attack):
        self.inner = attack
        self.outputs: list[torch.Tensor] = []

    def perturb(self, model, x, y, epsilon, **kw):
        out = self.inner.perturb(model, x, y, epsilon, **kw)
        self.outputs.append(out.clone())
        return out


def _independent_per_sample_grads(model: nn.Module, x, x_adv, y, defense) -> dict[str, torch.Tensor]:
    """Per-sample gradients of the defense's loss, by torch.func on a hook-free model."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss_one(prm, xi, ai, yi):
        if isinstance(defense, TRADES):
            clean = functional_call(model, prm, (xi.unsqueeze(0),))
            other = functional_call(model, prm, (ai.unsqueeze(0),))
            return (
                F.cross_entropy(clean, yi.unsqueeze(0), reduction="none") + defense.beta * kl_from_clean(clean, other)
            ).sum()
        return F.cross_entropy(functional_call(model, prm, (ai.unsqueeze(0),)), yi.unsqueeze(0))

    return vmap(grad(loss_one), in_dims=(None, 0, 0, 0))(params, x, x_adv, y)


@pytest.mark.parametrize("engine", ["bk", "hooks"])
@pytest.mark.parametrize("method", sorted(FACTORIES))
def test_per_sample_gradients_of_the_adversarial_loss_match_an_independent_computation(method, engine, digits):
    (x, y), _ = digits
    loader = DataLoader(TensorDataset(x[:256], y[:256]), batch_size=32)
    torch.manual_seed(0)
    model = tiny_cnn()
    dp = DifferentialPrivacy(noise_multiplier=1.0, max_grad_norm=1.0, grad_sample_mode=engine, epochs=1, seed=0)
    at = FACTORIES[method]()
    rec = Recorder(at.attack)
    at.attack = rec
    with protect(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, [dp, at]) as session:
        _check_per_sample_gradients(session, dp, at, rec)


def _check_per_sample_gradients(session, dp, at, rec):
    xb, yb = next(b for b in session.train_loader if b[0].shape[0] > 0)
    session.optimizer.zero_grad(set_to_none=True)
    session.loss(xb, yb).backward()
    got = dp.engine.collect().materialize()
    (x_adv,) = rec.outputs
    assert x_adv.shape == xb.shape

    plain = unwrap(session.model)
    hook_free = tiny_cnn()
    hook_free.load_state_dict(plain.state_dict())
    want = _independent_per_sample_grads(hook_free, xb, x_adv, yb, at)
    on_clean = _independent_per_sample_grads(hook_free, xb, xb, yb, PGDAdversarialTraining(EPS))
    for name, p in plain.named_parameters():
        assert got[p].shape == want[name].shape
        torch.testing.assert_close(got[p], want[name], rtol=1e-4, atol=1e-6)
    # The comparison can tell the adversarial batch from the clean one.
    assert any(not torch.allclose(got[p], on_clean[n], rtol=1e-3, atol=1e-5) for n, p in plain.named_parameters())


def _private_run(digits, extra):
    (x, y), _ = digits
    torch.manual_seed(0)
    dp = DifferentialPrivacy(epsilon=3.0, accountant="rdp")
    r = fit(
        tiny_cnn(), (x[:512], y[:512]), None, TrainConfig(epochs=2, batch_size=64, progress=False, seed=0), [dp, *extra]
    )
    return r.sections["privacy"], r.sections.get("adversarial")


@pytest.fixture(scope="module")
def private_only(digits):
    return _private_run(digits, [])[0]


@pytest.mark.parametrize("method", sorted(FACTORIES))
def test_epsilon_is_the_private_only_runs_and_valid(method, digits, private_only):
    priv, adv = _private_run(digits, [FACTORIES[method]()])
    assert private_only["valid"] is True
    assert priv["epsilon"] == private_only["epsilon"] and priv["epsilon"] <= 3.0
    assert priv["steps"] == private_only["steps"] > 0
    assert priv["noise_multiplier"] == private_only["noise_multiplier"]
    assert priv["valid"] is True and priv["validity_checks"] == []
    assert adv["method"] == method and adv["examples"] > 0


class UndeclaredTRADES(TRADES):
    """TRADES that does not declare its second hooked forward pass."""

    forward_passes_per_step = 1


def test_validity_check_flags_an_undeclared_second_forward_pass(digits):
    priv, _ = _private_run(digits, [UndeclaredTRADES(EPS, steps=2)])
    assert priv["valid"] is False and "multiple_forward" in priv["validity_checks"]


@pytest.mark.slow
def test_cli_private_and_adversarial_end_to_end(tmp_path):
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
        "--dp",
        "--epsilon",
        "3",
        "--accountant",
        "rdp",
        "--adversarial",
        "trades",
        "--adv-eps",
        "0.1",
        "--adv-steps",
        "2",
    ]
    assert main(argv) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["privacy"]["valid"] is True and rep["privacy"]["epsilon"] <= 3.0
    assert rep["adversarial"]["method"] == "trades" and rep["adversarial"]["steps"] == 2
