"""Each adversarial-training method raises robust accuracy at its training epsilon well above a
plain model's, as measured by the robustness audit (not by the training attack)."""

from __future__ import annotations

import pytest
import torch

from attacks.evasion import audit_robustness
from defenses.adversarial import TRADES, FastAdversarialTraining, PGDAdversarialTraining
from securetrain.models import build_model
from securetrain.training import TrainConfig, fit

EPS = 0.1
EPOCHS = 5
MARGIN = 0.15
"""Measured on digits (5 epochs, seed 0): plain about 0.4, each method 0.6 to 0.7."""


def _train_and_audit(digits, defenses):
    (x, y), (xt, yt) = digits
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10)
    result = fit(model, (x, y), None, TrainConfig(epochs=EPOCHS, progress=False, seed=0), defenses)
    audit = audit_robustness(
        result.model.eval(),
        xt,
        yt,
        attacks=["fgsm", "pgd"],
        epsilons=[0.0, EPS],
        preset="quick",
        checks=False,
        progress=False,
        seed=1,
    )
    return audit


@pytest.fixture(scope="module")
def plain_audit(digits, one_thread):
    return _train_and_audit(digits, [])


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: FastAdversarialTraining(EPS), id="fgsm"),
        pytest.param(lambda: PGDAdversarialTraining(EPS, steps=5), id="pgd", marks=pytest.mark.slow),
        pytest.param(lambda: TRADES(EPS, steps=5, beta=2.0), id="trades", marks=pytest.mark.slow),
    ],
)
def test_adversarial_training_raises_audited_robust_accuracy(make, digits, plain_audit):
    audit = _train_and_audit(digits, [make()])
    plain_robust, robust = plain_audit.worst_case[1], audit.worst_case[1]
    assert robust >= plain_robust + MARGIN, (plain_robust, robust)
    assert audit.clean_accuracy >= 0.85  # still a useful classifier
    assert audit.flags == []
