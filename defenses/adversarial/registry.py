"""Adversarial-training methods by name (the ``--adversarial`` choices).

Example:
    >>> from defenses.adversarial.registry import METHODS, make_adversarial
    >>> METHODS.names()
    ['fgsm', 'pgd', 'trades']
    >>> make_adversarial("pgd", epsilon=0.1, steps=5).steps
    5
    >>> make_adversarial("fgsm", epsilon=0.1, steps=3)
    Traceback (most recent call last):
    ...
    securetrain.errors.ConfigurationError: fgsm takes no setting 'steps' (it makes exactly one step); its settings: bounds, clean_share, step_size
"""

from __future__ import annotations

import inspect
from typing import Any

from defenses.adversarial import fast, pgd, trades  # noqa: F401  (each registers its method in METHODS)
from defenses.adversarial.base import METHODS as METHODS  # re-exported: the registry of methods
from defenses.adversarial.base import AdversarialTraining
from securetrain.errors import ConfigurationError


def register_method(name: str, cls: type[AdversarialTraining], *, overwrite: bool = False) -> None:
    """Add an :class:`AdversarialTraining` subclass under ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, AdversarialTraining)):
        raise ConfigurationError(f"{cls!r} is not an AdversarialTraining subclass")
    METHODS.add(name, cls, overwrite=overwrite)


def make_adversarial(method: str, epsilon: float, **settings: Any) -> AdversarialTraining:
    """The defense registered as ``method`` with ``epsilon`` and ``settings``.

    Unknown settings raise :class:`ConfigurationError` naming the ones the method takes.
    """
    cls = METHODS.get(method)
    accepted = sorted(p for p in inspect.signature(cls).parameters if p != "epsilon")
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        why = " (it makes exactly one step)" if unknown == ["steps"] and "steps" not in accepted else ""
        raise ConfigurationError(
            f"{method} takes no setting {', '.join(repr(u) for u in unknown)}{why}; its settings: {', '.join(accepted)}"
        )
    return cls(epsilon, **settings)
