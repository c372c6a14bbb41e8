"""Audit a trained run directory: membership inference, epsilon lower bounds, consistency check.

Design (what is attacked, and what the shadow models see):

* **Target and ground truth.** The run trained on its whole train split: members are the train
  split, non-members the test split (random, stratified, disjoint splits of the same data).
* **Shadow models.** ``K`` models trained with the run's own recipe (same model, TrainConfig and
  defenses, differential privacy included) on random halves of the pool ``train + test``, each
  pool example in half of them. **LiRA online** compares the target's signal with the IN and OUT
  shadow models of each example; **LiRA offline** uses only the shadow models that never saw the
  example, i.e. data other than the target example. The threshold attacks (loss, confidence,
  entropy) use the target model alone.
* **Lower bounds.** For every attack, the Clopper-Pearson bound of
  :func:`attacks.audit.epsilon_lower_bound_from_scores` at the run's delta (threshold chosen on a
  random half of the targets, counted on the other half). It treats per-example outcomes as
  independent trials, the usual assumption of population membership inference. The one-run canary
  audit (Steinke et al. 2023) retrains the recipe once with ``canaries`` mislabelled held-out
  examples, each included with probability 1/2, and needs no such assumption.
* **Confidence.** ``alpha`` is split evenly (Bonferroni) between all bounds, so the largest of
  them holds with confidence ``1 - alpha``; the consistency check flags the run if it exceeds the
  reported epsilon.

Example:
    >>> import tempfile, securetrain
    >>> from securetrain.training import TrainConfig
    >>> d = tempfile.mkdtemp()
    >>> _ = securetrain.train(TrainConfig(data="breast_cancer", epochs=2, progress=False), d, write_html=False)
    >>> out = audit_membership_run(d, shadow_models=2, seed=0, canaries=40)
    >>> sorted(k for k in ("attack", "auc", "tpr_at_fpr", "advantage", "epsilon_lower_bound") if k in out)
    ['advantage', 'attack', 'auc', 'epsilon_lower_bound', 'tpr_at_fpr']
    >>> 0.0 <= out["auc"] <= 1.0 and "privacy_violated" not in out   # a non-private run
    True
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from attacks.checks import check_alpha, check_audit_delta, check_fprs, check_num_models
from attacks.membership.base import MembershipResult
from attacks.membership.metrics import DEFAULT_FPRS, DEFAULT_ROC_POINTS, fpr_key
from attacks.membership.recipe import TrainingRecipe
from attacks.membership.registry import (
    MEMBERSHIP_ATTACKS,
    SHADOW_ATTACKS,
    get_membership_attack,
)
from attacks.membership.shadow import Recipe, train_shadow_models
from securetrain.deprecation import deprecated_aliases
from securetrain.errors import AttackError
from securetrain.report.sections import MembershipSection

log = logging.getLogger("attacks.membership")

DEFAULT_ATTACKS: tuple[str, ...] = ("loss", "confidence", "entropy", "lira-offline", "lira-online")
DEFAULT_CANARIES = 200
DEFAULT_DELTA = 1e-5
"""delta used for the bounds of a run that reports none (a non-private run)."""

DESIGN = (
    "members: the run's train split; non-members: its test split. Shadow models: the run's recipe "
    "(model, TrainConfig, defenses) on random halves of train+test, each example in half of them; "
    "lira-online uses IN and OUT shadow models per example, lira-offline only OUT ones. Bounds: "
    "Clopper-Pearson at the run's delta, threshold chosen on a random half of the targets and counted "
    "on the other; one-run canary audit (Steinke et al. 2023) on a retraining with mislabelled "
    "held-out canaries; alpha split evenly between all bounds."
)


def _strongest(results: dict[str, MembershipResult]) -> str:
    """The attack with the highest TPR at the lowest FPR, then at 1%, then AUC."""

    def key(name: str) -> tuple[float, ...]:
        m = results[name].metrics
        return tuple(m.tpr_at_fpr[f] for f in sorted(m.tpr_at_fpr)) + (m.auc,)

    return max(results, key=key)


def audit_membership_run(
    run_dir: str | os.PathLike[str],
    shadow_models: int = 4,
    seed: int = 0,
    *,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    canaries: int = DEFAULT_CANARIES,
    delta: float | None = None,
    alpha: float = 0.05,
    fprs: Sequence[float] = DEFAULT_FPRS,
    max_roc_points: int = DEFAULT_ROC_POINTS,
    progress: bool = False,
    model: str | None = None,
    data: str | None = None,
    device: str | None = None,
) -> MembershipSection:
    """Run the membership attacks and privacy audits on the run in ``run_dir``; return the report section.

    ``shadow_models`` (K >= 1; online LiRA is skipped below 2) shadow models are trained with the
    run's recipe; ``canaries`` (0 to skip) sets the size of the one-run canary audit, capped at the
    size of the test split. ``delta`` defaults to the run's (``1e-5`` for a non-private run).
    ``model`` / ``data``: the run's import-path specs, passed again to allow importing them (see
    :class:`securetrain.rundir.RunDir`). ``device`` (``cpu``, ``cuda``, ``auto``) is where the
    target is evaluated and the shadow models train (default: the run's training device).
    The result holds the schema keys of ``report.membership`` (``attack``, ``auc``, ``tpr_at_fpr``,
    ``advantage``, ``epsilon_lower_bound``), the ROC curve of every attack (``roc_curves``), per-attack
    figures (``attacks``), the canary audit (``canary``) and, when the run reports a privacy budget,
    ``privacy_violated`` and ``consistency``. Everything is deterministic under ``seed``.
    """
    from securetrain.devices import resolve_device
    from securetrain.report import Report
    from securetrain.rundir import RunDir

    t_start = time.perf_counter()
    settings = check_audit_settings(shadow_models, attacks, canaries, delta, alpha, fprs)
    if device is not None:
        resolve_device(device)  # a bad device fails before anything is loaded
    run = RunDir.open(run_dir, model=model, data=data)
    report = Report.from_json(run.path)
    target = run.load_model()
    privacy = report.privacy or None
    run_delta = delta if delta is not None else (privacy.delta if privacy is not None else None)
    train = run.load_data("train")
    test = run.load_data("test")
    recipe = TrainingRecipe.from_config(run.config)
    if device is not None:
        target = target.to(resolve_device(device))
        recipe = dataclasses.replace(recipe, train_config=dataclasses.replace(recipe.train_config, device=device))
    epsilon = privacy.epsilon if privacy is not None else None
    return membership_section(
        target,
        recipe,
        train,
        test,
        num_classes=recipe.num_classes,
        settings=settings,
        seed=seed,
        delta=float(run_delta) if run_delta is not None else None,
        claimed_epsilon=float(epsilon) if epsilon is not None else None,
        max_roc_points=max_roc_points,
        progress=progress,
        design=DESIGN,
        label=str(run_dir),
        t_start=t_start,
    )


@dataclasses.dataclass(frozen=True)
class AuditSettings:
    """Checked settings of a membership audit."""

    shadow_models: int
    attacks: list[str]
    canaries: int
    alpha: float
    fprs: tuple[float, ...]
    notes: list[str]


def check_audit_settings(
    shadow_models: int,
    attacks: Sequence[str],
    canaries: int,
    delta: float | None,
    alpha: float,
    fprs: Sequence[float],
) -> AuditSettings:
    """Check every setting before anything is trained (unknown attack names included)."""
    k = check_num_models(shadow_models)
    if isinstance(canaries, bool) or not isinstance(canaries, int) or canaries < 0 or canaries == 1:
        raise AttackError(f"canaries must be 0 (skip the canary audit) or at least 2, got {canaries!r}")
    check_alpha(alpha)
    names = list(dict.fromkeys([attacks] if isinstance(attacks, str) else attacks))
    if not names:
        raise AttackError("no membership attack selected; choose from: " + ", ".join(MEMBERSHIP_ATTACKS.names()))
    for name in names:
        MEMBERSHIP_ATTACKS.get(name)  # unknown names fail before any training
    targets = check_fprs(fprs)
    if delta is not None:
        check_audit_delta(delta)
    notes: list[str] = []
    if k < 2 and "lira-online" in names:
        if names == ["lira-online"]:
            raise AttackError("lira-online needs at least 2 shadow models; use shadow_models >= 2 or lira-offline")
        names.remove("lira-online")
        notes.append("lira-online skipped: it needs at least 2 shadow models")
    return AuditSettings(
        shadow_models=k, attacks=names, canaries=int(canaries), alpha=float(alpha), fprs=targets, notes=notes
    )


def membership_section(
    target: nn.Module,
    recipe: Recipe,
    members: tuple[torch.Tensor, torch.Tensor],
    nonmembers: tuple[torch.Tensor, torch.Tensor],
    *,
    num_classes: int,
    settings: AuditSettings,
    seed: int,
    delta: float | None,
    claimed_epsilon: float | None,
    max_roc_points: int,
    progress: bool,
    design: str,
    label: str,
    t_start: float,
) -> MembershipSection:
    """The ``membership`` report section: attacks, bounds, canary audit and consistency check.

    Shared by :func:`audit_membership_run` and :func:`attacks.membership.audit`; ``recipe``
    retrains the target's recipe on any ``(x, y)`` (shadow models, canary audit).
    """
    from attacks.audit.bounds import epsilon_lower_bound_from_scores
    from attacks.audit.canary import canary_audit, make_canaries
    from attacks.audit.consistency import check_consistency

    k, names, notes = settings.shadow_models, settings.attacks, list(settings.notes)
    used_delta = float(delta) if delta is not None else DEFAULT_DELTA
    shadows = None
    t0 = time.perf_counter()
    if any(n in SHADOW_ATTACKS for n in names):
        pool = (torch.cat([members[0], nonmembers[0]]), torch.cat([members[1], nonmembers[1]]))
        shadows = train_shadow_models(recipe, pool, k, seed=seed, progress=progress)
    t_shadow = time.perf_counter() - t0

    t0 = time.perf_counter()
    results = {n: get_membership_attack(n, shadows)(target, members, nonmembers, fprs=settings.fprs) for n in names}
    t_attacks = time.perf_counter() - t0

    n_bounds = len(results) + (1 if settings.canaries else 0)
    alpha_each = settings.alpha / n_bounds
    bounds = {
        n: epsilon_lower_bound_from_scores(
            r.member_scores, r.nonmember_scores, delta=used_delta, alpha=alpha_each, seed=seed
        )
        for n, r in results.items()
    }
    all_bounds = {n: b.epsilon for n, b in bounds.items()}

    canary_section = None
    t0 = time.perf_counter()
    if settings.canaries:
        m = min(settings.canaries, int(nonmembers[0].shape[0]))
        if m < settings.canaries:
            notes.append(f"canary audit used {m} canaries (the number of non-members), not {settings.canaries}")
        cx, cy = make_canaries(nonmembers[0], nonmembers[1], num_classes, m, seed=seed, mislabel=True)
        canary = canary_audit(recipe, members, (cx, cy), delta=used_delta, alpha=alpha_each, seed=seed)
        canary_section = canary.to_dict()
        all_bounds["canary"] = canary.epsilon_lower_bound
    t_canary = time.perf_counter() - t0

    head = _strongest(results)
    hm = results[head].metrics
    best_source = max(all_bounds, key=lambda n: all_bounds[n])
    best_bound = all_bounds[best_source]
    out: dict[str, Any] = {
        "attack": head,
        "auc": round(hm.auc, 6),
        "tpr_at_fpr": {fpr_key(f): round(t, 6) for f, t in hm.tpr_at_fpr.items()},
        "advantage": round(hm.advantage, 6),
        "epsilon_lower_bound": _r(best_bound),
        "epsilon_lower_bound_source": best_source if best_bound > 0 else None,
        "confidence": 1.0 - settings.alpha,
        "delta": used_delta,
        "roc_curves": {n: r.metrics.roc.downsample(max_roc_points).to_dict() for n, r in results.items()},
        "attacks": {
            n: {
                **{k2: (round(v, 6) if isinstance(v, float) else v) for k2, v in r.summary().items()},
                "epsilon_lower_bound": _r(bounds[n].epsilon),
                "bound": bounds[n].to_dict(),
            }
            for n, r in results.items()
        },
        "canary": canary_section,
        "shadow_models": k if shadows is not None else 0,
        "seed": int(seed),
        "members": hm.n_members,
        "nonmembers": hm.n_nonmembers,
        "min_resolvable_fpr": round(hm.min_resolvable_fpr, 6),
        "design": design,
        "notes": notes,
    }
    if claimed_epsilon is not None:
        check = check_consistency(claimed_epsilon, used_delta, all_bounds, confidence=1.0 - settings.alpha)
        out["privacy_violated"] = check.violated
        out["consistency"] = check.explanation
        out["consistency_check"] = check.to_dict()
        if check.violated:
            log.warning("privacy audit of %s: %s", label, check.explanation)
    out["timing_s"] = {
        "shadow_training": round(t_shadow, 3),
        "attacks": round(t_attacks, 3),
        "canary_audit": round(t_canary, 3),
        "total": round(time.perf_counter() - t_start, 3),
    }
    return MembershipSection.from_dict(out)


def _r(v: float) -> float:
    return round(float(v), 6) if math.isfinite(v) else float(v)


_DEPRECATED = {"audit_run": "audit_membership_run"}


__getattr__ = deprecated_aliases(__name__, _DEPRECATED)

__all__ = [
    "DEFAULT_ATTACKS",
    "DEFAULT_CANARIES",
    "DESIGN",
    "AuditSettings",
    "audit_membership_run",
    "check_audit_settings",
    "membership_section",
]
