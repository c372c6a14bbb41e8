"""Random-noise baselines: no gradients, no queries beyond checking the noise.

A model whose robust accuracy under random noise is close to its robust accuracy under PGD
is either very robust or masking its gradients; the audit's masking checks compare them.

Example:
    >>> import torch
    >>> from attacks.evasion.noise import RandomNoise
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 3)
    >>> x, y = torch.rand(16, 4), torch.randint(0, 3, (16,))
    >>> r = RandomNoise(draws=5)(model, x, y, [0.1], seed=0)
    >>> bool((r.adversarials[0] - x).abs().max() <= 0.1 + 1e-6)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from attacks.evasion.base import Attack, AttackContext, Try, retry_unfooled
from attacks.evasion.norms import random_in_ball, random_on_sphere
from attacks.evasion.registry import register_attack
from securetrain.errors import AttackError
from securetrain.validation import check_count


@dataclass(frozen=True, repr=False)
class _Noise(Attack):
    draws: int = 10

    kind = "noise"
    stochastic = True

    def __post_init__(self) -> None:
        check_count("draws", self.draws, error=AttackError, where=self.name)

    def sample(self, like: torch.Tensor, epsilon: float) -> torch.Tensor:
        raise NotImplementedError

    def run(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        epsilons: Sequence[float],
        ctx: AttackContext,
    ) -> list[torch.Tensor]:
        lo, hi = ctx.bounds

        def draw(eps: float) -> Try:
            def attempt(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                xs = inputs[idx]
                cand = (xs + self.sample(xs, eps)).clamp_(lo, hi)
                with torch.no_grad():
                    return cand, model(cand).argmax(1) != labels[idx]

            return attempt

        return retry_unfooled(inputs, epsilons, lambda eps: [draw(eps)] * self.draws)


@register_attack
@dataclass(frozen=True, repr=False)
class RandomNoise(_Noise):
    """Uniform noise in the Linf ball, ``draws`` tries per sample (kept at the first that fools)."""

    name = "random"
    norm = "linf"

    def sample(self, like: torch.Tensor, epsilon: float) -> torch.Tensor:
        return random_in_ball(like, epsilon, "linf")


@register_attack
@dataclass(frozen=True, repr=False)
class RandomNoiseL2(_Noise):
    """Noise of L2 norm exactly ``epsilon`` in a uniformly random direction, ``draws`` tries."""

    name = "random-l2"
    norm = "l2"

    def sample(self, like: torch.Tensor, epsilon: float) -> torch.Tensor:
        return random_on_sphere(like, epsilon, "l2")
