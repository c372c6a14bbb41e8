"""The privacy-utility curve: train at several epsilons and beside a non-private baseline.

Each model is a complete run directory (``DIR/non_private``, ``DIR/epsilon_1``, ...); the
sweep's own ``DIR/report.json`` has an extra ``sweep`` section
``{"points": [{"epsilon", "accuracy", ...}], "non_private_accuracy"}`` that the report
renders as a plot. Its ``accuracy`` is the non-private baseline's. On data sets with a
validation split (the embedded ones) every point also has ``validation_accuracy``: choose
settings by it, not by the test figure.

Example:
    >>> import tempfile
    >>> from securetrain.training import TrainConfig
    >>> from defenses.privacy import sweep
    >>> result = sweep(TrainConfig(data="breast_cancer", epochs=1, progress=False), [2.0, 8.0],
    ...                tempfile.mkdtemp(), privacy={"accountant": "rdp"}, write_html=False)
    >>> [p["epsilon"] for p in result.points], all(p["epsilon_spent"] <= p["epsilon"] for p in result.points)
    ([2.0, 8.0], True)
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from securetrain.errors import PrivacyError
from securetrain.report import Report
from securetrain.training import TrainConfig


@dataclass
class SweepResult:
    """The sweep's directory, report, curve points and baseline accuracy."""

    run_dir: Path
    report: Report
    points: list[dict[str, Any]]
    non_private_accuracy: float | None


def _label(eps: float) -> str:
    return f"epsilon_{eps:g}".replace(".", "p")


def sweep(
    config: TrainConfig,
    epsilons: Sequence[float],
    out_dir: str | os.PathLike[str],
    *,
    privacy: dict[str, Any] | None = None,
    non_private: bool = True,
    non_private_config: TrainConfig | None = None,
    write_html: bool = True,
) -> SweepResult:
    """Train ``config`` once per epsilon (and once without privacy) and write the curve.

    ``privacy``: keyword arguments for every :class:`DifferentialPrivacy` (``delta``,
    ``max_grad_norm``, ``accountant``, ...); ``non_private_config``: the baseline's own
    settings (default: ``config``).
    """
    from defenses.privacy.defense import DifferentialPrivacy
    from securetrain.runs import check_pretraining_settings, train

    eps_list = [float(e) for e in epsilons]
    if not eps_list:
        raise PrivacyError("give at least one epsilon to sweep, e.g. 0.5,1,2,4,8")
    bad = [e for e in eps_list if not e > 0]
    if bad:
        raise PrivacyError(f"every epsilon must be positive, got {bad}")
    kwargs = dict(privacy or {})
    for forbidden in ("epsilon", "noise_multiplier"):
        if forbidden in kwargs:
            raise PrivacyError(f"privacy= must not set {forbidden!r}: the sweep sets the target epsilon of each run")
    DifferentialPrivacy(epsilon=eps_list[0], **kwargs)  # bad settings are refused before any training
    for each in (config, non_private_config) if non_private else (config,):
        if each is not None:
            check_pretraining_settings(each)  # refused before the output folder is made
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    baseline = None
    if non_private:
        # a sweep owns its output folder: running it again replaces its runs
        baseline = train(non_private_config or config, out / "non_private", [], write_html=write_html, overwrite=True)
    points: list[dict[str, Any]] = []
    last = None
    from tqdm.auto import tqdm

    for eps in tqdm(sorted(eps_list), desc="privacy-utility sweep", unit="run", disable=not config.progress):
        run = train(
            config,
            out / _label(eps),
            [DifferentialPrivacy(epsilon=eps, **kwargs)],
            write_html=write_html,
            overwrite=True,
        )
        priv: Mapping[str, Any] = run.report.privacy or {}
        points.append(
            {
                "epsilon": eps,
                "accuracy": run.report.accuracy,
                "validation_accuracy": _validation_accuracy(run.model, config),
                "epsilon_spent": priv.get("epsilon"),
                "delta": priv.get("delta"),
                "noise_multiplier": priv.get("noise_multiplier"),
                "steps": priv.get("steps"),
                "valid": priv.get("valid"),
                "run_dir": str(run.run_dir),
            }
        )
        last = run
    ref = baseline or last
    assert ref is not None
    np_acc = baseline.report.accuracy if baseline is not None else None
    report = Report(
        data=dict(ref.report.data),
        model=dict(ref.report.model),
        accuracy=np_acc if np_acc is not None else max(p["accuracy"] for p in points),
        timing={"train_s": round(time.perf_counter() - t0, 3), "runs": len(points) + (1 if baseline else 0)},
        extra={
            "sweep": {
                "points": points,
                "non_private_accuracy": np_acc,
                "non_private_validation_accuracy": (
                    _validation_accuracy(baseline.model, non_private_config or config) if baseline is not None else None
                ),
                "non_private_run_dir": str(baseline.run_dir) if baseline is not None else None,
                "config": config.to_dict(),
                "non_private_config": (non_private_config or config).to_dict(),
                "privacy": kwargs,
            },
            "notes": [
                "accuracy is the non-private baseline's; each private model's accuracy is in sweep.points"
                if np_acc is not None
                else "accuracy is the best private model's (no non-private baseline was trained)"
            ],
        },
    )
    report.save(out, html=write_html)
    return SweepResult(run_dir=out, report=report, points=points, non_private_accuracy=np_acc)


def _validation_accuracy(model: Any, config: TrainConfig) -> float | None:
    """Accuracy of ``model`` on the data set's validation split (``None``: it has none, or the
    model was trained on it, ``train+validation``, so it is no held-out figure)."""
    from securetrain import data
    from securetrain.data.splits import TRAIN_AND_VALIDATION
    from securetrain.training import evaluate

    if config.train_split == TRAIN_AND_VALIDATION or "validation" not in data.get_info(config.data).splits:
        return None
    x, y = data.load(config.data, "validation", root=config.data_root)
    return float(evaluate(model, x, y, config.eval_batch_size)["accuracy"])


def with_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """``config`` with ``overrides`` applied (keys of :class:`TrainConfig`)."""
    return replace(config, **overrides)
