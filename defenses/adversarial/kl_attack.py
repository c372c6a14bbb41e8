"""TRADES's inner maximisation: PGD on the KL divergence from the clean prediction.

TRADES (Zhang et al. 2019) does not attack the label: it looks for the point ``x'`` of the
epsilon ball whose prediction moves furthest from the model's *own* clean prediction,
``max KL(f(x) || f(x'))``. :mod:`attacks.evasion`'s gradient attacks ascend a loss of
``(logits, labels)`` (cross-entropy or margin) only, so this objective, which compares two
model outputs, is written here as an :class:`attacks.evasion.Attack` subclass: it inherits
the shared guarantees of :meth:`~attacks.evasion.Attack.perturb` (runs inside
:func:`securetrain.modes.attack_mode` with the parameters frozen and the RNG forked, input
checks, projection into the ball and the bounds, a detached result). It is not registered
in the attack registry because it is a training objective, not an evasion attack to audit
with: it ignores the labels, so its examples need not be misclassified.

The start is ``x + 0.001 * N(0, 1)`` (as in the TRADES code): at ``x' = x`` the KL
divergence and its gradient are both zero.

Example:
    >>> import torch
    >>> from defenses.adversarial.kl_attack import KLPGD
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    >>> x_adv = KLPGD(steps=5).perturb(model, x, y, 0.1, seed=0)
    >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6), bool(x_adv.min() >= 0), x_adv.requires_grad
    (True, True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attacks.evasion import Attack, AttackContext
from attacks.evasion.norms import project
from securetrain.errors import AttackError


def kl_from_clean(clean_logits: torch.Tensor, other_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample ``KL(softmax(clean) || softmax(other))``, shape ``(batch,)``."""
    log_p = F.log_softmax(clean_logits, dim=1)
    log_q = F.log_softmax(other_logits, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


@dataclass(frozen=True, repr=False)
class KLPGD(Attack):
    """L-infinity PGD maximising ``KL(f(x) || f(x'))`` (TRADES's inner problem).

    ``steps`` signed-gradient steps of ``rel_stepsize * epsilon`` (default
    ``2.5 * epsilon / steps``) from ``x + init_std * N(0, 1)``.
    """

    steps: int = 10
    rel_stepsize: float | None = None
    init_std: float = 1e-3

    name = "trades-kl"
    norm = "linf"
    kind = "gradient"
    stochastic = True

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise AttackError(f"{self.name}: steps must be an integer >= 1, got {self.steps!r}")
        if self.rel_stepsize is not None and not float(self.rel_stepsize) > 0:
            raise AttackError(f"{self.name}: rel_stepsize must be positive, got {self.rel_stepsize}")
        if not float(self.init_std) >= 0:
            raise AttackError(f"{self.name}: init_std must be >= 0, got {self.init_std}")

    def stepsize(self, epsilon: float) -> float:
        """Absolute step size for ``epsilon``."""
        rel = self.rel_stepsize if self.rel_stepsize is not None else 2.5 / self.steps
        return float(rel) * float(epsilon)

    def run(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        epsilons: Sequence[float],
        ctx: AttackContext,
    ) -> list[torch.Tensor]:
        return [self._ascend(model, inputs, float(e), ctx) for e in epsilons]

    def generate(
        self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, epsilon: float, ctx: AttackContext
    ) -> torch.Tensor:
        return self._ascend(model, inputs, epsilon, ctx)

    def _ascend(self, net: nn.Module, x0: torch.Tensor, eps: float, ctx: AttackContext) -> torch.Tensor:
        lo, hi = ctx.bounds
        alpha = self.stepsize(eps)
        with torch.no_grad():
            clean = net(x0)
        x = project(x0 + float(self.init_std) * torch.randn_like(x0), x0, eps, "linf").clamp_(lo, hi)
        for _ in range(self.steps):
            xg = x.detach().requires_grad_(True)
            with torch.enable_grad():
                kl = kl_from_clean(clean, net(xg)).sum()
                (grad,) = torch.autograd.grad(kl, xg)
            x = project(x.detach() + alpha * grad.sign(), x0, eps, "linf").clamp_(lo, hi)
        return x
