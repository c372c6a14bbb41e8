"""Session fixtures for the attack tests: the digits test split and a CNN trained on digits once."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from securetrain import data
from securetrain.models import build_model
from securetrain.training import TrainConfig, fit


@pytest.fixture(scope="session")
def digits_test() -> tuple[torch.Tensor, torch.Tensor]:
    return data.load("digits", "test")


@pytest.fixture(scope="session")
def _trained_cnn_session() -> nn.Module:
    torch.manual_seed(0)
    train = data.load("digits", "train")
    test = data.load("digits", "test")
    model = build_model("cnn", (1, 8, 8), 10)
    result = fit(model, train, test, TrainConfig(epochs=3, progress=False, seed=0), num_classes=10, bounds=(0.0, 1.0))
    acc = result.history[-1]["test_accuracy"]
    assert acc > 0.9, f"the digits CNN fixture should train to > 0.9 test accuracy, got {acc}"
    return result.model.eval()


@pytest.fixture
def trained_cnn(_trained_cnn_session: nn.Module) -> nn.Module:
    """A fresh copy of the trained digits CNN (tests may change its mode or gradients)."""
    return copy.deepcopy(_trained_cnn_session)


@pytest.fixture(scope="session")
def frozen_cnn(_trained_cnn_session: nn.Module) -> nn.Module:
    """The shared trained digits CNN, for tests that only read it (never change it)."""
    return _trained_cnn_session
