"""Audit the model of a run directory on its data set's test split.

Example:
    >>> import tempfile
    >>> import securetrain
    >>> from securetrain.training import TrainConfig
    >>> from attacks.evasion.run_dir import audit_robustness_run
    >>> d = tempfile.mkdtemp()
    >>> _ = securetrain.train(TrainConfig(data="breast_cancer", epochs=1, progress=False), d, write_html=False)
    >>> result = audit_robustness_run(d, attacks=["fgsm"], epsilons=[0.0, 0.5], samples=50, checks=False, progress=False)
    >>> result.n_samples, result.bounds
    (50, (-12.0, 12.0))
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from attacks.evasion.audit import RobustnessResult, audit_robustness
from attacks.evasion.base import Attack
from securetrain.deprecation import deprecated_aliases
from securetrain.errors import ConfigurationError
from securetrain.validation import check_count


def audit_robustness_run(
    run_dir: str | os.PathLike[str],
    *,
    attacks: Sequence[str | Attack] | None = None,
    epsilons: Sequence[float] | None = None,
    norm: str = "linf",
    preset: str = "default",
    samples: int | None = None,
    seed: int = 0,
    batch_size: int = 512,
    checks: bool = True,
    progress: bool = True,
    model: str | None = None,
    data: str | None = None,
    device: str | None = None,
) -> RobustnessResult:
    """Load ``run_dir``'s model and audit it on (a seeded random subset of ``samples`` of) the
    test split of its data set, within the data set's bounds. The report is not touched:
    put ``result.to_section()`` into ``report.robustness`` and save it.

    ``model`` / ``data``: the run's import-path specs, passed again to allow importing them (see
    :class:`securetrain.rundir.RunDir`). ``device``: ``cpu`` (default), ``cuda`` or ``auto``."""
    from securetrain.devices import resolve_device
    from securetrain.rundir import RunDir

    where = resolve_device(device)
    run = RunDir.open(run_dir, model=model, data=data)
    run.check_specs_given()
    bounds = run.data.bounds
    x, y = run.load_data("test")
    if samples is not None:
        samples = check_count("samples", samples, error=ConfigurationError)
        if samples < x.shape[0]:
            idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:samples].sort().values
            x, y = x[idx], y[idx]
    target = run.load_model().to(where)
    return audit_robustness(
        target,
        x,
        y,
        attacks=attacks,
        epsilons=epsilons,
        bounds=(float(bounds[0]), float(bounds[1])),
        norm=norm,
        preset=preset,
        num_classes=run.data.num_classes,
        seed=seed,
        batch_size=batch_size,
        checks=checks,
        progress=progress,
    )


__getattr__ = deprecated_aliases(__name__, {"audit_run": "audit_robustness_run"})

__all__ = ["audit_robustness_run"]
