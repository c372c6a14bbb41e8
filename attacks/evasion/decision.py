"""Decision-based (black-box) attacks driven by Foolbox: HopSkipJump (Linf and L2) and Boundary.

They use only the model's predicted labels, never its gradients, so they keep working when
gradients are masked; the audit compares them with the gradient attacks for that reason.
Each starts from an adversarial point (the nearest input of the batch that the model puts in
another class, else uniform noise) and walks along the decision boundary towards the input.

Example:
    >>> import torch
    >>> from attacks.evasion.decision import HopSkipJump
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 3)
    >>> x, y = torch.rand(32, 4), torch.randint(0, 3, (32,))
    >>> r = HopSkipJump(steps=5, initial_evals=20)(model, x, y, [1.0], seed=0)
    >>> r.robust_accuracy[0] < r.clean_accuracy
    True
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from attacks.evasion import _foolbox
from attacks.evasion.base import AttackContext
from attacks.evasion.minimization import MinimizationAttack
from attacks.evasion.norms import Norm
from attacks.evasion.registry import register_attack
from securetrain.errors import AttackError
from securetrain.modes import model_device
from securetrain.validation import check_count, check_positive


@dataclass(frozen=True, repr=False)
class _DecisionAttack(MinimizationAttack):
    kind = "decision"
    stochastic = True

    @abstractmethod
    def foolbox_attack(self) -> Any:
        """The configured Foolbox attack."""

    def minimize(
        self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, ctx: AttackContext
    ) -> torch.Tensor:
        # HopSkipJump clips to [0, 1] whatever the bounds: attack the model seen on the unit box.
        unit = _foolbox.UnitBox(model, ctx.bounds)
        z = unit.to_unit(inputs)
        start, ok = _foolbox.starting_points(unit, z, labels, (0.0, 1.0), self.norm)
        out = inputs.clone()
        idx = ok.nonzero().flatten()
        if idx.numel() == 0:
            return out
        fm = _foolbox.fmodel(unit, (0.0, 1.0), model_device(model))
        try:
            advs = self.foolbox_attack().run(
                fm, z[idx], _foolbox.misclassification(labels[idx]), starting_points=start[idx]
            )
        except (ValueError, AssertionError) as exc:
            # Foolbox re-checks that its points stay adversarial; that fails only when the
            # model's decision on the same input changes between queries.
            if isinstance(exc, ValueError) and "not adversarial" not in str(exc):
                raise
            raise AttackError(
                f"{self.name}: the model's predictions changed between identical queries ({exc or type(exc).__name__}); "
                "decision-based attacks need a deterministic model: put it in eval mode and remove random layers, "
                "or leave this attack out"
            ) from exc
        out[idx] = unit.from_unit(advs)
        return out


@register_attack
@dataclass(frozen=True, repr=False)
class HopSkipJump(_DecisionAttack):
    """HopSkipJump (Chen et al. 2020), Linf version: boundary search with gradient-direction
    estimates from ``initial_evals`` (growing as sqrt(step), at most ``max_evals``) label queries."""

    steps: int = 12
    initial_evals: int = 50
    max_evals: int = 500
    gamma: float = 1.0

    name = "hsj"
    norm: ClassVar[Norm] = "linf"

    def __post_init__(self) -> None:
        check_count("steps", self.steps, error=AttackError, where=self.name)
        check_count("initial_evals", self.initial_evals, error=AttackError, where=self.name)
        check_count("max_evals", self.max_evals, error=AttackError, where=self.name)
        check_positive("gamma", self.gamma, error=AttackError, allow_inf=True, where=self.name)

    def foolbox_attack(self) -> Any:
        return _foolbox.foolbox().attacks.HopSkipJumpAttack(
            steps=self.steps,
            initial_gradient_eval_steps=self.initial_evals,
            max_gradient_eval_steps=self.max_evals,
            gamma=self.gamma,
            constraint=self.norm,
        )


@register_attack
@dataclass(frozen=True, repr=False)
class HopSkipJumpL2(HopSkipJump):
    """HopSkipJump, L2 version."""

    name = "hsj-l2"
    norm = "l2"


@register_attack
@dataclass(frozen=True, repr=False)
class Boundary(_DecisionAttack):
    """The Boundary attack (Brendel et al. 2018, Foolbox ``BoundaryAttack``), L2: a random walk
    along the decision boundary that shrinks the distance to the input."""

    steps: int = 1000
    spherical_step: float = 0.01
    source_step: float = 0.01
    step_adaptation: float = 1.5

    name = "boundary"
    norm = "l2"

    def __post_init__(self) -> None:
        check_count("steps", self.steps, error=AttackError, where=self.name)
        check_positive("spherical_step", self.spherical_step, error=AttackError, allow_inf=True, where=self.name)
        check_positive("source_step", self.source_step, error=AttackError, allow_inf=True, where=self.name)
        check_positive("step_adaptation", self.step_adaptation, error=AttackError, allow_inf=True, where=self.name)

    def foolbox_attack(self) -> Any:
        return _foolbox.foolbox().attacks.BoundaryAttack(
            steps=self.steps,
            spherical_step=self.spherical_step,
            source_step=self.source_step,
            step_adaptation=self.step_adaptation,
        )
