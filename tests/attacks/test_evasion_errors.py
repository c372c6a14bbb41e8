"""Bad input gets a clear typed error whose message says what was wrong and how to fix it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attacks.evasion import audit_robustness, get_attack
from securetrain.errors import AttackError, ModelError, SecureTrainError, UnknownNameError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(8, 1, 4, 4, generator=g), torch.randint(0, 3, (8,), generator=g)


def test_unknown_attack_lists_the_choices() -> None:
    with pytest.raises(
        UnknownNameError,
        match=r"unknown attack 'pgdd'; choose one of: apgd-ce, apgd-ce-l2, apgd-t, apgd-t-l2, boundary, cw-l2",
    ):
        get_attack("pgdd")


def test_unknown_attack_in_an_audit(linear, batch) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown attack 'fsgm'; choose one of: .*pgd"):
        audit_robustness(linear, *batch, attacks=["fsgm"], progress=False)


def test_unknown_preset_and_norm(linear, batch) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown audit preset 'fast'; choose one of: default, quick"):
        audit_robustness(linear, *batch, preset="fast", progress=False)
    with pytest.raises(AttackError, match=r"unknown norm 'l1'; choose one of: linf, l2"):
        audit_robustness(linear, *batch, norm="l1", progress=False)


@pytest.mark.parametrize(
    ("eps", "match"),
    [
        ([-0.1], r"epsilon must be a finite number >= 0, got -0.1"),
        ([0.1, float("nan")], r"epsilon must be a finite number >= 0, got nan"),
        ([float("inf")], r"epsilon must be a finite number >= 0, got inf"),
        ([], r"epsilons is empty; give at least one perturbation size"),
        (["0.1"], r"epsilons must be numbers, got '0.1'"),
        ("0.1", r"epsilons must be a number or a sequence of numbers, got str"),
    ],
)
def test_bad_epsilons(eps, match, linear, batch) -> None:
    with pytest.raises(AttackError, match=match):
        get_attack("fgsm")(linear, *batch, eps)


def test_bad_epsilon_in_perturb_and_audit(linear, batch) -> None:
    with pytest.raises(AttackError, match=r"epsilon must be a finite number >= 0, got -1"):
        get_attack("pgd").perturb(linear, *batch, -1)
    with pytest.raises(AttackError, match=r"epsilon must be a finite number >= 0, got -0.2"):
        audit_robustness(linear, *batch, epsilons=[0.1, -0.2], progress=False)


def test_inputs_outside_bounds(linear, batch) -> None:
    x, y = batch
    with pytest.raises(
        AttackError, match=r"inputs lie in \[0.\d+, 3\], outside the declared bounds \[0, 1\]; pass the data's bounds"
    ):
        get_attack("pgd")(linear, x * 3 / x.max(), y, [0.1])
    with pytest.raises(AttackError, match=r"outside the declared bounds \[0, 0.5\]"):
        audit_robustness(linear, x, y, bounds=(0.0, 0.5), progress=False)


def test_bad_bounds(linear, batch) -> None:
    with pytest.raises(AttackError, match=r"bounds must be finite with lower < upper, got \(1.0, 0.0\)"):
        get_attack("fgsm")(linear, *batch, [0.1], bounds=(1.0, 0.0))
    with pytest.raises(AttackError, match=r"bounds must be a pair \(lower, upper\) of numbers"):
        get_attack("fgsm")(linear, *batch, [0.1], bounds=(0.0,))


def test_label_batch_size_mismatch(linear, batch) -> None:
    x, y = batch
    with pytest.raises(AttackError, match=r"8 inputs but 7 labels; give one label per input"):
        get_attack("pgd")(linear, x, y[:7], [0.1])
    with pytest.raises(AttackError, match=r"8 inputs but 5 labels"):
        audit_robustness(linear, x, y[:5], progress=False)


def test_bad_labels_and_inputs(linear, batch) -> None:
    x, y = batch
    with pytest.raises(
        AttackError,
        match=r"labels must be a 1-D tensor of integer class indices, got shape \(8,\) and dtype torch.float32",
    ):
        get_attack("fgsm")(linear, x, y.float(), [0.1])
    with pytest.raises(AttackError, match=r"inputs must be a torch.Tensor, got ndarray; convert with torch.as_tensor"):
        get_attack("fgsm")(linear, x.numpy(), y, [0.1])
    with pytest.raises(AttackError, match=r"labels must be a torch.Tensor, got ndarray"):
        get_attack("fgsm")(linear, x, np.asarray(y), [0.1])
    with pytest.raises(AttackError, match=r"inputs contain NaN or infinite values"):
        get_attack("fgsm")(linear, torch.where(x > 0.5, torch.nan, x), y, [0.1])
    with pytest.raises(AttackError, match=r"the batch is empty"):
        get_attack("fgsm")(linear, x[:0], y[:0], [0.1])
    with pytest.raises(AttackError, match=r"labels must be class indices >= 0, found -1"):
        get_attack("fgsm")(linear, x, y - 1 - y, [0.1])


def test_model_output_of_the_wrong_width(linear, batch) -> None:
    x, y = batch
    with pytest.raises(ModelError, match=r"the model returns 3 logits per sample but the data has 10 classes"):
        get_attack("pgd")(linear, x, y, [0.1], num_classes=10)
    with pytest.raises(ModelError, match=r"labels go up to 5 but the model returns only 3 logits per sample"):
        get_attack("pgd")(linear, x, torch.full_like(y, 5), [0.1])
    with pytest.raises(ModelError, match=r"labels go up to 5 but the model returns only 3 logits"):
        get_attack("pgd").perturb(linear, x, torch.full_like(y, 5), 0.1)
    with pytest.raises(ModelError, match=r"the model returns 3 logits per sample but the data has 4 classes"):
        audit_robustness(linear, x, y, num_classes=4, progress=False)


def test_model_output_that_is_not_logits(batch) -> None:
    x, y = batch
    flat = nn.Sequential(nn.Flatten(), nn.Linear(16, 1), nn.Flatten(0))
    with pytest.raises(
        ModelError, match=r"the model must return logits of shape \(batch, num_classes\) = \(8, C\), got \(8,\)"
    ):
        get_attack("fgsm")(flat, x, y, [0.1])
    single = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    with pytest.raises(ModelError, match=r"the model returns 1 logit per sample; a classifier needs at least 2"):
        get_attack("fgsm")(single, x, torch.zeros_like(y), [0.1])


def test_audit_mixing_norms_is_refused(linear, batch) -> None:
    with pytest.raises(
        AttackError,
        match=r"attack 'cw-l2' measures l2 perturbations but this audit's norm is linf; run it in an audit with norm='l2'",
    ):
        audit_robustness(linear, *batch, attacks=["pgd", "cw-l2"], progress=False)


def test_audit_bad_arguments(linear, batch) -> None:
    with pytest.raises(AttackError, match=r"attack 'pgd' is listed twice"):
        audit_robustness(linear, *batch, attacks=["pgd", "pgd"], progress=False)
    with pytest.raises(AttackError, match=r"no attacks to run"):
        audit_robustness(linear, *batch, attacks=[], progress=False)
    with pytest.raises(AttackError, match=r"batch_size must be an integer >= 1, got 0"):
        audit_robustness(linear, *batch, batch_size=0, progress=False)


@pytest.mark.parametrize(
    ("name", "settings", "match"),
    [
        ("pgd", {"steps": 0}, r"pgd: steps must be an integer >= 1, got 0"),
        ("pgd", {"restarts": 1.5}, r"pgd: restarts must be an integer >= 1, got 1.5"),
        ("pgd", {"rel_stepsize": -1.0}, r"pgd: rel_stepsize must be positive, got -1.0"),
        ("fgsm", {"steps": 3}, r"fgsm takes exactly one step, got steps=3; use 'pgd' for more"),
        ("random", {"draws": 0}, r"random: draws must be an integer >= 1, got 0"),
        ("cw-l2", {"stepsize": 0}, r"cw-l2: stepsize must be a number > 0, got 0"),
        ("hsj", {"gamma": -1}, r"hsj: gamma must be a number > 0, got -1"),
        ("pgd", {"stepz": 3}, r"invalid settings for attack 'pgd': .*unexpected keyword argument 'stepz'"),
    ],
)
def test_bad_attack_settings(name, settings, match) -> None:
    with pytest.raises(AttackError, match=match):
        get_attack(name, **settings)


def test_unknown_loss() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown attack loss 'hinge'; choose one of: ce, dlr, margin"):
        get_attack("pgd", loss="hinge")


def test_errors_are_value_errors_for_callers_that_do_not_know_the_library(linear, batch) -> None:
    with pytest.raises(ValueError):
        get_attack("pgd")(linear, *batch, [-1.0])
    with pytest.raises(SecureTrainError):
        get_attack("pgd")(linear, *batch, [-1.0])
