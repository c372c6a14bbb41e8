"""Attacks on a model in the middle of private training (an Opacus GradSampleModule).

Every registered attack must leave the private training exactly as it found it: hooks enabled,
train mode, parameter ``.grad`` and ``grad_sample`` untouched (same tensors, same values), and
the next DP-SGD step must still work.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from opacus import GradSampleModule, PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from attacks.evasion import PRESETS, audit_robustness, available_attacks, get_attack
from securetrain import data

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def private(frozen_cnn: nn.Module):
    """(GradSampleModule, DP optimizer, engine, batch) after one forward/backward of DP-SGD."""
    torch.manual_seed(0)
    x, y = data.load("digits", "train")
    model = copy.deepcopy(frozen_cnn).train()
    engine = PrivacyEngine()
    gsm, opt, loader = engine.make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        data_loader=DataLoader(TensorDataset(x, y), batch_size=64),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
    )
    assert isinstance(gsm, GradSampleModule)
    xb, yb = next(iter(loader))
    F.cross_entropy(gsm(xb), yb).backward()
    return gsm, opt, engine, (xb, yb)


def _snapshot(gsm: nn.Module):
    params = list(gsm.parameters())
    return (
        [p.grad for p in params],
        [p.grad.clone() for p in params],
        [p.grad_sample for p in params],
        [p.grad_sample.clone() for p in params],
    )


def _assert_untouched(gsm: nn.Module, snap) -> None:
    grads, grad_values, samples, sample_values = snap
    params = list(gsm.parameters())
    assert gsm.training and gsm.hooks_enabled
    assert all(p.requires_grad for p in params)
    for p, g, gv, s, sv in zip(params, grads, grad_values, samples, sample_values):
        assert p.grad is g and torch.equal(p.grad, gv)
        assert p.grad_sample is s and torch.equal(p.grad_sample, sv)


@pytest.mark.parametrize("name", available_attacks())
def test_attack_leaves_private_training_untouched(name: str, private, digits_test, frozen_cnn) -> None:
    gsm, opt, engine, (xb, yb) = private
    x, y = digits_test
    quick = PRESETS.get("quick")
    attack = quick.attack(name) if name != "boundary" else get_attack("boundary", steps=200)
    snap = _snapshot(gsm)
    r = attack(gsm, x[:24], y[:24], [0.2] if attack.norm == "linf" else [1.5], seed=0)
    _assert_untouched(gsm, snap)
    assert r.clean_accuracy > 0.8
    # same figures as on the plain model with the same weights (no optimizer step yet)
    plain = attack(frozen_cnn, x[:24], y[:24], [0.2] if attack.norm == "linf" else [1.5], seed=0)
    assert plain.robust_accuracy == r.robust_accuracy
    # and private training goes on
    opt.step()
    opt.zero_grad()
    F.cross_entropy(gsm(xb), yb).backward()
    assert all(p.grad_sample is not None and p.grad_sample.shape[0] == xb.shape[0] for p in gsm.parameters())
    opt.step()
    assert engine.accountant.get_epsilon(1e-5) > 0


def test_adversarial_training_step_under_dp(private) -> None:
    gsm, opt, engine, (xb, yb) = private
    snap = _snapshot(gsm)
    x_adv = get_attack("pgd", steps=5, restarts=1).perturb(gsm, xb, yb, 0.1, seed=0)
    _assert_untouched(gsm, snap)
    opt.zero_grad()
    F.cross_entropy(gsm(x_adv), yb).backward()
    for p in gsm.parameters():
        assert p.grad_sample.shape[0] == xb.shape[0]
    opt.step()
    assert engine.accountant.get_epsilon(1e-5) > 0


def test_audit_of_a_private_model(private, digits_test) -> None:
    gsm, _, _, _ = private
    x, y = digits_test
    snap = _snapshot(gsm)
    r = audit_robustness(
        gsm, x[:48], y[:48], attacks=["fgsm", "pgd", "random"], epsilons=[0.0, 0.1], preset="quick", progress=False
    )
    _assert_untouched(gsm, snap)
    assert r.flags == []
    assert r.worst_case[1] < r.clean_accuracy
