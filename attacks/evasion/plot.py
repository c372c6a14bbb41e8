"""The robustness curve (robust accuracy against epsilon) of an audit, as data or a figure.

The report draws the same figure from its ``robustness`` section (the ``robustness`` plotter
in :mod:`securetrain.report.plots`); this module gives it to Python users directly.

Example:
    >>> section = {"norm": "linf", "epsilons": [0.0, 0.1], "attacks": {"pgd": [0.9, 0.4]},
    ...            "worst_case": [0.9, 0.4], "flags": []}
    >>> robustness_curves(section)["worst case"]
    [0.9, 0.4]
    >>> type(robustness_figure(section)).__name__
    'Figure'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attacks.evasion.audit import RobustnessResult


def _section(result: RobustnessResult | Mapping[str, Any]) -> Mapping[str, Any]:
    return result.to_section() if isinstance(result, RobustnessResult) else result


def robustness_curves(result: RobustnessResult | Mapping[str, Any]) -> dict[str, list[float]]:
    """``{"epsilons": [...], attack: [robust accuracy per epsilon], ..., "worst case": [...]}``."""
    s = _section(result)
    out: dict[str, list[float]] = {"epsilons": list(s["epsilons"])}
    out.update({k: list(v) for k, v in s["attacks"].items()})
    out["worst case"] = list(s["worst_case"])
    return out


def robustness_figure(result: RobustnessResult | Mapping[str, Any]) -> Any:
    """A matplotlib ``Figure``: one line per attack plus the worst case (Agg backend, no display)."""
    from securetrain.report.plots import plot_robustness

    return plot_robustness({"robustness": dict(_section(result))})
