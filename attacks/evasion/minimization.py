"""Minimum-norm attacks driven by Foolbox: Carlini-Wagner L2, DeepFool and FMN (Linf, L2).

A minimisation attack searches once for the smallest adversarial perturbation of each sample;
the base class then evaluates it at every epsilon by projecting it into the ball (as Foolbox's
own ``__call__`` does), so one run serves the whole robustness curve.

Example:
    >>> import torch
    >>> from attacks.evasion.minimization import DeepFool
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 3)
    >>> x, y = torch.rand(16, 4), torch.randint(0, 3, (16,))
    >>> r = DeepFool(steps=20)(model, x, y, [0.1, 10.0], seed=0)
    >>> r.robust_accuracy[1] <= r.robust_accuracy[0]
    True
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from attacks.evasion import _foolbox
from attacks.evasion.base import Attack, AttackContext
from attacks.evasion.norms import Norm
from attacks.evasion.registry import register_attack
from securetrain.errors import AttackError
from securetrain.modes import model_device
from securetrain.validation import check_count, check_positive


@dataclass(frozen=True, repr=False)
class MinimizationAttack(Attack):
    """An attack that finds one (approximately) minimal adversarial per sample for all epsilons."""

    one_run_for_all_epsilons = True

    @abstractmethod
    def minimize(
        self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, ctx: AttackContext
    ) -> torch.Tensor:
        """Adversarial candidates of (approximately) minimal ``norm`` distance to ``inputs``."""

    def run(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        epsilons: Sequence[float],
        ctx: AttackContext,
    ) -> list[torch.Tensor]:
        cand = self.minimize(model, inputs, labels, ctx).detach()
        return [cand for _ in epsilons]


@register_attack
@dataclass(frozen=True, repr=False)
class CarliniWagnerL2(MinimizationAttack):
    """Carlini & Wagner's L2 attack (Foolbox ``L2CarliniWagnerAttack``): Adam on the tanh-space
    perturbation with a binary search over the trade-off constant."""

    binary_search_steps: int = 5
    steps: int = 100
    stepsize: float = 0.05
    confidence: float = 0.0
    initial_const: float = 0.1
    abort_early: bool = True

    name = "cw-l2"
    norm = "l2"
    kind = "gradient"

    def __post_init__(self) -> None:
        check_count("binary_search_steps", self.binary_search_steps, error=AttackError, where=self.name)
        check_count("steps", self.steps, error=AttackError, where=self.name)
        check_positive("stepsize", self.stepsize, error=AttackError, allow_inf=True, where=self.name)
        check_positive(
            "confidence", self.confidence, error=AttackError, allow_zero=True, allow_inf=True, where=self.name
        )
        check_positive("initial_const", self.initial_const, error=AttackError, allow_inf=True, where=self.name)

    def minimize(
        self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, ctx: AttackContext
    ) -> torch.Tensor:
        fb = _foolbox.foolbox()
        attack = fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=self.binary_search_steps,
            steps=self.steps,
            stepsize=self.stepsize,
            confidence=self.confidence,
            initial_const=self.initial_const,
            abort_early=self.abort_early,
        )
        fm = _foolbox.fmodel(model, ctx.bounds, model_device(model))
        adv: torch.Tensor = attack.run(fm, inputs, _foolbox.misclassification(labels))  # Foolbox is untyped
        return adv


@register_attack
@dataclass(frozen=True, repr=False)
class DeepFool(MinimizationAttack):
    """DeepFool, L2 (Foolbox ``L2DeepFoolAttack``): step to the nearest linearised decision
    boundary among the ``candidates`` top classes, ``overshoot`` past it."""

    steps: int = 50
    candidates: int = 10
    overshoot: float = 0.02

    name = "deepfool"
    norm = "l2"
    kind = "gradient"

    def __post_init__(self) -> None:
        check_count("steps", self.steps, error=AttackError, where=self.name)
        check_count("candidates", self.candidates, error=AttackError, where=self.name)
        check_positive("overshoot", self.overshoot, error=AttackError, allow_zero=True, allow_inf=True, where=self.name)

    def minimize(
        self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, ctx: AttackContext
    ) -> torch.Tensor:
        fb = _foolbox.foolbox()
        attack = fb.attacks.L2DeepFoolAttack(
            steps=self.steps, candidates=min(self.candidates, ctx.num_classes), overshoot=self.overshoot, loss="logits"
        )
        fm = _foolbox.fmodel(model, ctx.bounds, model_device(model))
        adv: torch.Tensor = attack.run(fm, inputs, _foolbox.misclassification(labels))  # Foolbox is untyped
        return adv


@register_attack
@dataclass(frozen=True, repr=False)
class FMN(MinimizationAttack):
    """Fast minimum-norm attack (Pintor et al. 2021; Foolbox ``LInfFMNAttack``), Linf: ``steps``
    gradient steps that move towards the decision boundary while shrinking the allowed norm,
    the step size decaying by cosine annealing from ``max_stepsize``. It plays the role of
    AutoAttack's minimum-norm FAB-T: it searches for the smallest perturbation rather than the
    highest loss inside a ball, so it breaks samples where loss-maximising attacks stall."""

    steps: int = 100
    max_stepsize: float = 1.0
    gamma: float = 0.05
    binary_search_steps: int = 10

    name = "fmn"
    norm: ClassVar[Norm] = "linf"
    kind = "gradient"

    def __post_init__(self) -> None:
        check_count("steps", self.steps, error=AttackError, where=self.name)
        check_positive("max_stepsize", self.max_stepsize, error=AttackError, where=self.name)
        check_positive("gamma", self.gamma, error=AttackError, where=self.name)
        check_count("binary_search_steps", self.binary_search_steps, error=AttackError, where=self.name)

    def foolbox_attack(self) -> Any:
        return _foolbox.foolbox().attacks.LInfFMNAttack(
            steps=self.steps,
            max_stepsize=self.max_stepsize,
            gamma=self.gamma,
            binary_search_steps=self.binary_search_steps,
        )

    def minimize(
        self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, ctx: AttackContext
    ) -> torch.Tensor:
        # FMN's step sizes are in input units of the unit box: attack the model seen on [0, 1].
        unit = _foolbox.UnitBox(model, ctx.bounds)
        fm = _foolbox.fmodel(unit, (0.0, 1.0), model_device(model))
        adv: torch.Tensor = self.foolbox_attack().run(
            fm, unit.to_unit(inputs), _foolbox.misclassification(labels)
        )  # Foolbox is untyped
        return unit.from_unit(adv)


@register_attack
@dataclass(frozen=True, repr=False)
class FMNL2(FMN):
    """Fast minimum-norm attack, L2 (Foolbox ``L2FMNAttack``)."""

    name = "fmn-l2"
    norm = "l2"

    def foolbox_attack(self) -> Any:
        return _foolbox.foolbox().attacks.L2FMNAttack(
            steps=self.steps,
            max_stepsize=self.max_stepsize,
            gamma=self.gamma,
            binary_search_steps=self.binary_search_steps,
        )
