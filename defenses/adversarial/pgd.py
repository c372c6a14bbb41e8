"""Madry et al.'s adversarial training: train on PGD examples of each batch.

Example:
    >>> import torch
    >>> from defenses.adversarial import PGDAdversarialTraining
    >>> at = PGDAdversarialTraining(epsilon=0.1, steps=7)
    >>> at.attack.steps, round(at.step_size, 4)
    (7, 0.0357)
    >>> PGDAdversarialTraining(epsilon=0.1, steps=0)
    Traceback (most recent call last):
    ...
    securetrain.errors.ConfigurationError: steps must be an integer >= 1, got 0
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from attacks.evasion import Attack, get_attack
from defenses.adversarial.base import METHODS, AdversarialTraining, Bounds
from securetrain.training import LossFn
from securetrain.validation import check_count, check_positive


class ExampleReplacement(AdversarialTraining):
    """Train on the batch with its adversarial rows replaced by ``self.attack``'s examples.

    The loss below this defense (cross-entropy by default) is applied to the mixed batch in
    one forward pass, so each sample's loss depends on that sample only.
    """

    attack: Attack

    def _adversarial_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        n = int(x.shape[0])
        rows = self._adversarial_rows(n, x.device)
        if rows.numel() == 0:
            return loss_fn(model, x, y)
        if rows.numel() == n:
            x_train = self._timed_perturb(self.attack.perturb, model, x, y)
        else:
            x_adv = self._timed_perturb(self.attack.perturb, model, x[rows], y[rows])
            x_train = x.detach().index_copy(0, rows, x_adv.to(x.dtype))
        return loss_fn(model, x_train.to(x.dtype), y)


class PGDAdversarialTraining(ExampleReplacement):
    """PGD adversarial training (Madry et al. 2018): minimise the loss at the PGD maximiser.

    Each step attacks the batch with ``steps`` signed-gradient steps of ``step_size``
    (default ``2.5 * epsilon / steps``) from a uniform random start in the L-infinity ball
    of radius ``epsilon`` (``restarts`` > 1 keeps the highest-loss restart), then trains on
    the result. Costs about ``steps + 1`` forward/backward passes per step.
    """

    method: ClassVar[str] = "pgd"

    def __init__(
        self,
        epsilon: float,
        *,
        steps: int = 7,
        step_size: float | None = None,
        restarts: int = 1,
        clean_share: float = 0.0,
        bounds: Bounds | None = None,
    ) -> None:
        super().__init__(epsilon, clean_share=clean_share, bounds=bounds)
        self.steps = check_count("steps", steps)
        self.restarts = check_count("restarts", restarts)
        self.step_size = (
            check_positive("step_size", step_size) if step_size is not None else 2.5 * self.epsilon / self.steps
        )
        self.attack = get_attack(
            "pgd",
            steps=self.steps,
            restarts=self.restarts,
            rel_stepsize=self.step_size / self.epsilon,
            random_start=True,
        )

    def _settings(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "step_size": self.step_size,
            "restarts": self.restarts,
            "attack": self.attack.config(),
        }


METHODS.add("pgd", PGDAdversarialTraining)
