"""Membership audit of your own model and your own training loop, in one call.

``attacks.membership.audit(model, train_fn, members, non_members, shadow_models=K)`` needs only
what you already have: the trained model, the function that trained it
(``train_fn(dataset, seed) -> nn.Module``), the examples it was trained on and examples it never
saw. It trains K shadow models with your function, runs the threshold attacks and LiRA, the
one-run canary audit, and returns the same report section as ``securetrain audit DIR
--membership`` (AUC, TPR at low FPR, advantage, an epsilon lower bound at 95% confidence).

Here the "user's code" is a small CNN and a plain Adam loop on the embedded digits data.

Run:
    python examples/audit_my_training.py [--members N] [--epochs E] [--shadow-models K]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from attacks.membership import audit
from securetrain import data


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.head = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.head(h.flatten(1))


def make_train_fn(epochs: int) -> Callable[[TensorDataset, int], nn.Module]:
    def train_fn(dataset: TensorDataset, seed: int) -> nn.Module:
        """The user's own training: any code that returns a trained nn.Module."""
        torch.manual_seed(seed)
        model = SmallCNN()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        loader = DataLoader(dataset, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed))
        model.train()
        for _ in range(epochs):
            for x, y in loader:
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
        return model.eval()

    return train_fn


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=600, help="training examples (the members)")
    parser.add_argument("--epochs", type=int, default=15, help="training epochs of the recipe")
    parser.add_argument("--shadow-models", type=int, default=4, help="shadow models trained with the recipe")
    args = parser.parse_args(argv)

    x_train, y_train = data.load("digits", "train")
    members = (x_train[: args.members], y_train[: args.members])
    non_members = data.load("digits", "test")  # never trained on
    train_fn = make_train_fn(args.epochs)
    model = train_fn(TensorDataset(*members), 0)

    section = audit(model, train_fn, members, non_members, shadow_models=args.shadow_models, canaries=100)
    print(f"strongest attack        {section['attack']}")
    print(f"AUC                     {section['auc']:.3f}")
    print(f"TPR at FPR 1%           {section['tpr_at_fpr']['0.01']:.3f}")
    print(f"epsilon lower bound     {section['epsilon_lower_bound']:.3f} ({section['confidence']:.0%} confidence)")
    return section


if __name__ == "__main__":
    main()
