"""White-box gradient attacks written directly in torch: FGSM, PGD (Linf) and PGD (L2).

These are the attacks run most (every audit, every adversarial-training step), and they need
what Foolbox's ``LinfPGD`` does not offer: restarts that run only on the samples not yet
fooled, a check of every iterate (a sample counts as fooled if any iterate of any restart
misclassifies it), a choice of loss (cross-entropy, the Carlini-Wagner margin, or both in turn
across restarts), and a training mode that returns the highest-loss point. With parameters
frozen (the base class does it) a plain torch loop costs the same as Foolbox's or a
hand-written one (``benchmarks/bench_attacks.py``); Foolbox stays the reference in the tests.

Example:
    >>> import torch
    >>> from attacks.evasion.gradient import PGD
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 3)
    >>> x, y = torch.rand(16, 4), torch.randint(0, 3, (16,))
    >>> r = PGD(steps=10, restarts=2)(model, x, y, [0.05, 0.5], seed=0)
    >>> r.robust_accuracy[1] <= r.robust_accuracy[0]
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from attacks.evasion.base import Attack, AttackContext, Try, retry_unfooled
from attacks.evasion.losses import LOSSES, LossFn, loss_and_input_grad
from attacks.evasion.norms import normalize_step, project, random_in_ball
from attacks.evasion.registry import register_attack
from securetrain.errors import AttackError
from securetrain.validation import check_count


@dataclass(frozen=True, repr=False)
class _GradientAscent(Attack):
    """Shared loop: ``steps`` signed (linf) or normalised (l2) gradient steps, projected."""

    steps: int = 50
    restarts: int = 1
    rel_stepsize: float | None = None
    random_start: bool = True
    loss: str = "ce"

    kind = "gradient"

    def __post_init__(self) -> None:
        check_count("steps", self.steps, error=AttackError, where=self.name)
        check_count("restarts", self.restarts, error=AttackError, where=self.name)
        if self.rel_stepsize is not None and not float(self.rel_stepsize) > 0:
            raise AttackError(f"{self.name}: rel_stepsize must be positive, got {self.rel_stepsize}")
        self.losses()

    def losses(self) -> list[LossFn]:
        """The loss of each restart, in turn: ``loss="ce+margin"`` alternates the two."""
        if not isinstance(self.loss, str) or not self.loss:
            raise AttackError(f"{self.name}: loss must be a loss name such as 'ce' or 'ce+margin', got {self.loss!r}")
        return [LOSSES.get(part) for part in self.loss.split("+")]

    def stepsize(self, epsilon: float) -> float:
        """Absolute step size: ``rel_stepsize * epsilon`` (default ``2.5 * epsilon / steps``)."""
        rel = self.rel_stepsize if self.rel_stepsize is not None else 2.5 / self.steps
        return float(rel) * float(epsilon)

    def _n_restarts(self) -> int:
        return self.restarts if self.random_start else 1

    def _ascend(
        self,
        net: nn.Module,
        x0: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        ctx: AttackContext,
        loss_fn: LossFn,
        track: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(last iterate, first misclassified iterate or x0, found mask)``."""
        lo, hi = ctx.bounds
        alpha = self.stepsize(eps)
        if self.random_start:
            x = (x0 + random_in_ball(x0, eps, self.norm)).clamp_(lo, hi)
        else:
            x = x0.clone()
        found = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
        best = x0.clone()
        for step in range(self.steps):
            logits, _, grad = loss_and_input_grad(net, x, y, loss_fn, validate=step == 0)
            if track:
                hit = (logits.argmax(1) != y) & ~found
                if hit.any():
                    best[hit] = x[hit]
                    found |= hit
            x = x + alpha * normalize_step(grad, self.norm)
            x = project(x, x0, eps, self.norm).clamp_(lo, hi)
        return x, best, found

    def run(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        epsilons: Sequence[float],
        ctx: AttackContext,
    ) -> list[torch.Tensor]:
        losses = self.losses()

        def restart(eps: float, loss_fn: LossFn) -> Try:
            def attempt(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                xs, ys = inputs[idx], labels[idx]
                last, b, f = self._ascend(model, xs, ys, eps, ctx, loss_fn, track=True)
                with torch.no_grad():
                    final_hit = (model(last).argmax(1) != ys) & ~f
                b[final_hit] = last[final_hit]
                f |= final_hit
                b[~f] = last[~f]
                return b, f

            return attempt

        n = self._n_restarts()
        return retry_unfooled(inputs, epsilons, lambda eps: [restart(eps, losses[r % len(losses)]) for r in range(n)])

    def generate(
        self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, epsilon: float, ctx: AttackContext
    ) -> torch.Tensor:
        """The highest-loss final iterate over the restarts (Madry et al.'s training examples);
        restarts are compared on the first loss of ``loss``."""
        losses = self.losses()
        best_x: torch.Tensor | None = None
        best_loss: torch.Tensor | None = None
        restarts = self._n_restarts()
        for restart in range(restarts):
            last, _, _ = self._ascend(model, inputs, labels, epsilon, ctx, losses[restart % len(losses)], track=False)
            if restarts == 1:
                return last
            with torch.no_grad():
                loss = losses[0](model(last), labels)
            if best_x is None or best_loss is None:
                best_x, best_loss = last, loss
            else:
                better = loss > best_loss
                best_x[better] = last[better]
                best_loss = torch.where(better, loss, best_loss)
        assert best_x is not None  # restarts >= 1 (checked in __post_init__)
        return best_x


@register_attack
@dataclass(frozen=True, repr=False)
class PGD(_GradientAscent):
    """Projected gradient descent in the Linf ball (Madry et al. 2018), with random starts
    and restarts.

    ``steps`` signed-gradient steps of ``rel_stepsize * epsilon`` (default ``2.5 / steps``)
    on the ``loss`` (``"ce"``, ``"margin"``, or ``"ce+margin"`` to alternate them across
    restarts), from a uniform random start in the ball, repeated ``restarts`` times on the
    samples still classified correctly.
    """

    steps: int = 50
    restarts: int = 4
    loss: str = "ce+margin"

    name = "pgd"
    norm = "linf"
    stochastic = True


@register_attack
@dataclass(frozen=True, repr=False)
class L2PGD(_GradientAscent):
    """Projected gradient descent in the L2 ball: normalised-gradient steps, random start
    uniform in the ball, restarts."""

    steps: int = 50
    restarts: int = 4
    loss: str = "ce+margin"

    name = "pgd-l2"
    norm = "l2"
    stochastic = True


@register_attack
@dataclass(frozen=True, repr=False)
class FGSM(_GradientAscent):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of ``epsilon`` along the
    sign of the loss gradient.

    With ``random_start=True, rel_stepsize=1.25`` it is the "fast" FGSM of Wong et al.
    (2020) used for cheap adversarial training.
    """

    steps: int = 1
    restarts: int = 1
    rel_stepsize: float | None = 1.0
    random_start: bool = False

    name = "fgsm"
    norm = "linf"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps != 1:
            raise AttackError(f"fgsm takes exactly one step, got steps={self.steps}; use 'pgd' for more")

    @property
    def stochastic(self) -> bool:  # type: ignore[override]  # random_start decides; the base declares a ClassVar
        return self.random_start
