"""The attack registry: names to attack classes.

Example:
    >>> from attacks.evasion.registry import EVASION_ATTACKS, get_attack
    >>> get_attack("pgd", steps=20).steps
    20
    >>> get_attack("pgdd")
    Traceback (most recent call last):
    ...
    securetrain.errors.UnknownNameError: unknown attack 'pgdd'; choose one of: apgd-ce, apgd-ce-l2, apgd-t, apgd-t-l2, boundary, cw-l2, deepfool, fgsm, fmn, fmn-l2, hsj, hsj-l2, pgd, pgd-l2, random, random-l2, square
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from attacks.evasion.base import Attack
from securetrain.deprecation import deprecated_aliases
from securetrain.errors import AttackError
from securetrain.registry import Registry

A = TypeVar("A", bound=type[Attack])

EVASION_ATTACKS: Registry[type[Attack]] = Registry("attack")
"""Evasion attack classes by name (fill it with :func:`register_attack`)."""


def register_attack(cls: A | None = None, *, overwrite: bool = False) -> Any:
    """Class decorator: register an :class:`Attack` subclass under its ``name``."""

    def deco(c: A) -> A:
        if not (isinstance(c, type) and issubclass(c, Attack)) or not c.name:
            raise AttackError(f"{c!r} must be an Attack subclass with a non-empty `name` to be registered")
        EVASION_ATTACKS.add(c.name, c, overwrite=overwrite)
        return c

    return deco(cls) if cls is not None else deco


def get_attack(name: str, **settings: Any) -> Attack:
    """An instance of the attack registered as ``name``, configured with ``settings``."""
    cls = EVASION_ATTACKS.get(name)
    try:
        return cls(**settings)
    except TypeError as exc:
        raise AttackError(f"invalid settings for attack {name!r}: {exc}") from exc


def available_attacks() -> list[str]:
    """Registered attack names, sorted."""
    return EVASION_ATTACKS.names()


AttackFactory = Callable[..., Attack]


__getattr__ = deprecated_aliases(__name__, {"ATTACKS": "EVASION_ATTACKS"})
