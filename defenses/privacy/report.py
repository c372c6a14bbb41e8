"""The ``privacy`` section of a run's report: the epsilon, whether it is valid, and why.

Example:
    >>> from defenses.privacy.budget import PrivacyBudget
    >>> from defenses.privacy.report import epsilon_history
    >>> budget = PrivacyBudget("rdp", delta=1e-5, noise_multiplier=1.0, sample_rate=0.1)
    >>> for _ in range(20):
    ...     budget.record()
    >>> points = epsilon_history(budget, [[10, budget.spent()]], budget.spent(), points=6)
    >>> [p[0] for p in points]
    [0, 5, 10, 15, 20]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from defenses.privacy import accounting
from defenses.privacy.budget import PrivacyBudget
from defenses.privacy.config import PrivacyConfig
from defenses.privacy.schedule import Schedule
from defenses.privacy.validity import ValidityMonitor
from securetrain.report.sections import PrivacySection

HISTORY_POINTS = 12
"""At least this many ``[step, epsilon]`` points in the report's ``epsilon_history``."""

NOISE_RNG = "torch.Generator (not a cryptographically secure source; secure_mode is not available)"


def epsilon_history(
    budget: PrivacyBudget, epoch_points: Sequence[Sequence[float]], spent: float, points: int = HISTORY_POINTS
) -> list[list[float | None]]:
    """Epsilon after each epoch, at 0 and at the last step (``spent``), filled out to a curve of ``points``."""
    total = budget.steps
    marks = {int(p[0]): float(p[1]) for p in epoch_points}
    marks[0] = 0.0
    if total and total not in marks:
        marks[total] = spent
    if len(marks) < points and total:
        for step, eps in budget.curve(points - len(marks) + 2):
            marks.setdefault(int(step), float(eps))
    return [[s, e if math.isfinite(e) else None] for s, e in sorted(marks.items())]


def privacy_section(
    settings: PrivacyConfig,
    schedule: Schedule,
    budget: PrivacyBudget,
    monitor: ValidityMonitor,
    *,
    epoch_points: Sequence[Sequence[float]],
    stopped_by_budget: bool,
    engine_name: str | None,
    model_changes: Sequence[str],
) -> PrivacySection:
    """The report's ``privacy`` section (the schema's keys plus history, target, engine, model changes)."""
    eps = budget.spent()
    warnings_ = monitor.warnings()
    caveat = accounting.CAVEATS.get(budget.report_accountant)
    if caveat:
        warnings_.append(caveat)
    figures = budget.accountant_figures()
    if figures:
        warnings_.append(
            f"the gdp accountant gives epsilon {figures['gdp']:.4g} and the prv accountant {figures['prv']:.4g} "
            f"for the same history; the reported epsilon is the larger ({eps:.4g}), an upper bound"
        )
    if schedule.delta_too_large:
        warnings_.append(schedule.delta_warning())
    section: dict[str, Any] = {
        "epsilon": eps if math.isfinite(eps) else None,
        "delta": schedule.delta,
        "accountant": budget.report_accountant,
        "noise_multiplier": budget.noise_multiplier,
        "max_grad_norm": settings.max_grad_norm,
        "sample_rate": schedule.sample_rate,
        "steps": budget.steps,
        "poisson_sampling": settings.poisson_sampling,
        "valid": monitor.valid,
        "warnings": warnings_,
        "epsilon_history": epsilon_history(budget, epoch_points, eps),
        "target_epsilon": settings.epsilon,
        "max_epsilon": settings.max_epsilon,
        "budget_steps": budget.budget_steps,
        "planned_steps": schedule.planned_steps,
        "stopped_by_budget": stopped_by_budget,
        "expected_batch_size": schedule.expected_batch_size,
        "physical_batch_size": settings.physical_batch_size,
        "dataset_size": schedule.dataset_size,
        "grad_sample_mode": engine_name,
        "grad_sample_mode_requested": settings.grad_sample_mode,
        "model_changes": list(model_changes),
        "validity_checks": monitor.codes(),
        "noise_rng": NOISE_RNG,
        "ema_decay": settings.ema_decay,
    }
    return PrivacySection.from_dict(section)


__all__ = ["HISTORY_POINTS", "epsilon_history", "privacy_section"]
