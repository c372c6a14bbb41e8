"""Differential privacy: DP-SGD through Opacus, accounted, enforced, resumed and checked.

Public API (imported lazily; ``import defenses.privacy`` is cheap):

* :class:`DifferentialPrivacy` - the defense (training loop, CLI ``--dp``, or ``with protect(...)``)
* :class:`PrivacyConfig` - its settings, validated and frozen
* :class:`PrivacyBudget` - the accountant's history, the epsilon spent, whether one more step fits
* :func:`make_compatible` - replace BatchNorm/LSTM/attention layers in place, or refuse
* :func:`declare_forward_passes` - a hand-written loop's extra hooked passes of the same samples
* :func:`recommended` - the recipe (a :class:`~defenses.recipe.Recipe`) for a data set and model
* :data:`AUGMENTATIONS` / :class:`Augmentation` - augmentations of the views of ``augmult``
* :func:`sweep` - train at several epsilons and return the privacy-utility curve
* accounting helpers: :func:`epsilon`, :func:`calibrate_noise`, :func:`max_steps`

Example:
    >>> from defenses.privacy import DifferentialPrivacy, epsilon
    >>> DifferentialPrivacy(epsilon=3.0, epochs=5).config()["accountant"]
    'prv'
    >>> round(epsilon("rdp", [(1.0, 0.05, 100)], delta=1e-5), 3)
    4.038
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from defenses.privacy.accounting import calibrate_noise, epsilon, max_steps
    from defenses.privacy.augment import AUGMENTATIONS, Augmentation
    from defenses.privacy.budget import PrivacyBudget
    from defenses.privacy.compat import make_compatible
    from defenses.privacy.config import PrivacyConfig
    from defenses.privacy.curve import sweep
    from defenses.privacy.defense import DifferentialPrivacy
    from defenses.privacy.presets import recommended
    from defenses.privacy.validity import declare_forward_passes

_LAZY = {
    "AUGMENTATIONS": "defenses.privacy.augment",
    "Augmentation": "defenses.privacy.augment",
    "DifferentialPrivacy": "defenses.privacy.defense",
    "PrivacyConfig": "defenses.privacy.config",
    "PrivacyBudget": "defenses.privacy.budget",
    "make_compatible": "defenses.privacy.compat",
    "declare_forward_passes": "defenses.privacy.validity",
    "recommended": "defenses.privacy.presets",
    "sweep": "defenses.privacy.curve",
    "epsilon": "defenses.privacy.accounting",
    "calibrate_noise": "defenses.privacy.accounting",
    "max_steps": "defenses.privacy.accounting",
}

__all__ = [
    "AUGMENTATIONS",
    "Augmentation",
    "DifferentialPrivacy",
    "PrivacyBudget",
    "PrivacyConfig",
    "calibrate_noise",
    "declare_forward_passes",
    "epsilon",
    "make_compatible",
    "max_steps",
    "recommended",
    "sweep",
]
assert sorted(__all__) == sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name == "recommended_privacy":  # deprecated: the function warns when called
        return getattr(importlib.import_module("defenses.privacy.presets"), name)
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'defenses.privacy' has no attribute {name!r}")
