"""Shared fixtures: tiny trained models on the embedded data, temporary run directories."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores on CI: keep torch from oversubscribing them when tests run.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def digits():
    """Train and test splits of the embedded digits data."""
    from securetrain import data

    return data.load("digits", "train"), data.load("digits", "test")


@pytest.fixture(scope="session")
def trained_digits_cnn(digits):
    """A digits CNN trained for 3 epochs (about 0.95 test accuracy), in eval mode."""
    from securetrain.models import build_model
    from securetrain.training import TrainConfig, fit

    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10)
    result = fit(model, digits[0], digits[1], TrainConfig(epochs=3, progress=False), num_classes=10, bounds=(0.0, 1.0))
    return result.model.eval()
