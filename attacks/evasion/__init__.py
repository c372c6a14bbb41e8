"""Evasion attacks, the robustness audit and its gradient-masking checks.

Attacks are stateless configuration objects from a registry; the model is passed at call
time and every attack returns the same :class:`EvasionResult`. Gradient attacks (FGSM, PGD,
APGD-CE, APGD-T) and the Square attack are plain torch loops; Carlini-Wagner, DeepFool, FMN,
HopSkipJump and Boundary are driven by Foolbox.

Example:
    >>> import torch
    >>> from attacks.evasion import get_attack
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
    >>> x, y = torch.rand(32, 1, 4, 4), torch.randint(0, 4, (32,))
    >>> result = get_attack("pgd", steps=20)(model, x, y, [0.05, 0.3], bounds=(0.0, 1.0), seed=0)
    >>> [round(a, 2) >= 0 for a in result.robust_accuracy]
    [True, True]
"""

from __future__ import annotations

from attacks.evasion.apgd import APGD, APGDL2, APGDTargeted, APGDTargetedL2
from attacks.evasion.audit import RobustnessResult, audit_robustness
from attacks.evasion.base import Attack, AttackContext, AttackKind, EvasionResult
from attacks.evasion.decision import Boundary, HopSkipJump, HopSkipJumpL2
from attacks.evasion.gradient import FGSM, L2PGD, PGD
from attacks.evasion.masking import MaskingCheck
from attacks.evasion.minimization import FMN, FMNL2, CarliniWagnerL2, DeepFool, MinimizationAttack
from attacks.evasion.noise import RandomNoise, RandomNoiseL2
from attacks.evasion.norms import NORMS, Norm
from attacks.evasion.plot import robustness_curves, robustness_figure
from attacks.evasion.presets import DEFAULT_EPSILONS, PRESETS, AuditPreset
from attacks.evasion.registry import (
    EVASION_ATTACKS,
    available_attacks,
    get_attack,
    register_attack,
)
from attacks.evasion.run_dir import audit_robustness_run
from attacks.evasion.square import Square

# Importing the attack modules (gradient, apgd, square, noise, minimization, decision) registers their attacks
# (no other side effect; Foolbox loads lazily).
from securetrain.deprecation import deprecated_aliases

_DEPRECATED = {
    "ATTACKS": "EVASION_ATTACKS",
    "AttackResult": "EvasionResult",
    "audit_run": "audit_robustness_run",
}


__getattr__ = deprecated_aliases(__name__, _DEPRECATED)

__all__ = [
    "APGD",
    "APGDL2",
    "DEFAULT_EPSILONS",
    "EVASION_ATTACKS",
    "FGSM",
    "FMN",
    "FMNL2",
    "L2PGD",
    "NORMS",
    "PGD",
    "PRESETS",
    "Attack",
    "APGDTargeted",
    "APGDTargetedL2",
    "AttackContext",
    "AttackKind",
    "AuditPreset",
    "Boundary",
    "CarliniWagnerL2",
    "DeepFool",
    "EvasionResult",
    "HopSkipJump",
    "HopSkipJumpL2",
    "MaskingCheck",
    "MinimizationAttack",
    "Norm",
    "RandomNoise",
    "RandomNoiseL2",
    "RobustnessResult",
    "Square",
    "audit_robustness",
    "audit_robustness_run",
    "available_attacks",
    "get_attack",
    "register_attack",
    "robustness_curves",
    "robustness_figure",
]
