"""Audit presets: which attacks an audit runs, configured how strong, for each norm.

``default`` is at least AutoAttack's standard version (APGD-CE, APGD-T with the DLR loss over
9 targets, a minimum-norm attack, Square with 5000 queries; 100 iterations where torchattacks'
AutoAttack uses 10) plus FGSM, PGD, HopSkipJump and random noise, cascading so that each attack
runs only on the samples still robust (``benchmarks/bench_attacks.py`` compares its time and
robust accuracy with torchattacks' AutoAttack). ``quick`` is for demos and smoke runs: fewer
steps, APGD-T over the 3 most likely wrong classes, no minimum-norm or Square attack.

Example:
    >>> from attacks.evasion.presets import PRESETS
    >>> [a.name for a in PRESETS.get("default").default_attacks("linf")]
    ['fgsm', 'apgd-ce', 'pgd', 'fmn', 'apgd-t', 'square', 'hsj', 'random']
    >>> PRESETS.get("quick").attack("pgd").steps
    20
    >>> PRESETS.get("quick").attack("apgd-t").budget()
    {'steps': 20, 'restarts': 1, 'eot_draws': 1, 'targets': 3}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from attacks.evasion.apgd import APGD, APGDL2, APGDTargeted, APGDTargetedL2
from attacks.evasion.base import Attack
from attacks.evasion.decision import HopSkipJump, HopSkipJumpL2
from attacks.evasion.gradient import FGSM, L2PGD, PGD
from attacks.evasion.minimization import FMN, FMNL2, CarliniWagnerL2, DeepFool
from attacks.evasion.noise import RandomNoise, RandomNoiseL2
from attacks.evasion.norms import Norm, check_norm
from attacks.evasion.registry import get_attack
from attacks.evasion.square import Square
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
    # cascade: each attack runs, at each epsilon, only on the samples every attack before it
    # failed on (AutoAttack's order); eot_draws: gradient draws averaged on a model found to be
    # random in eval mode (expectation over transformation)
    unbounded_steps: int = 100
    check_samples: int = 256
    extra: Mapping[str, object] = field(default_factory=dict)
    cascade: bool = True
    eot_draws: int = 10

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
        description="strong (AutoAttack standard and more): APGD-CE 100 steps, APGD-T 100 steps x 9 targets, "
        "FMN 100 steps, Square 5000 queries, PGD 50 steps x 4 restarts (cross-entropy and margin loss in turn), "
        "HopSkipJump 12 steps, C&W 5x100; each attack only on the samples still robust",
        attacks={
            "fgsm": FGSM(),
            "apgd-ce": APGD(steps=100),
            "apgd-t": APGDTargeted(steps=100, targets=9),
            "apgd-ce-l2": APGDL2(steps=100),
            "apgd-t-l2": APGDTargetedL2(steps=100, targets=9),
            "fmn": FMN(steps=100),
            "fmn-l2": FMNL2(steps=100),
            "square": Square(queries=5000),
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
            "linf": ("fgsm", "apgd-ce", "pgd", "fmn", "apgd-t", "square", "hsj", "random"),
            "l2": ("apgd-ce-l2", "pgd-l2", "cw-l2", "deepfool", "fmn-l2", "apgd-t-l2", "hsj-l2", "random-l2"),
        },
        unbounded_steps=100,
        check_samples=256,
    )
)

QUICK = _preset(
    AuditPreset(
        name="quick",
        description="fast: PGD 20 steps x 2 restarts (cross-entropy, then margin), APGD-T 20 steps x 3 targets, "
        "HopSkipJump 6 steps, C&W 3x50; each attack only on the samples still robust",
        attacks={
            "fgsm": FGSM(),
            "apgd-ce": APGD(steps=20),
            "apgd-t": APGDTargeted(steps=20, targets=3),
            "apgd-ce-l2": APGDL2(steps=20),
            "apgd-t-l2": APGDTargetedL2(steps=20, targets=3),
            "fmn": FMN(steps=30),
            "fmn-l2": FMNL2(steps=30),
            "square": Square(queries=500),
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
            "linf": ("fgsm", "pgd", "apgd-t", "hsj", "random"),
            "l2": ("pgd-l2", "deepfool", "apgd-t-l2", "hsj-l2", "random-l2"),
        },
        unbounded_steps=50,
        check_samples=128,
        eot_draws=4,
    )
)
