"""What a private run will be: its sampling schedule and its calibrated privacy budget.

:func:`plan_schedule` reads the data set size and the logical batch from the session's
plan (or the settings), and derives the Poisson sample rate, the steps per epoch, the
planned steps and the delta. :func:`calibrate` fixes the noise (given, or calibrated so
that the planned steps spend the target epsilon) and returns the
:class:`~defenses.privacy.budget.PrivacyBudget` that enforces the cap.

Example:
    >>> from securetrain.training import RunPlan
    >>> from defenses.privacy.config import PrivacyConfig
    >>> from defenses.privacy.schedule import calibrate, plan_schedule
    >>> settings = PrivacyConfig(epsilon=2.0, epochs=2, accountant="rdp")
    >>> schedule = plan_schedule(settings, RunPlan(dataset_size=1000, batch_size=50), loader_batches=None)
    >>> schedule.sample_rate, schedule.steps_per_epoch, schedule.planned_steps, schedule.delta
    (0.05, 20, 40, 1e-05)
    >>> budget = calibrate(settings, schedule)
    >>> budget.budget_steps >= 40 and budget.noise_multiplier > 0
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from defenses.privacy import accounting
from defenses.privacy.budget import PrivacyBudget
from defenses.privacy.config import PrivacyConfig
from securetrain.errors import PrivacyError
from securetrain.training import RunPlan


@dataclass(frozen=True)
class Schedule:
    """The sampling schedule of a private run (fixed at setup)."""

    dataset_size: int
    expected_batch_size: int
    sample_rate: float
    steps_per_epoch: int | None
    planned_steps: int | None
    delta: float

    @property
    def delta_too_large(self) -> bool:
        """Whether delta is not below ``1/n`` (a mechanism publishing a whole record meets it)."""
        return self.delta >= 1.0 / self.dataset_size

    def delta_warning(self) -> str:
        """``delta=... is not below 1/n=...``."""
        return f"delta={self.delta:g} is not below 1/n={1.0 / self.dataset_size:.3g}"


def plan_schedule(settings: PrivacyConfig, plan: RunPlan, *, loader_batches: int | None) -> Schedule:
    """The schedule of ``settings`` over the run ``plan``; ``loader_batches``: the loader's length (without Poisson sampling)."""
    n = plan.dataset_size
    if not n:
        raise PrivacyError(
            "cannot tell the size of the training set; pass a DataLoader over a map-style dataset "
            "(or dataset_size= to protect())"
        )
    batch = settings.batch_size or plan.batch_size
    if not batch:
        raise PrivacyError(
            "cannot tell the logical batch size from the loader; pass batch_size= to DifferentialPrivacy"
        )
    n, batch = int(n), int(batch)
    if batch > n:
        raise PrivacyError(f"the batch size ({batch}) is larger than the training set ({n}); use a smaller batch")
    steps_per_epoch = math.ceil(n / batch) if settings.poisson_sampling else loader_batches
    epochs = settings.epochs or plan.epochs
    planned = settings.steps or (int(epochs) * steps_per_epoch if epochs and steps_per_epoch else None)
    if planned is not None and planned > accounting.MAX_STEPS:
        raise PrivacyError(
            f"the run is planned for {planned:,} steps ({epochs} epochs of {steps_per_epoch}); the accountants "
            f"analyse at most {accounting.MAX_STEPS:,}; train for fewer epochs or use a larger batch"
        )
    delta = settings.delta if settings.delta is not None else min(1e-5, 0.1 / n)
    return Schedule(
        dataset_size=n,
        expected_batch_size=batch,
        sample_rate=batch / n,
        steps_per_epoch=steps_per_epoch,
        planned_steps=planned,
        delta=delta,
    )


def calibrate(settings: PrivacyConfig, schedule: Schedule) -> PrivacyBudget:
    """The budget of the run: the given or calibrated noise, the cap, the steps that fit it.

    Raises :class:`~securetrain.errors.PrivacyError` when a target epsilon has no planned
    length to calibrate for, or when not even one step fits the cap.
    """
    q, delta = schedule.sample_rate, schedule.delta
    if settings.noise_multiplier is not None:
        sigma = settings.noise_multiplier
    else:
        assert settings.epsilon is not None  # the config requires epsilon or noise_multiplier
        if not schedule.planned_steps:
            raise PrivacyError(
                "to calibrate the noise to a target epsilon, say how long you will train: pass epochs= or steps= "
                "to DifferentialPrivacy (or give a noise_multiplier)"
            )
        # gdp can under-estimate: the noise must also meet the target by prv (what the report bounds it with)
        names = ("gdp", "prv") if settings.accountant == "gdp" else (settings.accountant,)
        sigma = max(
            accounting.calibrate_noise(name, target=settings.epsilon, delta=delta, sample_rate=q, steps=planned)
            for name in names
            for planned in (schedule.planned_steps,)
        )
    cap = settings.budget_cap
    budget = PrivacyBudget(
        settings.accountant,
        delta=delta,
        noise_multiplier=sigma,
        sample_rate=q,
        cap=cap,
        cap_name=settings.cap_name,
        hint=schedule.planned_steps or 0,
    )
    if budget.budget_steps == 0:
        one = accounting.epsilon(settings.accountant, [(sigma, q, 1)], delta)
        raise PrivacyError(
            f"target epsilon {cap} is unreachable for this schedule: with noise multiplier "
            f"{sigma:.4g} and sample rate {q:.4g} a single step already spends epsilon "
            f"{one:.4g}; raise the noise multiplier or the epsilon, or use a smaller batch"
        )
    return budget


__all__ = ["Schedule", "calibrate", "plan_schedule"]
