"""The membership-attack registry: name -> ``factory(shadows) -> MembershipAttack``.

Threshold attacks ignore ``shadows``; LiRA needs them. Register your own attack with
``MEMBERSHIP_ATTACKS.add(name, factory)``.

Example:
    >>> from attacks.membership.registry import MEMBERSHIP_ATTACKS, get_membership_attack
    >>> MEMBERSHIP_ATTACKS.names()
    ['confidence', 'entropy', 'lira-offline', 'lira-online', 'loss', 'modified-entropy']
    >>> get_membership_attack("loss").name
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
from securetrain.deprecation import deprecated_aliases
from securetrain.errors import AttackError
from securetrain.registry import Registry

AttackFactory = Callable[[ShadowSet | None], MembershipAttack]

MEMBERSHIP_ATTACKS: Registry[AttackFactory] = Registry("membership attack")
"""Membership attacks by name: ``factory(shadows) -> MembershipAttack``."""
SHADOW_ATTACKS: set[str] = {"lira-online", "lira-offline"}
"""Attacks that need shadow models."""

MEMBERSHIP_ATTACKS.add("loss", lambda shadows: LossThreshold())
MEMBERSHIP_ATTACKS.add("confidence", lambda shadows: ConfidenceThreshold())
MEMBERSHIP_ATTACKS.add("entropy", lambda shadows: EntropyThreshold())
MEMBERSHIP_ATTACKS.add("modified-entropy", lambda shadows: ModifiedEntropyThreshold())


def _lira(online: bool) -> AttackFactory:
    def factory(shadows: ShadowSet | None) -> MembershipAttack:
        if shadows is None:
            raise AttackError(
                f"lira-{'online' if online else 'offline'} needs shadow models; train them with train_shadow_models"
            )
        return LiRA(shadows, online=online)

    return factory


MEMBERSHIP_ATTACKS.add("lira-online", _lira(True))
MEMBERSHIP_ATTACKS.add("lira-offline", _lira(False))


def get_membership_attack(name: str, shadows: ShadowSet | None = None) -> MembershipAttack:
    """The registered attack ``name`` (raises UnknownNameError listing the choices)."""
    return MEMBERSHIP_ATTACKS.get(name)(shadows)


_DEPRECATED = {"ATTACKS": "MEMBERSHIP_ATTACKS", "make_attack": "get_membership_attack"}


__getattr__ = deprecated_aliases(__name__, _DEPRECATED)

__all__ = ["MEMBERSHIP_ATTACKS", "SHADOW_ATTACKS", "AttackFactory", "get_membership_attack"]
