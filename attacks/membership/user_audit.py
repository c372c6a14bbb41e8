"""The one-call membership audit of your own model and training recipe.

``audit(model, train_fn, members, non_members, shadow_models=K)`` runs what
``securetrain audit DIR --membership`` runs on a run directory, on a model trained by your own
code: the threshold attacks on ``model``, LiRA (offline and online) against ``K`` shadow models
that ``train_fn`` trains on random halves of ``members + non_members``, the Clopper-Pearson
epsilon lower bound of every attack, the one-run canary audit (``train_fn`` retrained once on
``members`` plus a random half of mislabelled non-members), and, when you state the epsilon
your recipe claims, the consistency check. ``alpha`` is split evenly between all the bounds
(Bonferroni), so the largest of them holds with confidence ``1 - alpha``. It returns the same
report section as the run-directory audit (``report.membership``).

``train_fn(dataset, seed) -> nn.Module`` is your training: ``dataset`` is a
``torch.utils.data.TensorDataset`` of ``(x, y)`` (``dataset.tensors`` gives both), ``seed`` an
int to seed initialisation, data order and noise with. It must train a fresh model, the way
``model`` was trained (same architecture, settings and defenses: a DP recipe stays private).

Example:
    >>> import torch
    >>> from attacks.membership import audit
    >>> from securetrain.training import TrainConfig, fit
    >>> def train_fn(dataset, seed):
    ...     torch.manual_seed(seed)
    ...     cfg = TrainConfig(epochs=3, progress=False, seed=seed)
    ...     return fit(torch.nn.Linear(4, 2), dataset.tensors, None, cfg).model
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.rand(120, 4, generator=g), torch.randint(0, 2, (120,), generator=g)
    >>> model = train_fn(torch.utils.data.TensorDataset(x[:60], y[:60]), seed=0)
    >>> out = audit(model, train_fn, (x[:60], y[:60]), (x[60:], y[60:]), shadow_models=2, canaries=20)
    >>> out["members"], out["nonmembers"], out["shadow_models"], 0.0 <= out["auc"] <= 1.0
    (60, 60, 2, True)
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from attacks.membership.metrics import DEFAULT_FPRS, DEFAULT_ROC_POINTS
from attacks.membership.run_audit import DEFAULT_ATTACKS, DEFAULT_CANARIES, check_audit_settings, membership_section
from securetrain.errors import AttackError, DataError
from securetrain.report.sections import MembershipSection

TrainFn = Callable[[TensorDataset, int], nn.Module]
"""``train_fn(dataset, seed) -> nn.Module``: the user's own training recipe."""

DESIGN = (
    "members and non-members as given. Shadow models: the given train_fn on random halves of "
    "members+non-members, each example in half of them; lira-online uses IN and OUT shadow models per "
    "example, lira-offline only OUT ones. Bounds: Clopper-Pearson at delta, threshold chosen on a random "
    "half of the targets and counted on the other; one-run canary audit (Steinke et al. 2023) on a "
    "retraining with mislabelled non-members as canaries; alpha split evenly between all bounds."
)


def _as_xy(data: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    from securetrain.data.sources import as_tensors

    if not (isinstance(data, (tuple, list)) or isinstance(data, Dataset)):
        raise AttackError(f"{what} must be (x, y) tensors or a map-style Dataset of (x, y), got {type(data).__name__}")
    try:
        return as_tensors(data, what)
    except DataError as exc:
        raise AttackError(str(exc)) from None


def _check_train_fn(train_fn: object) -> TrainFn:
    if not callable(train_fn):
        raise AttackError(
            f"train_fn must be a callable train_fn(dataset, seed) -> nn.Module, got {type(train_fn).__name__}"
        )
    try:
        sig = inspect.signature(train_fn)
    except (TypeError, ValueError):
        return train_fn  # a builtin: no signature to check
    try:
        sig.bind(TensorDataset(torch.zeros(1)), 0)
    except TypeError as exc:
        raise AttackError(f"train_fn must be callable as train_fn(dataset, seed); it takes {sig}: {exc}") from None
    return train_fn


def _recipe(train_fn: TrainFn) -> Callable[[tuple[torch.Tensor, torch.Tensor], int], nn.Module]:
    """``train_fn`` as a shadow-model recipe ``((x, y), seed) -> model in eval mode``."""

    def recipe(xy: tuple[torch.Tensor, torch.Tensor], seed: int) -> nn.Module:
        model = train_fn(TensorDataset(xy[0], xy[1]), int(seed))
        if not isinstance(model, nn.Module):
            raise AttackError(f"train_fn returned a {type(model).__name__}; it must return the trained nn.Module")
        return model.eval()

    return recipe


def audit(
    model: nn.Module,
    train_fn: TrainFn,
    members: tuple[torch.Tensor, torch.Tensor] | Dataset[Any],
    non_members: tuple[torch.Tensor, torch.Tensor] | Dataset[Any],
    shadow_models: int = 4,
    *,
    seed: int = 0,
    num_classes: int | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    canaries: int = DEFAULT_CANARIES,
    alpha: float = 0.05,
    fprs: Sequence[float] = DEFAULT_FPRS,
    max_roc_points: int = DEFAULT_ROC_POINTS,
    progress: bool = False,
) -> MembershipSection:
    """Membership audit of ``model``, trained by ``train_fn`` on ``members``; ``non_members`` were held out.

    ``members`` / ``non_members``: ``(x, y)`` tensors (or arrays) or map-style Datasets of
    ``(x, y)`` pairs, disjoint. ``shadow_models`` (K >= 1; online LiRA needs 2) are trained by
    ``train_fn``; ``canaries`` (0 to skip; capped at the number of non-members) sizes the canary
    audit. ``num_classes`` defaults to the largest label + 1. ``epsilon`` (with ``delta``,
    default ``1e-5``): the privacy budget your recipe claims; when given, the result says whether
    the measured lower bound contradicts it (``privacy_violated``, ``consistency``). Returns the
    ``report.membership`` section (see :func:`attacks.membership.audit_membership_run`).
    Raises :class:`securetrain.errors.AttackError` for bad arguments, before training anything.
    """
    t_start = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise AttackError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    fn = _check_train_fn(train_fn)
    settings = check_audit_settings(shadow_models, attacks, canaries, delta, alpha, fprs)
    mem = _as_xy(members, "members")
    non = _as_xy(non_members, "non_members")
    if mem[0].shape[1:] != non[0].shape[1:]:
        raise AttackError(
            f"members are shaped {tuple(mem[0].shape[1:])} per sample but non_members {tuple(non[0].shape[1:])}"
        )
    labels_max = max(int(mem[1].max()), int(non[1].max()))
    if num_classes is None:
        num_classes = labels_max + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= labels_max:
        raise AttackError(f"num_classes must be an integer above the largest label ({labels_max}), got {num_classes!r}")
    if epsilon is not None and not (isinstance(epsilon, (int, float)) and epsilon >= 0):
        raise AttackError(f"epsilon (the budget your recipe claims) must be a number >= 0, got {epsilon!r}")
    return membership_section(
        model,
        _recipe(fn),
        mem,
        non,
        num_classes=int(num_classes),
        settings=settings,
        seed=seed,
        delta=delta,
        claimed_epsilon=float(epsilon) if epsilon is not None else None,
        max_roc_points=max_roc_points,
        progress=progress,
        design=DESIGN,
        label="the model",
        t_start=t_start,
    )


__all__ = ["DESIGN", "TrainFn", "audit"]
