"""The white-box one-run audit of DP-SGD: can the run's own implementation be caught spending more epsilon?

:func:`audit_dp_sgd` trains the run's recipe once more, through the same training loop, privacy
defense, per-sample engine, Poisson sampler, noise and (on several processes) distributed
reduction, with ``m`` Dirac gradient canaries (:mod:`attacks.audit.white_box`), each included in
the training set independently with probability 1/2. Every released step is observed (the
white-box, all-iterates threat model in which DP-SGD's accounting is stated): after every step
the privatized gradient at each canary coordinate is recorded (:mod:`attacks.audit.white_box`).
Three lower bounds on epsilon follow, each at confidence ``1 - alpha / 3`` so that the largest
holds at ``1 - alpha``:

* ``counting``: the one-run bound of Steinke, Nasr and Jagielski (2023) on the per-step
  likelihood-ratio score (:mod:`attacks.audit.likelihood`, computed with the *claimed* sample rate
  and noise): guess "included" for the ``k`` highest scores and "excluded" for the ``k`` lowest,
  count the right guesses (:func:`attacks.audit.audit_canary_scores`). It assumes nothing about
  the implementation.
* ``gaussian``: mu-GDP fitted to the two distributions of the linear statistic (the sum of the
  released gradients along the canary; :func:`attacks.audit.gaussian_epsilon_lower_bound`).
* ``mechanism``: the epsilon of the subsampled Gaussian mechanism the run really applied, its
  rate, sensitivity and noise measured from the released gradients with confidence limits
  (:mod:`attacks.audit.mechanism_fit`). It assumes the release is (canary when sampled) + data +
  Gaussian noise independent of the canaries, and is the one that approaches the claim.

The audit run's own privacy report (with the canaries, the data set is ``n + included``) is the
claim checked: a bound above it means the implementation does not deliver what it accounts.

Example (a private logistic regression: the bounds stay below the claim):
    >>> import torch
    >>> from securetrain.training import TrainConfig
    >>> from attacks.membership import TrainingRecipe
    >>> recipe = TrainingRecipe(model_name="mlp", input_shape=(8,), num_classes=2, bounds=(-1.0, 1.0),
    ...     model_kwargs={"hidden": [4]}, train_config=TrainConfig(epochs=2, batch_size=64, optimizer="sgd",
    ...     lr=0.5, momentum=0.0, progress=False),
    ...     defense_configs=[{"name": "privacy", "noise_multiplier": 1.0, "delta": 1e-5, "accountant": "rdp"}])
    >>> x = torch.rand(512, 8) * 2 - 1
    >>> result = audit_dp_sgd(recipe, canaries=16, train=(x, (x[:, 0] > 0).long()), seed=0)
    >>> result.m, result.violated, 0 <= result.epsilon_lower_bound <= result.claimed_epsilon
    (16, False, True)
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.audit.canary import CanaryAuditResult, audit_canary_scores
from attacks.audit.gaussian import GaussianBound, gaussian_epsilon_lower_bound
from attacks.audit.likelihood import likelihood_ratio_scores
from attacks.audit.mechanism_fit import MechanismFit, fit_subsampled_gaussian
from attacks.audit.white_box import DEFAULT_NORM_SCALE, DiracCanaryPlanter
from attacks.checks import check_alpha, check_xy
from attacks.membership.recipe import TrainingRecipe
from securetrain.errors import AttackError
from securetrain.report.sections import MembershipSection
from securetrain.training import AcceptsGradientCanaries, Defense

log = logging.getLogger("attacks.audit")

MODES = ("white-box",)
"""Threat models :func:`audit_dp_sgd` implements."""

DEFAULT_DP_CANARIES = 1000
HISTOGRAM_BINS = 30
BOUNDS = 3
"""Bounds computed (counting, gaussian, mechanism); each holds at ``1 - alpha / BOUNDS``, the largest at ``1 - alpha``."""
METHOD_LABELS = {
    "counting": "counting bound, no assumption on the implementation",
    "gaussian": "Gaussian fit of the linear statistic",
    "mechanism": "epsilon of the measured subsampled Gaussian mechanism",
}
STATISTIC = "per-step likelihood ratio of the released gradient at the canary coordinate (claimed q and sigma)"


@dataclass(frozen=True)
class DPAuditResult:
    """Outcome of :func:`audit_dp_sgd`: both bounds, the larger, and the claim it was checked against."""

    epsilon_lower_bound: float
    method: str
    m: int
    confidence: float
    claimed_epsilon: float
    delta: float
    counting: CanaryAuditResult
    gaussian: GaussianBound
    mechanism: MechanismFit
    seconds: float
    train_seconds: float
    steps: int
    mode: str = "white-box"
    notes: tuple[str, ...] = ()
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    included: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)

    @property
    def violated(self) -> bool:
        """True when the lower bound exceeds the claimed epsilon (the claim is refuted)."""
        return self.epsilon_lower_bound > self.claimed_epsilon

    @property
    def explanation(self) -> str:
        """One sentence saying what the audit found."""
        pct = f"{100 * self.confidence:g}%"
        lb, eps = self.epsilon_lower_bound, self.claimed_epsilon
        head = (
            f"white-box DP-SGD audit ({self.m} Dirac gradient canaries, one run): epsilon >= {lb:.3f} "
            f"({METHOD_LABELS.get(self.method, self.method)}, {pct} confidence) at delta {self.delta:g}"
        )
        if self.violated:
            return (
                head + f" exceeds the claimed epsilon {eps:g}: the implementation does not deliver the accounted "
                "privacy (check the noise actually added, the clipping of every layer, the sample rate the "
                "accountant is given, the noise on every process, and that no non-private training is unaccounted)"
            )
        return (
            head + f", not above the claimed epsilon {eps:g}: consistent (an audit can refute a claim, never prove it)"
        )

    def histogram(self, bins: int = HISTOGRAM_BINS) -> dict[str, list[float]]:
        """The canary statistic's distribution for included and excluded canaries, on shared bins."""
        if self.scores.size == 0:
            return {"edges": [], "included": [], "excluded": []}
        edges = np.histogram_bin_edges(self.scores, bins=bins)
        inc, _ = np.histogram(self.scores[self.included], bins=edges)
        exc, _ = np.histogram(self.scores[~self.included], bins=edges)
        return {
            "edges": [round(float(e), 6) for e in edges],
            "included": [int(c) for c in inc],
            "excluded": [int(c) for c in exc],
        }

    def to_dict(self) -> dict[str, Any]:
        """The report's ``membership.dp_audit`` entry."""
        return {
            "epsilon_lower_bound": _r(self.epsilon_lower_bound),
            "method": self.method,
            "m": self.m,
            "canaries": self.m,
            "confidence": self.confidence,
            "seconds": round(self.seconds, 3),
            "mode": self.mode,
            "claimed_epsilon": _r(self.claimed_epsilon),
            "delta": self.delta,
            "violated": self.violated,
            "explanation": self.explanation,
            "counting": {**self.counting.to_dict(), "confidence": 1.0 - (1.0 - self.confidence) / BOUNDS},
            "gaussian": self.gaussian.to_dict(),
            "mechanism": self.mechanism.to_dict(),
            "audit_train_seconds": round(self.train_seconds, 3),
            "steps": self.steps,
            "statistic": STATISTIC,
            "histogram": self.histogram(),
            "notes": list(self.notes),
        }


def _r(v: float) -> float:
    return round(float(v), 6) if math.isfinite(v) else float(v)


def _placeholders(
    m: int, input_shape: tuple[int, ...], bounds: tuple[float, float], num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``m`` distinct random inputs inside ``bounds`` and random labels (their gradients are replaced)."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = float(bounds[0]), float(bounds[1])
    x = torch.rand((m, *input_shape), generator=g) * (hi - lo) + lo
    y = torch.randint(0, num_classes, (m,), generator=g)
    return x, y


def audit_dp_sgd(
    source: str | os.PathLike[str] | TrainingRecipe,
    *,
    canaries: int = DEFAULT_DP_CANARIES,
    mode: str = "white-box",
    train: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    alpha: float = 0.05,
    norm_scale: float = DEFAULT_NORM_SCALE,
) -> DPAuditResult:
    """Audit the DP-SGD implementation behind a run directory or a recipe with one extra training run.

    ``source``: a run directory (its recipe and training split are used) or a
    :class:`~attacks.membership.TrainingRecipe` (then ``train`` is required). ``canaries`` (m >= 4):
    Dirac canaries, each included with probability 1/2; the model needs at least ``m`` trainable
    parameters. ``alpha``: one minus the confidence of the reported (larger) bound.

    Raises :class:`securetrain.errors.AttackError` for a recipe without a defense that accepts
    gradient canaries (a non-private run), an unknown mode, or bad sizes.

    Under ``torch.distributed`` (several processes), every rank calls this with the same arguments;
    the canaries then travel through the run's distributed sampling and reduction.
    """
    t_start = time.perf_counter()
    if mode not in MODES:
        raise AttackError(f"unknown DP audit mode {mode!r}; choose from: {', '.join(MODES)}")
    if isinstance(canaries, bool) or not isinstance(canaries, int) or canaries < 4:
        raise AttackError(f"the DP-SGD audit needs at least 4 canaries, got {canaries!r}")
    check_alpha(alpha)
    notes: list[str] = []
    if isinstance(source, TrainingRecipe):
        if train is None:
            raise AttackError("auditing a recipe needs its training data: pass train=(x, y)")
        recipe = source
        train_xy = check_xy(train, "the training data")
    else:
        from securetrain.rundir import RunDir

        run = RunDir.open(Path(source))
        recipe = TrainingRecipe.from_config(run.config)
        train_xy = run.load_data("train") if train is None else check_xy(train, "the training data")

    m = int(canaries)
    rng = np.random.default_rng(seed)
    included = rng.random(m) < 0.5
    cx, cy = _placeholders(m, tuple(recipe.input_shape), recipe.bounds, recipe.num_classes, seed + 7919)
    planter = DiracCanaryPlanter(cx, seed=seed, norm_scale=norm_scale)
    idx = torch.from_numpy(np.flatnonzero(included))
    audit_xy = (torch.cat([train_xy[0], cx[idx].to(train_xy[0].dtype)]), torch.cat([train_xy[1], cy[idx]]))

    hosts: list[Defense] = []

    def prepare(defenses: list[Defense]) -> list[Defense]:
        for d in defenses:
            if isinstance(d, AcceptsGradientCanaries):
                d.insert_gradient_canaries(planter)
                hosts.append(d)
        if not hosts:
            raise AttackError(
                "the white-box DP-SGD audit needs a run trained with differential privacy (--dp): none of its "
                f"defenses ({', '.join(d.name for d in defenses) or 'none'}) hosts gradient canaries"
            )
        if len(hosts) > 1:
            raise AttackError(f"the white-box audit needs one defense that hosts gradient canaries, found {len(hosts)}")
        return [*defenses, planter]

    t0 = time.perf_counter()
    result = recipe.run(audit_xy, int(seed) * 1000 + 998, prepare=prepare)
    train_seconds = time.perf_counter() - t0
    privacy = result.sections.get("privacy") or {}
    claimed = privacy.get("epsilon")
    if claimed is None:
        raise AttackError("the audit run reported no epsilon; cannot check a claim")
    delta = float(privacy["delta"])
    if planter.rows_planted == 0:
        notes.append("no canary was ever sampled: the run took too few steps for a meaningful audit")
    if not privacy.get("valid", True):
        notes.append("the audit run's own privacy report is not valid: " + "; ".join(privacy.get("warnings") or []))

    if included.sum() < 2 or (~included).sum() < 2:
        raise AttackError(f"too few canaries on one side ({int(included.sum())} included of {m}); use more canaries")
    grads, sampled = _all_ranks(*planter.observations())
    units = float(privacy.get("expected_batch_size") or 1) / float(privacy.get("max_grad_norm") or 1.0)
    z = grads * units  # the clipped canary adds 1 in these units
    sigma, q = float(privacy.get("noise_multiplier") or 0.0), float(privacy.get("sample_rate") or 0.0)
    if sigma > 0 and 0 < q <= 1:
        scores = likelihood_ratio_scores(z, sample_rate=q, noise_multiplier=sigma)
    else:  # a claim without noise or rate: the linear statistic is the score
        scores = z.sum(axis=1)
        notes.append("the claim gives no noise multiplier or sample rate: the counting bound uses the linear statistic")
    counting = audit_canary_scores(scores, included, delta=delta, alpha=alpha / BOUNDS)
    linear = z.sum(axis=1)
    gaussian = gaussian_epsilon_lower_bound(linear[included], linear[~included], delta=delta, alpha=alpha / BOUNDS)
    mechanism = fit_subsampled_gaussian(
        z, sampled, included, groups=planter.parameter_groups, delta=delta, alpha=alpha / BOUNDS
    )
    bound, method = max(
        (counting.epsilon_lower_bound, "counting"), (gaussian.epsilon, "gaussian"), (mechanism.epsilon, "mechanism")
    )
    out = DPAuditResult(
        epsilon_lower_bound=float(bound),
        method=method,
        m=m,
        confidence=1.0 - alpha,
        claimed_epsilon=float(claimed),
        delta=delta,
        counting=counting,
        gaussian=gaussian,
        mechanism=mechanism,
        seconds=time.perf_counter() - t_start,
        train_seconds=train_seconds,
        steps=int(privacy.get("steps") or 0),
        notes=tuple(notes),
        scores=scores,
        included=included,
    )
    if out.violated:
        log.warning("%s", out.explanation)
    return out


def _all_ranks(grads: np.ndarray, sampled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The observations with every rank's record of which canaries were sampled (each rank marks its own shard)."""
    from securetrain.distributed.context import get_context

    ctx = get_context()
    if not ctx.active:
        return grads, sampled
    import torch.distributed as dist

    counts = torch.from_numpy(sampled.astype(np.int32))
    dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=ctx.cpu_group)
    return grads, counts.numpy() > 0


def merge_into_membership(
    section: Mapping[str, Any] | MembershipSection | None, result: DPAuditResult
) -> dict[str, Any]:
    """A report ``membership`` section with ``dp_audit`` added (a minimal one if there was none).

    The section's ``epsilon_lower_bound`` becomes the larger of its own and the audit's; when the
    audit refutes the claim, ``privacy_violated`` and ``consistency`` say so, which
    :meth:`securetrain.report.Report.set_membership` turns into ``privacy.valid = false``.
    """
    if isinstance(section, MembershipSection):
        section = section.to_dict()
    out: dict[str, Any] = (
        dict(section)
        if section
        else {"attack": "dp-audit", "auc": None, "tpr_at_fpr": {}, "advantage": None, "epsilon_lower_bound": 0.0}
    )
    out["dp_audit"] = result.to_dict()
    previous = out.get("epsilon_lower_bound")
    if not isinstance(previous, (int, float)) or result.epsilon_lower_bound > float(previous):
        out["epsilon_lower_bound"] = _r(result.epsilon_lower_bound)
        out["epsilon_lower_bound_source"] = "dp_audit"
    if result.violated:
        out["privacy_violated"] = True
        out["consistency"] = result.explanation
    return out


__all__ = ["DEFAULT_DP_CANARIES", "MODES", "DPAuditResult", "audit_dp_sgd", "merge_into_membership"]
