"""Audit presets: which attacks an audit runs, configured how strong, for each norm.

``default`` is strong: on the digits CNN, more PGD steps or restarts do not lower its robust
accuracy further (``benchmarks/bench_attacks.py`` measures this). ``quick`` is for demos and
smoke runs: the same attacks with fewer steps, a few seconds per model on digits.

Example:
    >>> from attacks.evasion.presets import PRESETS
    >>> [a.name for a in PRESETS.get("default").default_attacks("linf")]
    ['fgsm', 'pgd', 'hsj', 'random']
    >>> PRESETS.get("quick").attack("pgd").steps
    20
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from attacks.evasion.base import Attack
from attacks.evasion.decision import HopSkipJump, HopSkipJumpL2
from attacks.evasion.gradient import FGSM, L2PGD, PGD
from attacks.evasion.minimization import CarliniWagnerL2, DeepFool
from attacks.evasion.noise import RandomNoise, RandomNoiseL2
from attacks.evasion.norms import Norm, check_norm
from attacks.evasion.registry import get_attack
from securetrain.registry import Registry

#: Epsilons used when an audit names none, in input units (for inputs in [0, 1]).
DEFAULT_EPSILONS: dict[str, tuple[float, ...]] = {
    "linf": (0.0, 0.05, 0.1, 0.2, 0.3),
    "l2": (0.0, 0.5, 1.0, 1.5, 2.0),
}


@dataclass(frozen=True)
class AuditPreset:
    """Configured attacks by name, and the names an audit runs by default for each norm."""

    name: str
    description: str
    attacks: Mapping[str, Attack]
    defaults: Mapping[str, tuple[str, ...]]
    unbounded_steps: int = 100
    check_samples: int = 256
    extra: Mapping[str, object] = field(default_factory=dict)

    def attack(self, name: str) -> Attack:
        """This preset's configuration of attack ``name`` (the registry default if it has none)."""
        return self.attacks[name] if name in self.attacks else get_attack(name)

    def default_attacks(self, norm: Norm) -> list[Attack]:
        """The attacks an audit in ``norm`` runs when none are named."""
        return [self.attack(n) for n in self.defaults[check_norm(norm)]]


PRESETS: Registry[AuditPreset] = Registry("audit preset")


def _preset(p: AuditPreset) -> AuditPreset:
    PRESETS.add(p.name, p)
    return p


DEFAULT = _preset(
    AuditPreset(
        name="default",
        description="strong: PGD 50 steps x 4 restarts (cross-entropy and margin loss in turn), HopSkipJump 12 steps, C&W 5x100",
        attacks={
            "fgsm": FGSM(),
            "pgd": PGD(steps=50, restarts=4, loss="ce+margin"),
            "pgd-l2": L2PGD(steps=50, restarts=4, loss="ce+margin"),
            "hsj": HopSkipJump(steps=12, initial_evals=50),
            "hsj-l2": HopSkipJumpL2(steps=12, initial_evals=50),
            "cw-l2": CarliniWagnerL2(binary_search_steps=5, steps=100),
            "deepfool": DeepFool(steps=50),
            "random": RandomNoise(draws=10),
            "random-l2": RandomNoiseL2(draws=10),
        },
        defaults={
            "linf": ("fgsm", "pgd", "hsj", "random"),
            "l2": ("pgd-l2", "cw-l2", "deepfool", "hsj-l2", "random-l2"),
        },
        unbounded_steps=100,
        check_samples=256,
    )
)

QUICK = _preset(
    AuditPreset(
        name="quick",
        description="fast: PGD 20 steps x 2 restarts (cross-entropy, then margin), HopSkipJump 6 steps, C&W 3x50",
        attacks={
            "fgsm": FGSM(),
            "pgd": PGD(steps=20, restarts=2, loss="ce+margin"),
            "pgd-l2": L2PGD(steps=20, restarts=2, loss="ce+margin"),
            "hsj": HopSkipJump(steps=6, initial_evals=25, max_evals=200),
            "hsj-l2": HopSkipJumpL2(steps=6, initial_evals=25, max_evals=200),
            "cw-l2": CarliniWagnerL2(binary_search_steps=3, steps=50),
            "deepfool": DeepFool(steps=30),
            "random": RandomNoise(draws=5),
            "random-l2": RandomNoiseL2(draws=5),
        },
        defaults={
            "linf": ("fgsm", "pgd", "hsj", "random"),
            "l2": ("pgd-l2", "deepfool", "hsj-l2", "random-l2"),
        },
        unbounded_steps=50,
        check_samples=128,
    )
)
