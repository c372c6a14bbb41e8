"""Gradient-masking flags fire on deliberately masked models and stay silent on a normal one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks.evasion import audit_robustness
from attacks.evasion.masking import check_blackbox_vs_gradient, check_gradients, check_monotone

pytestmark = pytest.mark.usefixtures("one_thread")

N = 160


class Quantize(nn.Module):
    """Rounds inputs to 1/16 steps: digits are already on that grid, so clean accuracy is
    unchanged, but the gradient of ``round`` is zero everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 16) / 16


class GaussianNoise(nn.Module):
    """A randomised 'defense': noise on the input even in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.05 * torch.randn_like(x)


def _names(result) -> set[str]:
    return {c.name for c in result.checks if c.fired}


def test_flags_silent_on_a_normal_trained_model(frozen_cnn: nn.Module, digits_test) -> None:
    x, y = digits_test
    # without cascade, so that non_monotone runs too (a cascade's figures are monotone by construction)
    result = audit_robustness(frozen_cnn, x[:N], y[:N], preset="quick", seed=0, progress=False, cascade=False)
    assert result.flags == [], result.flags
    assert {c.name for c in result.checks} == {
        "unbounded",
        "blackbox_beats_gradient",
        "targeted_beats_untargeted",
        "zero_gradients",
        "nondeterministic",
        "non_monotone",
    }
    assert not any(c.skipped for c in result.checks)


def test_flags_fire_on_input_quantisation(frozen_cnn: nn.Module, digits_test) -> None:
    x, y = digits_test
    masked = nn.Sequential(Quantize(), frozen_cnn)
    result = audit_robustness(masked, x[:N], y[:N], preset="quick", seed=0, progress=False)
    fired = _names(result)
    assert {"unbounded", "blackbox_beats_gradient", "zero_gradients"} <= fired
    assert "nondeterministic" not in fired
    assert len(result.flags) == len(fired)
    zero = next(c for c in result.checks if c.name == "zero_gradients")
    assert zero.value == 1.0
    assert any("all-zero input gradient" in f for f in result.flags)
    # the masked model looks robust to the gradient attacks, not to the black-box one
    assert result.attacks["fgsm"][-1] == pytest.approx(result.clean_accuracy)
    assert result.attacks["hsj"][-1] < result.attacks["pgd"][-1]


def test_nondeterministic_model_is_flagged_and_decision_attacks_skipped(frozen_cnn: nn.Module, digits_test) -> None:
    x, y = digits_test
    noisy = nn.Sequential(GaussianNoise(), frozen_cnn)
    result = audit_robustness(
        noisy, x[:64], y[:64], attacks=["pgd", "hsj", "random"], preset="quick", seed=0, progress=False
    )
    assert "nondeterministic" in _names(result)
    assert any(f.startswith("nondeterministic outputs") for f in result.flags)
    assert set(result.attacks) == {"pgd", "random"}
    assert "hsj" in result.skipped_attacks
    assert "hsj" in result.to_section()["skipped_attacks"]


def test_detached_input_gives_zero_gradients(frozen_cnn: nn.Module, digits_test) -> None:
    class Detach(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.detach()

    x, y = digits_test
    check = check_gradients(nn.Sequential(Detach(), frozen_cnn), x[:32], y[:32])
    assert check.fired and check.value == 1.0
    assert not check_gradients(frozen_cnn, x[:32], y[:32]).fired


def test_non_finite_gradients_are_counted(digits_test) -> None:
    class Sqrt(nn.Module):  # d sqrt(x)/dx is infinite at 0, and digits have many zero pixels
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sqrt(x).flatten(1) @ torch.ones(64, 10)

    x, y = digits_test
    check = check_gradients(Sqrt(), x[:32], y[:32])
    assert check.fired
    assert "non-finite" in check.message and "0 a non-finite" not in check.message


def test_non_monotone_fires_only_on_a_rise() -> None:
    eps = [0.0, 0.1, 0.2]
    rising = check_monotone({"pgd": [0.9, 0.3, 0.1], "fgsm": [0.9, 0.2, 0.4]}, eps)
    assert rising.fired and rising.value == pytest.approx(0.2)
    assert "fgsm robust accuracy rises from 0.200 at eps=0.1 to 0.400 at eps=0.2" in rising.message
    flat = check_monotone({"pgd": [0.9, 0.3, 0.3], "random": [0.9, 0.9, 0.905]}, eps)
    assert not flat.fired


def test_blackbox_check_counts_samples_missed_by_every_gradient_attack() -> None:
    eps = [0.0, 0.1]
    n = 100
    grad = torch.zeros(2, n, dtype=torch.bool)
    grad[1, :50] = True
    box = torch.zeros(2, n, dtype=torch.bool)
    box[1, 40:55] = True  # 5 samples (50..54) only the black-box attack fools
    kinds = {"pgd": "gradient", "hsj": "decision"}
    check = check_blackbox_vs_gradient({"pgd": grad, "hsj": box}, kinds, eps)
    assert check.fired and check.value == pytest.approx(0.05)
    assert "fooled 5 of 100 samples" in check.message
    box[1, 50:55] = False
    box[1, 50] = True
    assert not check_blackbox_vs_gradient({"pgd": grad, "hsj": box}, kinds, eps).fired
    skipped = check_blackbox_vs_gradient({"pgd": grad}, {"pgd": "gradient"}, eps)
    assert skipped.skipped and not skipped.fired
