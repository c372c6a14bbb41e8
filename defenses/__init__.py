"""What a training pipeline imports to resist attacks: differential privacy, adversarial training.

Sub-packages are imported only when used, so ``import defenses`` is cheap.

Example:
    >>> import defenses
    >>> defenses.DifferentialPrivacy(epsilon=3.0, epochs=2).name
    'privacy'
    >>> defenses.FastAdversarialTraining(0.1).name
    'adversarial'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from defenses.adversarial import TRADES, FastAdversarialTraining, PGDAdversarialTraining
    from defenses.privacy.defense import DifferentialPrivacy

__all__ = ["TRADES", "DifferentialPrivacy", "FastAdversarialTraining", "PGDAdversarialTraining"]

_LAZY = {
    "DifferentialPrivacy": "defenses.privacy",
    "PGDAdversarialTraining": "defenses.adversarial",
    "FastAdversarialTraining": "defenses.adversarial",
    "TRADES": "defenses.adversarial",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'defenses' has no attribute {name!r}")
