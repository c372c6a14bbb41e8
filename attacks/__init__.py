"""What an adversary does: evasion attacks, membership inference, privacy audits.

Subpackages are imported on first use, so ``import attacks`` is cheap and has no side
effects (Foolbox, in particular, is only imported when an attack that needs it runs).

Example:
    >>> import attacks
    >>> from attacks.evasion import available_attacks
    >>> "pgd" in available_attacks()
    True
"""

from __future__ import annotations

import importlib
from types import ModuleType

_SUBPACKAGES = ("evasion", "membership", "audit")

__all__ = list(_SUBPACKAGES)


def __getattr__(name: str) -> ModuleType:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
