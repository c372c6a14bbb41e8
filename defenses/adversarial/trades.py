"""TRADES (Zhang et al. 2019): clean cross-entropy plus beta times the KL to the adversarial output.

Per sample ``i``: ``CE(f(x_i), y_i) + beta * KL(f(x_i) || f(x'_i))`` with ``x'_i`` the KL
maximiser of :class:`~defenses.adversarial.kl_attack.KLPGD`. ``beta`` trades clean accuracy
(small) for robustness (large); the paper uses 6.

The loss makes two forward passes with gradients, clean and adversarial, over the *same*
samples: :attr:`TRADES.forward_passes_per_step` is 2, which tells
:class:`defenses.privacy.DifferentialPrivacy` that both passes belong to the same samples.
Each sample's gradient is then the gradient of its whole TRADES loss, clipped once, so the
accounting is unchanged.

Example:
    >>> import torch
    >>> from defenses.adversarial import TRADES
    >>> t = TRADES(epsilon=0.1, beta=6.0, steps=3)
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    >>> t.per_sample_loss(model, x, y).shape
    torch.Size([8])
    >>> TRADES(epsilon=0.1, beta=-1)
    Traceback (most recent call last):
    ...
    securetrain.errors.ConfigurationError: TRADES beta must be a finite number >= 0, got -1
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from defenses.adversarial.base import METHODS, AdversarialTraining, Bounds
from defenses.adversarial.kl_attack import KLPGD, kl_from_clean
from securetrain.errors import ConfigurationError
from securetrain.training import LossFn, per_sample_cross_entropy
from securetrain.validation import check_count, check_positive

DEFAULT_BETA = 6.0


class TRADES(AdversarialTraining):
    """TRADES adversarial training: ``CE(f(x), y) + beta * KL(f(x) || f(x'))`` per sample.

    ``steps`` / ``step_size`` configure the KL maximisation (default step
    ``2.5 * epsilon / steps``); ``clean_share`` drops the KL term (and its attack) for a
    random share of each batch.
    """

    method: ClassVar[str] = "trades"
    forward_passes_per_step: ClassVar[int] = 2

    def __init__(
        self,
        epsilon: float,
        *,
        beta: float = DEFAULT_BETA,
        steps: int = 7,
        step_size: float | None = None,
        clean_share: float = 0.0,
        bounds: Bounds | None = None,
    ) -> None:
        super().__init__(epsilon, clean_share=clean_share, bounds=bounds)
        self.beta = check_positive("TRADES beta", beta, allow_zero=True)
        self.steps = check_count("steps", steps)
        self.step_size = (
            check_positive("step_size", step_size) if step_size is not None else 2.5 * self.epsilon / self.steps
        )
        self.attack = KLPGD(steps=self.steps, rel_stepsize=self.step_size / self.epsilon)

    def _check_base_loss(self, loss_fn: LossFn) -> None:
        if loss_fn is not per_sample_cross_entropy:
            name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
            raise ConfigurationError(
                f"TRADES trains on the cross-entropy of the clean logits plus beta * KL to the adversarial "
                f"logits, so it cannot wrap another per-sample loss ({name}); leave loss_fn at its default, "
                "or use PGDAdversarialTraining / FastAdversarialTraining, which train on any per-sample loss"
            )

    def _adversarial_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        n = int(x.shape[0])
        rows = self._adversarial_rows(n, x.device)
        x_adv = x.detach()
        if n and rows.numel() == n:
            x_adv = self._timed_perturb(self.attack.perturb, model, x, y).to(x.dtype)
        elif rows.numel():
            part = self._timed_perturb(self.attack.perturb, model, x[rows], y[rows])
            x_adv = x.detach().index_copy(0, rows, part.to(x.dtype))
        clean_logits = model(x)
        adv_logits = model(x_adv)
        natural = F.cross_entropy(clean_logits, y, reduction="none")
        robust = kl_from_clean(clean_logits, adv_logits)
        if rows.numel() < n:
            weight = torch.zeros(n, dtype=robust.dtype, device=robust.device)
            weight[rows] = self.beta
            return natural + weight * robust
        return natural + self.beta * robust

    def _settings(self) -> dict[str, Any]:
        return {"beta": self.beta, "steps": self.steps, "step_size": self.step_size, "attack": self.attack.config()}


METHODS.add("trades", TRADES)
