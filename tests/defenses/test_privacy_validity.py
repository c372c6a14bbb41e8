"""The validity check of the guarantee: each broken assumption is detected, a correct run is valid."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from defenses.privacy import DifferentialPrivacy, declare_forward_passes
from securetrain.modes import attack_mode
from securetrain.training import protect

ENGINES = ["bk", "hooks"]


def _data(n: int = 120) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


@contextmanager
def _session(mode: str = "bk", loader=None, **kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    dp = DifferentialPrivacy(noise_multiplier=1.0, accountant="rdp", grad_sample_mode=mode, seed=0, **kwargs)
    loader = loader if loader is not None else DataLoader(_data(), batch_size=20, shuffle=True)
    with protect(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, [dp]) as session:
        yield session, dp


def _finish(session) -> dict:
    """The privacy section, once the ``with`` block has torn the session down."""
    return session.report()["privacy"]


@pytest.mark.parametrize("mode", ENGINES)
def test_a_correct_run_is_valid(mode):
    with _session(mode) as (session, dp):
        for x, y in session.train_loader:
            if not session.can_step():
                break
            session.optimizer.zero_grad()
            session.loss(x, y).backward()
            session.step()
    privacy = _finish(session)
    assert privacy["valid"] is True and privacy["warnings"] == [] and privacy["steps"] == 6
    assert dp.monitor.checks_run >= 3  # the gradient comparison did run


def test_shuffled_fixed_size_batches_are_not_poisson():
    with _session(poisson_sampling=False) as (session, _dp):
        for x, y in session.train_loader:
            session.optimizer.zero_grad()
            session.loss(x, y).backward()
            session.step()
    privacy = _finish(session)
    assert privacy["valid"] is False and privacy["poisson_sampling"] is False
    assert privacy["validity_checks"] == ["non_poisson"]
    assert privacy["warnings"][0].startswith(
        "batches are not Poisson-sampled (shuffled fixed-size batches (RandomSampler))"
    )


def test_a_weighted_sampler_is_not_poisson_and_is_replaced_when_poisson_is_on():
    data = _data()
    sampler = WeightedRandomSampler(torch.linspace(0.1, 1.0, len(data)), num_samples=len(data))
    with _session(poisson_sampling=False, loader=DataLoader(data, batch_size=20, sampler=sampler)) as (session, dp):
        pass
    privacy = _finish(session)
    assert privacy["valid"] is False and "batches from a WeightedRandomSampler" in privacy["warnings"][0]
    with _session(loader=DataLoader(data, batch_size=20, sampler=sampler)) as (session, _dp):
        assert any("WeightedRandomSampler was replaced by Poisson sampling" in n for n in session.notes)
    privacy = _finish(session)
    assert privacy["valid"] is True


@pytest.mark.parametrize("mode", ENGINES)
def test_two_hooked_forward_passes_on_different_samples_are_detected(mode):
    with _session(mode) as (session, _dp):
        batches = iter(session.train_loader)
        x, y = next(batches)
        x2 = torch.randn_like(x)  # other samples through the hooked model in the same step
        session.optimizer.zero_grad()
        (session.loss(x, y) + session.loss(x2, y)).backward()
        session.step()
    privacy = _finish(session)
    assert privacy["valid"] is False and privacy["validity_checks"] == ["multiple_forward"]
    assert privacy["warnings"][0].startswith(
        "2 forward passes with per-sample hooks contributed to one step (first at step 1)"
    )


@pytest.mark.parametrize("mode", ENGINES)
def test_declared_extra_passes_of_the_same_samples_are_accounted(mode):
    with _session(mode) as (session, _dp):
        declare_forward_passes(session, 2)
        for x, y in session.train_loader:
            if not session.can_step():
                break
            x_adv = x + 0.1 * torch.sign(
                torch.randn_like(x)
            )  # e.g. TRADES: clean and perturbed pass of the same samples
            session.optimizer.zero_grad()
            (session.loss(x, y) + session.loss(x_adv, y)).backward()
            session.step()
    assert _finish(session)["valid"] is True


def test_a_defense_can_declare_its_passes_with_a_class_attribute():
    from securetrain.training import Defense

    class TwoPasses(Defense):
        name = "two-passes"
        forward_passes_per_step = 2

        def wrap_loss(self, loss_fn):
            return lambda m, x, y: loss_fn(m, x, y) + loss_fn(m, x + 0.01, y)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 2))
    dp = DifferentialPrivacy(noise_multiplier=1.0, accountant="rdp", seed=0)
    with protect(
        model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(_data(), batch_size=20), [dp, TwoPasses()]
    ) as session:
        for x, y in session.train_loader:
            session.optimizer.zero_grad()
            session.loss(x, y).backward()
            session.step()
    assert _finish(session)["valid"] is True


def test_forward_passes_inside_attack_mode_do_not_count():
    with _session() as (session, _dp):
        for x, y in session.train_loader:
            with attack_mode(session.model) as m:  # an attack's forward/backward, hooks off
                x_req = x.clone().requires_grad_(True)
                F.cross_entropy(m(x_req), y).backward()
            session.optimizer.zero_grad()
            session.loss(x, y).backward()
            session.step()
    assert _finish(session)["valid"] is True


@pytest.mark.parametrize("mode", ENGINES)
def test_gradient_accumulation_across_backward_passes_is_detected(mode):
    with _session(mode) as (session, _dp):
        it = iter(session.train_loader)
        session.optimizer.zero_grad()
        for _ in range(2):  # two batches, two backward passes, one step
            x, y = next(it)
            session.loss(x, y).backward()
        session.step()
    privacy = _finish(session)
    assert privacy["valid"] is False and privacy["validity_checks"] == ["accumulation"]
    assert "gradients of several backward passes were accumulated into one optimizer step" in privacy["warnings"][0]


@pytest.mark.parametrize("mode", ENGINES)
def test_a_loss_term_outside_the_per_sample_path_is_detected(mode):
    with _session(mode) as (session, _dp):
        model = session.plain_model
        for x, y in session.train_loader:
            session.optimizer.zero_grad()
            penalty = 1e-2 * sum(p.pow(2).sum() for p in model.parameters())  # weight decay written into the loss
            (session.loss(x, y) + penalty).backward()
            session.step()
    privacy = _finish(session)
    assert privacy["valid"] is False and privacy["validity_checks"] == ["outside_loss"]
    assert privacy["warnings"][0].startswith("the gradient of 0.weight (relative difference")
    assert "a loss term was computed outside the per-sample path" in privacy["warnings"][0]


def test_the_outside_term_check_keeps_running_after_the_first_steps():
    with _session() as (session, dp):
        dp.monitor.check_first, dp.monitor.check_every = 1, 4
        model = session.plain_model
        step = 0
        for _ in range(3):
            for x, y in session.train_loader:
                step += 1
                session.optimizer.zero_grad()
                loss = session.loss(x, y)
                if step == 8:  # a term that appears late in training
                    loss = loss + 1e-2 * model[0].weight.pow(2).sum()
                loss.backward()
                session.step()
    privacy = _finish(session)
    assert privacy["validity_checks"] == ["outside_loss"] and "first at step 8" in privacy["warnings"][0]


def test_batches_that_do_not_come_from_the_sampler_are_detected():
    data = _data()
    own = DataLoader(data, batch_size=20, shuffle=True)
    with _session(loader=own) as (session, _dp):
        for x, y in own:  # the user's own loader instead of session.train_loader
            session.optimizer.zero_grad()
            session.loss(x, y).backward()
            session.step()
    privacy = _finish(session)
    assert privacy["validity_checks"] == ["foreign_batches"]
    assert "did not come from session.train_loader" in privacy["warnings"][0]


def test_no_noise_is_reported_as_not_private():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 2))
    dp = DifferentialPrivacy(noise_multiplier=0.0)
    with protect(
        model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(_data(), batch_size=20), [dp]
    ) as session:
        for x, y in session.train_loader:
            session.optimizer.zero_grad()
            session.loss(x, y).backward()
            session.step()
    privacy = _finish(session)
    assert privacy["epsilon"] is None and privacy["valid"] is False
    assert privacy["validity_checks"] == ["no_noise"]


def test_validity_findings_survive_a_resume():
    with _session(poisson_sampling=False) as (_, dp):
        state = dp.state_dict()
    with _session() as (session2, dp2):
        dp2.load_state_dict(state)
    assert _finish(session2)["validity_checks"] == ["non_poisson"]


def test_the_gdp_accountant_is_reported_as_an_approximation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 2))
    dp = DifferentialPrivacy(noise_multiplier=1.0, accountant="gdp", seed=0)
    with protect(
        model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(_data(), batch_size=20), [dp]
    ) as session:
        for x, y in session.train_loader:
            session.optimizer.zero_grad()
            session.loss(x, y).backward()
            session.step()
    privacy = _finish(session)
    assert privacy["valid"] is True
    assert any("central-limit approximation and can under-estimate epsilon" in w for w in privacy["warnings"])
