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
