"""Shared fixtures: tiny trained models on the embedded data, temporary run directories."""

from __future__ import annotations

import pytest
import torch

# The test models are tiny: one thread is as fast as two for them, and it avoids
# oversubscribing CI's two cores when a test starts subprocesses (examples, torchrun).
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for this module (and the previous count restored after it), whatever
    a test before it set: tiny models run faster and steadier on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
