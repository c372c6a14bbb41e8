"""A defense written outside securetrain: registered, trained with, and rebuilt from config.

Only public names are used: subclass ``securetrain.training.Defense``, give it a ``name``,
a ``config()`` and (when ``config()`` is not just the constructor's keywords) a
``from_config``, and register the class in ``securetrain.training.DEFENSES`` (an installed
package would declare it in the ``securetrain.defenses`` entry-point group instead). The
run directory then records it, and everything that rebuilds a run's recipe (resume, the
membership audit's shadow models) rebuilds it through the registry.

Run: ``python examples/third_party_defense.py [--out DIR]``
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import securetrain
from securetrain.rundir import RunDir
from securetrain.training import DEFENSES, Defense, DefenseStack, EpochMetrics, LossFn, TrainConfig, TrainingSession


class LabelSmoothing(Defense):
    """Train on label-smoothed cross-entropy (a mild regulariser against membership inference)."""

    name = "label-smoothing-example"
    order = 60  # a loss transform, after the built-in ones

    def __init__(self, amount: float = 0.1) -> None:
        if not 0.0 <= amount < 1.0:
            raise ValueError(f"amount must be in [0, 1), got {amount}")
        self.amount = float(amount)
        self.batches = 0

    def wrap_loss(self, loss_fn: LossFn) -> LossFn:
        def smoothed(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            self.batches += 1
            return F.cross_entropy(model(x), y, reduction="none", label_smoothing=self.amount)

        return smoothed

    def epoch_metrics(self, session: TrainingSession) -> EpochMetrics:
        return {"smoothing": self.amount}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "smoothing": self.amount}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LabelSmoothing:
        return cls(amount=float(cfg["smoothing"]))  # config() says "smoothing", the constructor "amount"

    def report(self, session: TrainingSession) -> dict[str, Any]:
        return {"label_smoothing": {"amount": self.amount, "batches": self.batches}}


def main(out: str | None = None) -> dict[str, Any]:
    """Train with the defense, then rebuild it from the run directory alone."""
    run_dir = out or tempfile.mkdtemp(prefix="third-party-defense-")
    with DEFENSES.temporarily(LabelSmoothing.name, LabelSmoothing):
        result = securetrain.train(
            TrainConfig(data="breast_cancer", epochs=2, progress=False),
            run_dir,
            [LabelSmoothing(0.2)],
            write_html=False,
        )
        run = RunDir.open(run_dir)
        rebuilt = DefenseStack.from_config(run.defense_configs)  # what resume and the membership audit do
        (defense,) = list(rebuilt)
    assert isinstance(defense, LabelSmoothing)
    return {
        "accuracy": result.report.accuracy,
        "rebuilt": type(defense).__name__,
        "amount": defense.amount,
        "history_smoothing": result.train_result.history[-1]["smoothing"],
        "section": result.report.extra.get("label_smoothing"),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    summary = main(parser.parse_args().out)
    for key, value in summary.items():
        print(f"{key}: {value}")
