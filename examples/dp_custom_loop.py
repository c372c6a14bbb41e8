"""Differential privacy in your own PyTorch training loop.

Your model, your optimizer, your data loader, your loop: ``protect`` wraps them with
``DifferentialPrivacy`` (as Opacus's ``make_private`` does) and adds what Opacus leaves to
you: a privacy budget the loop cannot overspend (``session.can_step()``), a check that the
run really meets the accounting's assumptions, and a report section.

Run it:  python examples/dp_custom_loop.py
"""

from __future__ import annotations

import json

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from defenses.privacy import DifferentialPrivacy
from securetrain import data
from securetrain.training import evaluate, protect


class TinyCNN(nn.Module):
    """A user's own model (BatchNorm included: it is replaced by GroupNorm, and reported)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.max_pool2d(torch.relu(self.norm(self.conv(x))), 2)
        return self.fc(h.flatten(1))


def main(epochs: int = 8, epsilon: float = 3.0) -> dict:
    torch.manual_seed(0)
    x_train, y_train = data.load("digits", "train")
    x_test, y_test = data.load("digits", "test")
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=128, shuffle=True)

    model = TinyCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    dp = DifferentialPrivacy(epsilon=epsilon, delta=1e-5, max_grad_norm=0.1, epochs=epochs, accountant="rdp")
    with protect(model, optimizer, loader, [dp]) as session:  # model, optimizer and loader are now private
        for _ in range(epochs):
            session.model.train()
            for x, y in session.train_loader:  # Poisson-sampled batches
                if not session.can_step():  # the budget says stop
                    break
                session.optimizer.zero_grad()
                loss = session.loss(x, y)  # per-sample losses, averaged
                loss.backward()
                session.step()  # clip each sample's gradient, add noise, step, account
            session.end_epoch()
    # leaving the block removed the hooks: `model` is a plain module again
    privacy = session.report()["privacy"]
    return {
        "accuracy": evaluate(model, x_test, y_test)["accuracy"],
        "epsilon": privacy["epsilon"],
        "delta": privacy["delta"],
        "valid": privacy["valid"],
        "steps": privacy["steps"],
        "model_changes": privacy["model_changes"],
        "grad_sample_mode": privacy["grad_sample_mode"],
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
