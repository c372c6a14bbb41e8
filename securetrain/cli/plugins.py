"""Options that defenses add to ``securetrain train`` (and the demo), from the defense registry.

Every defense class registered in :data:`securetrain.training.DEFENSES` (the built-in ones
through the ``securetrain.defenses`` entry points) may carry a ``command_line`` option
object with ``add_arguments(parser)`` and ``build(args) -> Defense | None`` (None when its
flags were not given). The core never names a defense package.
"""

from __future__ import annotations

from securetrain.training import DefenseOption, get_defense_options


def load_providers() -> list[DefenseOption]:
    """The command-line options of every registered defense."""
    return get_defense_options()


__all__ = ["DefenseOption", "load_providers"]
