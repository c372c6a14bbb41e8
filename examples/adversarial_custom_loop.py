"""Adversarial training in your own PyTorch loop, alone and stacked with differential privacy.

Your model, your optimizer, your loop. Two ways in:

1. Alone: ``defense.loss(model, x, y)`` turns a clean batch into the adversarial training
   loss; call ``.backward()`` on it and step as usual.
2. With differential privacy: ``securetrain.training.protect`` wraps model, optimizer and
   loader for DP-SGD and chains the adversarial loss in front; use ``session.loss`` /
   ``session.can_step()`` / ``session.step()``. The attack runs with the per-sample hooks
   off; the adversarial loss is clipped and noised per sample like any other loss.

Both models are then audited at the training epsilon (robust accuracy = worst case over
FGSM and PGD).

    python examples/adversarial_custom_loop.py [--method fgsm|pgd|trades] [--epochs 10] [--adv-eps 0.1]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from attacks.evasion import audit_robustness
from defenses.adversarial import make_adversarial
from defenses.privacy import DifferentialPrivacy
from securetrain import data
from securetrain.training import protect


class MyNet(nn.Module):
    """A user's model: nothing securetrain-specific about it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.relu(self.conv(x)))
        return self.fc2(torch.relu(self.fc1(h.flatten(1))))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train_adversarial(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """Way 1: no wrapper at all."""
    torch.manual_seed(args.seed)
    model = MyNet()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    defense = make_adversarial(args.method, args.adv_eps)
    for _ in range(args.epochs):
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            defense.loss(model, xb, yb).backward()
            opt.step()
    return model


def train_private_adversarial(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> tuple[nn.Module, dict]:
    """Way 2: DP-SGD and adversarial training stacked with ``protect``."""
    torch.manual_seed(args.seed)
    model = MyNet()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loader = DataLoader(TensorDataset(x, y), batch_size=128)
    dp = DifferentialPrivacy(epsilon=args.epsilon, epochs=args.epochs, accountant="rdp", seed=args.seed)
    # leaving the `with` block removes the DP hooks, even if the loop raises
    with protect(model, opt, loader, [dp, make_adversarial(args.method, args.adv_eps)]) as session:
        for _ in range(args.epochs):
            session.model.train()  # a DP-wrapped model must be in train mode for every epoch
            for xb, yb in session.train_loader:
                if not session.can_step():
                    break
                session.optimizer.zero_grad()
                session.loss(xb, yb).backward()
                session.step()
            session.end_epoch()
    return session.plain_model, session.report()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="fgsm", choices=["fgsm", "pgd", "trades"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--adv-eps", type=float, default=0.1)
    p.add_argument("--epsilon", type=float, default=3.0, help="privacy budget of the private run")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    x, y = data.load("digits", "train")
    xt, yt = data.load("digits", "test")
    rows = []
    t0 = time.perf_counter()
    adv = train_adversarial(args, x, y)
    rows.append(("adversarial", adv, None, time.perf_counter() - t0))
    t0 = time.perf_counter()
    priv, sections = train_private_adversarial(args, x, y)
    rows.append(("private+adversarial", priv, sections["privacy"], time.perf_counter() - t0))

    print(f"{args.method} adversarial training at epsilon {args.adv_eps}, {args.epochs} epochs, digits")
    print(f"{'model':<22}{'accuracy':>10}{'robust':>10}{'epsilon':>10}{'valid':>8}{'train s':>9}")
    for name, model, privacy, secs in rows:
        audit = audit_robustness(
            model.eval(),
            xt,
            yt,
            attacks=["fgsm", "pgd"],
            epsilons=[args.adv_eps],
            preset="quick",
            checks=False,
            progress=False,
        )
        eps = f"{privacy['epsilon']:.3g}" if privacy else "-"
        valid = str(privacy["valid"]) if privacy else "-"
        print(f"{name:<22}{accuracy(model, xt, yt):>10.3f}{audit.worst_case[0]:>10.3f}{eps:>10}{valid:>8}{secs:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
