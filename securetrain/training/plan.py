"""What a training run is planned to be: the frozen facts every defense may rely on.

The training loop builds one :class:`RunPlan` before the defenses are set up and puts it
on the session (``session.plan``); a hand-written loop passes one to
:func:`securetrain.training.protect` (or gets an empty one). Defenses read it instead of
asking the loop through side channels: the privacy defense takes the planned number of
epochs or steps to calibrate its noise, adversarial training takes the data's input
bounds.

Example:
    >>> from securetrain.training import RunPlan
    >>> plan = RunPlan(epochs=3, bounds=(0.0, 1.0), seed=7)
    >>> plan.epochs, plan.bounds
    (3, (0.0, 1.0))
"""

from __future__ import annotations

from dataclasses import dataclass

from securetrain.data.base import DatasetInfo
from securetrain.errors import ConfigurationError
from securetrain.validation import check_bounds, check_count


@dataclass(frozen=True)
class RunPlan:
    """The planned shape of a run, fixed before training starts.

    Attributes:
        epochs: planned epochs (``None`` when a hand-written loop does not say).
        steps: planned optimizer steps, when known up front (``None`` otherwise; a
            defense that changes the sampling works out its own step count).
        bounds: the ``(lower, upper)`` range every input value lies in, if known.
        data: the data set's :class:`~securetrain.data.DatasetInfo`, for runs on a
            registered data set.
        seed: the run's seed (defenses derive their own generators from it).
        dataset_size: number of training samples, if known.
        batch_size: the loop's (expected) batch size, if known.
    """

    epochs: int | None = None
    steps: int | None = None
    bounds: tuple[float, float] | None = None
    data: DatasetInfo | None = None
    seed: int | None = None
    dataset_size: int | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        for what in ("epochs", "steps", "dataset_size", "batch_size"):
            value = getattr(self, what)
            if value is not None:
                object.__setattr__(self, what, check_count(f"RunPlan.{what}", value, error=ConfigurationError))
        if self.seed is not None:
            object.__setattr__(self, "seed", check_count("RunPlan.seed", self.seed, minimum=0))
        if self.bounds is not None:
            object.__setattr__(self, "bounds", check_bounds(self.bounds))


__all__ = ["RunPlan"]
