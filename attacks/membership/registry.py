"""The membership-attack registry: name -> ``factory(shadows) -> MembershipAttack``.

Threshold attacks ignore ``shadows``; LiRA needs them. Register your own attack with
``ATTACKS.add(name, factory)``.

Example:
    >>> from attacks.membership.registry import ATTACKS, make_attack
    >>> ATTACKS.names()
    ['confidence', 'entropy', 'lira-offline', 'lira-online', 'loss', 'modified-entropy']
    >>> make_attack("loss").name
    'loss'
"""

from __future__ import annotations

from collections.abc import Callable

from attacks.membership.base import MembershipAttack
from attacks.membership.lira import LiRA
from attacks.membership.shadow import ShadowSet
from attacks.membership.threshold import (
    ConfidenceThreshold,
    EntropyThreshold,
    LossThreshold,
    ModifiedEntropyThreshold,
)
from securetrain.errors import AttackError
from securetrain.registry import Registry

AttackFactory = Callable[[ShadowSet | None], MembershipAttack]

ATTACKS: Registry[AttackFactory] = Registry("membership attack")
SHADOW_ATTACKS: set[str] = {"lira-online", "lira-offline"}
"""Attacks that need shadow models."""

ATTACKS.add("loss", lambda shadows: LossThreshold())
ATTACKS.add("confidence", lambda shadows: ConfidenceThreshold())
ATTACKS.add("entropy", lambda shadows: EntropyThreshold())
ATTACKS.add("modified-entropy", lambda shadows: ModifiedEntropyThreshold())


def _lira(online: bool) -> AttackFactory:
    def factory(shadows: ShadowSet | None) -> MembershipAttack:
        if shadows is None:
            raise AttackError(
                f"lira-{'online' if online else 'offline'} needs shadow models; train them with train_shadow_models"
            )
        return LiRA(shadows, online=online)

    return factory


ATTACKS.add("lira-online", _lira(True))
ATTACKS.add("lira-offline", _lira(False))


def make_attack(name: str, shadows: ShadowSet | None = None) -> MembershipAttack:
    """The registered attack ``name`` (raises UnknownNameError listing the choices)."""
    return ATTACKS.get(name)(shadows)


__all__ = ["ATTACKS", "AttackFactory", "SHADOW_ATTACKS", "make_attack"]
