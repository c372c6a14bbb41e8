"""Auto-PGD (Croce & Hein 2020), written directly in torch next to PGD: APGD-CE and APGD-T.

APGD is PGD without a step size to tune: it starts with a step of ``2 * epsilon``, adds
momentum, keeps the highest-loss point found, and at checkpoints (after 22%, then ever smaller
shares of the budget) halves the step of each sample whose loss rose in fewer than ``rho`` of
the steps since the last checkpoint, or whose best loss has not improved since then, restarting
it from its best point. ``APGD`` ascends the cross-entropy (or the DLR loss); ``APGDTargeted``
ascends the targeted DLR loss towards each of the ``targets`` most likely wrong classes in turn,
which breaks samples the untargeted losses miss (a model whose wrong-class logits are all far
below the top one). Every iterate is checked: a sample counts as fooled if any iterate
misclassifies it.

For models with randomness, ``eot_draws > 1`` averages each gradient over that many forward
passes (expectation over transformation).

Example:
    >>> import torch
    >>> from attacks.evasion.apgd import APGD, APGDTargeted
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 3)
    >>> x, y = torch.rand(16, 4), torch.randint(0, 3, (16,))
    >>> ce = APGD(steps=20)(model, x, y, [0.05, 0.5], seed=0)
    >>> t = APGDTargeted(steps=20, targets=2)(model, x, y, [0.05, 0.5], seed=0)
    >>> ce.robust_accuracy[1] <= ce.robust_accuracy[0], t.robust_accuracy[1] <= t.robust_accuracy[0]
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from attacks.evasion.base import Attack, AttackContext, Try, retry_unfooled
from attacks.evasion.losses import LOSSES, LossFn, expected_loss_and_input_grad, targeted_dlr
from attacks.evasion.norms import Norm, normalize_step, project
from attacks.evasion.registry import register_attack
from securetrain.errors import AttackError
from securetrain.validation import check_count

MOMENTUM = 0.75  # weight of the new gradient step against the previous move (the paper's alpha)


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step: ``ceil(p_j * steps)`` with ``p_0 = 0``,
    ``p_1 = 0.22`` and ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``.

    Example:
        >>> checkpoints(100)
        [22, 41, 57, 70, 80, 87, 93, 99]
    """
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt > 1.0:
            break
        p.append(nxt)
    return sorted({math.ceil(round(q * steps, 9)) for q in p[1:] if 0 < math.ceil(round(q * steps, 9)) < steps})


def _random_start(x0: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """A random point at (linf: near) the surface of the ball, as in the reference code."""
    if norm == "linf":
        t = torch.empty_like(x0).uniform_(-1.0, 1.0)
        scale = t.flatten(1).abs().amax(1).clamp_min(1e-12)
    else:
        t = torch.randn_like(x0)
        scale = t.flatten(1).norm(dim=1).clamp_min(1e-12)
    return x0 + eps * t / scale.reshape(-1, *([1] * (x0.dim() - 1)))


@dataclass(frozen=True, repr=False)
class _APGDBase(Attack):
    """The APGD loop; subclasses choose the losses (one per run) and how runs are repeated."""

    steps: int = 100
    restarts: int = 1
    rho: float = 0.75
    eot_draws: int = 1

    kind = "gradient"
    stochastic = True

    def __post_init__(self) -> None:
        check_count("steps", self.steps, error=AttackError, where=self.name)
        check_count("restarts", self.restarts, error=AttackError, where=self.name)
        check_count("eot_draws", self.eot_draws, error=AttackError, where=self.name)
        if not 0.0 < float(self.rho) < 1.0:
            raise AttackError(f"{self.name}: rho must lie in (0, 1), got {self.rho}")

    def with_eot(self, draws: int) -> Attack:
        return replace(self, eot_draws=check_count("eot_draws", draws, error=AttackError, where=self.name))

    def _project(self, x: torch.Tensor, x0: torch.Tensor, eps: float, ctx: AttackContext) -> torch.Tensor:
        lo, hi = ctx.bounds
        return project(x, x0, eps, self.norm).clamp_(lo, hi)

    def _ascend(
        self,
        net: nn.Module,
        x0: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        ctx: AttackContext,
        loss_fn: LossFn,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One APGD run: ``(highest-loss point, first misclassified iterate or x0, found mask)``."""
        n = x0.shape[0]
        view = (-1, *([1] * (x0.dim() - 1)))
        draws = self.eot_draws
        x = self._project(_random_start(x0, eps, self.norm), x0, eps, ctx)
        logits, loss, grad = expected_loss_and_input_grad(net, x, y, loss_fn, draws=draws, validate=True)
        found = logits.argmax(1) != y
        first = torch.where(found.reshape(view), x, x0)
        x_best, loss_best, grad_best = x.clone(), loss.clone(), grad.clone()
        eta = torch.full((n,), 2.0 * eps, dtype=x0.dtype, device=x0.device)
        ckpts = checkpoints(self.steps)
        last_ckpt = 0
        rises = torch.zeros(n, dtype=torch.long, device=x0.device)
        best_at_ckpt = loss_best.clone()
        halved_at_ckpt = torch.ones(n, dtype=torch.bool, device=x0.device)
        x_prev = x.clone()
        loss_cur = loss
        for k in range(self.steps):
            z = self._project(x + eta.reshape(view) * normalize_step(grad, self.norm), x0, eps, ctx)
            if k == 0:
                x_new = z
            else:
                x_new = self._project(x + MOMENTUM * (z - x) + (1.0 - MOMENTUM) * (x - x_prev), x0, eps, ctx)
            logits, loss, grad_new = expected_loss_and_input_grad(net, x_new, y, loss_fn, draws=draws)
            hit = (logits.argmax(1) != y) & ~found
            if hit.any():
                first[hit] = x_new[hit]
                found |= hit
            rises += (loss > loss_cur).long()
            better = loss > loss_best
            if better.any():
                x_best[better], loss_best[better], grad_best[better] = x_new[better], loss[better], grad_new[better]
            x_prev, x, grad, loss_cur = x, x_new, grad_new, loss
            if k + 1 in ckpts:
                window = k + 1 - last_ckpt
                stalled = rises.double() < self.rho * window
                no_gain = ~halved_at_ckpt & (loss_best <= best_at_ckpt)
                halve = stalled | no_gain
                if halve.any():
                    eta[halve] /= 2.0
                    x[halve], grad[halve], loss_cur[halve] = x_best[halve], grad_best[halve], loss_best[halve]
                    x_prev[halve] = x_best[halve]
                halved_at_ckpt = halve
                best_at_ckpt = loss_best.clone()
                rises.zero_()
                last_ckpt = k + 1
        return x_best, first, found

    def runs(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AttackContext) -> list[LossFn]:
        """The loss of each run, in order (a run is skipped for samples already fooled)."""
        raise NotImplementedError

    def run(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        epsilons: Sequence[float],
        ctx: AttackContext,
    ) -> list[torch.Tensor]:
        def one_run(eps: float, loss_fn: LossFn) -> Try:
            def attempt(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                x_best, first, f = self._ascend(model, inputs[idx], labels[idx], eps, ctx, _restrict(loss_fn, idx))
                return torch.where(f.reshape(-1, *([1] * (inputs.dim() - 1))), first, x_best), f

            return attempt

        # the runs (losses, targets) are derived afresh for every epsilon
        return retry_unfooled(
            inputs, epsilons, lambda eps: [one_run(eps, fn) for fn in self.runs(model, inputs, labels, ctx)]
        )

    def generate(
        self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, epsilon: float, ctx: AttackContext
    ) -> torch.Tensor:
        """The highest-loss point of the first run (for adversarial training)."""
        loss_fn = self.runs(model, inputs, labels, ctx)[0]
        x_best, _, _ = self._ascend(model, inputs, labels, epsilon, ctx, loss_fn)
        return x_best


class _Indexed:
    """A loss bound to per-sample extra data (targets), restricted to a subset of samples."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], extra: torch.Tensor):
        self.fn, self.extra = fn, extra

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.fn(logits, labels, self.extra)

    def subset(self, idx: torch.Tensor) -> _Indexed:
        return _Indexed(self.fn, self.extra[idx])


def _restrict(loss_fn: LossFn, idx: torch.Tensor) -> LossFn:
    return loss_fn.subset(idx) if isinstance(loss_fn, _Indexed) else loss_fn


@dataclass(frozen=True, repr=False)
class _APGDUntargeted(_APGDBase):
    loss: str = "ce"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in ("ce", "dlr"):
            raise AttackError(f"{self.name}: loss must be 'ce' or 'dlr', got {self.loss!r}")

    def runs(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AttackContext) -> list[LossFn]:
        return [LOSSES.get(self.loss)] * self.restarts


@dataclass(frozen=True, repr=False)
class _APGDTargetedBase(_APGDBase):
    targets: int = 9

    targeted = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count("targets", self.targets, error=AttackError, where=self.name)

    def runs(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AttackContext) -> list[LossFn]:
        """For each of the ``targets`` most likely wrong classes (ranked on the clean input),
        ``restarts`` runs on the targeted DLR loss towards it."""
        with torch.no_grad():
            logits = net(x)
        ranked = logits.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)
        count = min(self.targets, ctx.num_classes - 1)
        return [_Indexed(targeted_dlr, ranked[:, t]) for t in range(count) for _ in range(self.restarts)]


@register_attack
@dataclass(frozen=True, repr=False)
class APGD(_APGDUntargeted):
    """APGD in the Linf ball on the cross-entropy (``loss="ce"``, AutoAttack's APGD-CE) or on
    the DLR loss (``loss="dlr"``): ``steps`` iterations, ``restarts`` random starts."""

    name = "apgd-ce"
    norm = "linf"


@register_attack
@dataclass(frozen=True, repr=False)
class APGDL2(_APGDUntargeted):
    """APGD in the L2 ball (normalised-gradient steps), cross-entropy or DLR loss."""

    name = "apgd-ce-l2"
    norm = "l2"


@register_attack
@dataclass(frozen=True, repr=False)
class APGDTargeted(_APGDTargetedBase):
    """Targeted APGD in the Linf ball on the targeted DLR loss (AutoAttack's APGD-T): one run
    per target, the ``targets`` (default 9) most likely wrong classes in turn, each on the
    samples not yet fooled. With fewer than 4 classes the targeted margin replaces the DLR."""

    name = "apgd-t"
    norm = "linf"


@register_attack
@dataclass(frozen=True, repr=False)
class APGDTargetedL2(_APGDTargetedBase):
    """Targeted APGD (DLR loss, top-``targets`` wrong classes) in the L2 ball."""

    name = "apgd-t-l2"
    norm = "l2"
