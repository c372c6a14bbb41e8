"""Renamed public names keep working for one release, with a ``DeprecationWarning``.

A module that renamed ``old`` to ``new`` sets its module-level ``__getattr__`` (PEP 562) to
:func:`deprecated_aliases`; reading ``module.old`` (or ``from module import old``) then warns and
returns ``module.new``. The library's one implementation of that shim.

Example:
    >>> import sys, types, warnings
    >>> mod = types.ModuleType("demo_mod")
    >>> mod.new_name = 42
    >>> mod.__getattr__ = deprecated_aliases("demo_mod", {"old_name": "new_name"})
    >>> sys.modules["demo_mod"] = mod
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     value = mod.old_name
    >>> value, str(caught[0].message)
    (42, 'demo_mod.old_name is deprecated; use new_name')
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def deprecated_aliases(module: str, aliases: Mapping[str, str], *, why: str = "") -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving each old name in ``aliases`` to its new name, with a warning.

    ``why`` (optional) is appended to the message, e.g. to say which other object shared the name.
    """
    renamed = dict(aliases)

    def __getattr__(name: str) -> Any:
        new = renamed.get(name)
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        message = f"{module}.{name} is deprecated; use {new}"
        warnings.warn(f"{message} ({why})" if why else message, DeprecationWarning, stacklevel=2)
        return getattr(sys.modules[module], new)

    return __getattr__


__all__ = ["deprecated_aliases"]
