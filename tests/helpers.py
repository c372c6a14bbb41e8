"""Helpers shared by the tests (not fixtures): interrupting a training run at an epoch boundary."""

from __future__ import annotations

from typing import Any


class Interrupted(Exception):
    """Raised by :class:`InterruptAfter` to simulate a run killed after an epoch's checkpoint."""


class InterruptAfter:
    """A training callback that raises :class:`Interrupted` once ``session.epoch`` reaches ``epoch``.

    The loop writes the epoch's checkpoint before callbacks run, so what is left on disk is what a
    process killed at that moment leaves.
    """

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_epoch_end(self, session: Any) -> None:
        if session.epoch >= self.epoch:
            raise Interrupted(f"interrupted after epoch {session.epoch}")
