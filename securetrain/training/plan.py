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
class Pretraining:
    """What happened to the model before a run's private training: public pretraining and frozen parameters.

    Attributes:
        data: the public data set the model was pretrained on, without privacy (``None``: not pretrained).
        samples: number of public samples pretrained on.
        epochs: epochs of pretraining.
        trainable: the parameter-name prefixes trained in the run (``None``: all parameters).
        trained_parameters: number of parameters the run trains.
        total_parameters: number of parameters of the model.

    Example:
        >>> Pretraining(data="mnist-5k-8x8", samples=4000, epochs=15, trainable=("head.",),
        ...             trained_parameters=8906, total_parameters=13706).describe()
        'pretrained without privacy on public data mnist-5k-8x8 (4000 samples, 15 epochs); trained here: head.* (8906 of 13706 parameters)'
    """

    data: str | None
    samples: int
    epochs: int
    trainable: tuple[str, ...] | None
    trained_parameters: int
    total_parameters: int

    def describe(self) -> str:
        """One sentence: the public pretraining and what the run trains."""
        parts = []
        if self.data is not None:
            parts.append(
                f"pretrained without privacy on public data {self.data} ({self.samples} samples, {self.epochs} epochs)"
            )
        if self.trainable is not None:
            names = ", ".join(f"{t}*" for t in self.trainable)
            parts.append(f"trained here: {names} ({self.trained_parameters} of {self.total_parameters} parameters)")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, object]:
        """The JSON form (for reports)."""
        return {
            "data": self.data,
            "samples": self.samples,
            "epochs": self.epochs,
            "trainable": list(self.trainable) if self.trainable is not None else None,
            "trained_parameters": self.trained_parameters,
            "total_parameters": self.total_parameters,
        }


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
        pretraining: public pretraining and frozen parameters before this run (``None``: neither).
    """

    epochs: int | None = None
    steps: int | None = None
    bounds: tuple[float, float] | None = None
    data: DatasetInfo | None = None
    seed: int | None = None
    dataset_size: int | None = None
    batch_size: int | None = None
    pretraining: Pretraining | None = None

    def __post_init__(self) -> None:
        for what in ("epochs", "steps", "dataset_size", "batch_size"):
            value = getattr(self, what)
            if value is not None:
                object.__setattr__(self, what, check_count(f"RunPlan.{what}", value, error=ConfigurationError))
        if self.seed is not None:
            object.__setattr__(self, "seed", check_count("RunPlan.seed", self.seed, minimum=0))
        if self.bounds is not None:
            object.__setattr__(self, "bounds", check_bounds(self.bounds))


__all__ = ["Pretraining", "RunPlan"]
