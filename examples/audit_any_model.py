"""Audit your own PyTorch model against evasion attacks, on your own tensors.

Any ``nn.Module`` that maps a batch of inputs to logits works: here a small hand-written MLP
trained with a plain torch loop on the embedded digits data. The audit runs FGSM, PGD,
HopSkipJump (black-box) and random noise at several Linf epsilons, takes the per-sample worst
case, and checks for signs of gradient masking.

Run:
    python examples/audit_any_model.py [--preset quick|default] [--samples N] [--epochs E]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from attacks.evasion import audit_robustness
from securetrain import data


class MyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(x.shape[0]).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick", help="audit strength: quick or default")
    parser.add_argument("--samples", type=int, default=200, help="test samples to audit")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    x_train, y_train = data.load("digits", "train")
    x_test, y_test = data.load("digits", "test")
    model = MyModel()
    train(model, x_train, y_train, args.epochs)

    result = audit_robustness(
        model,
        x_test[: args.samples],
        y_test[: args.samples],
        epsilons=[0.0, 0.05, 0.1, 0.2],
        bounds=data.get_info("digits").bounds,  # (0, 1): attacks keep inputs inside it
        preset=args.preset,
        progress=False,
    )
    print(f"clean accuracy {result.clean_accuracy:.3f} on {result.n_samples} samples")
    print(result.table())
    print("flags:", result.flags or "none")
    return result.to_section()  # the report's robustness section


if __name__ == "__main__":
    main()
