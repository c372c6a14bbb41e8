"""Options that defenses add to ``securetrain train`` (and the demo), loaded lazily.

A provider is an object with ``add_arguments(parser)`` and ``build(args) -> Defense | None``
(None when its flags were not given). Providers are named by import path so that the core
never imports the ``defenses`` package at module level.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any, Protocol

from securetrain.training import Defense

DEFENSE_OPTION_PROVIDERS: list[str] = [
    "defenses.privacy.cli:OPTION",
    "defenses.adversarial.cli:OPTION",
]


class DefenseOption(Protocol):
    """Adds a defense's command-line flags and builds the defense from them."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def build(self, args: argparse.Namespace) -> Defense | None: ...


def load_providers() -> list[DefenseOption]:
    """Import every provider that is installed."""
    out: list[Any] = []
    for spec in DEFENSE_OPTION_PROVIDERS:
        module_name, attr = spec.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # that defense is not part of this installation
            raise
        out.append(getattr(module, attr))
    return out
