"""A small name -> factory registry, the one extension mechanism of the library.

Example:
    >>> from securetrain.registry import Registry
    >>> shapes = Registry("shape")
    >>> @shapes.register("square")
    ... def square(side: float) -> float:
    ...     return side * side
    >>> shapes.get("square")(3.0)
    9.0
    >>> sorted(shapes)
    ['square']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from securetrain.errors import ConfigurationError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (usually factories). Unknown names list the choices."""

    def __init__(self, kind: str, *, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._entry_points_loaded = entry_point_group is None

    def _load_entry_points(self) -> None:
        """Add the entries that installed packages declare under ``entry_point_group`` (once).

        Read lazily with :mod:`importlib.metadata` on the first lookup, never at import
        time; an entry whose name is already registered is left alone (explicit
        registration wins). Loading an entry point imports (executes) its package; one that
        fails to load raises :class:`ConfigurationError` naming it (on every lookup that
        needs the group, until it is fixed or uninstalled).
        """
        if self._entry_points_loaded:
            return
        from importlib.metadata import entry_points

        assert self.entry_point_group is not None
        for ep in entry_points(group=self.entry_point_group):
            if ep.name not in self._items:
                try:
                    obj = ep.load()
                except Exception as exc:  # a broken installed plugin: say which, keep the cause
                    raise ConfigurationError(
                        f"the installed {self.kind} plugin {ep.name!r} ({ep.value}, entry-point group "
                        f"{self.entry_point_group!r}) cannot be loaded: {type(exc).__name__}: {exc}; fix or "
                        "uninstall the package that declares it"
                    ) from exc
                self._items[ep.name] = obj
        self._entry_points_loaded = True

    def reload_entry_points(self) -> None:
        """Read the entry-point group again, e.g. after a plugin was installed into a running process.

        New entries are added; registered names (explicit registrations and entries read before)
        are kept.
        """
        if self.entry_point_group is None:
            return
        import importlib

        importlib.invalidate_caches()
        self._entry_points_loaded = False
        self._load_entry_points()

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def decorator(obj: T) -> T:
            self.add(name, obj, overwrite=overwrite)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, overwrite: bool = False) -> None:
        """Register ``obj`` under ``name``; refuses to silently replace an entry."""
        if not name or not isinstance(name, str):
            raise ConfigurationError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items and not overwrite:
            raise ConfigurationError(f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it")
        self._items[name] = obj

    def remove(self, name: str) -> T:
        """Unregister ``name`` and return its entry (raises :class:`UnknownNameError` if absent)."""
        entry = self.get(name)
        del self._items[name]
        return entry

    @contextmanager
    def temporarily(self, name: str, obj: T, *, overwrite: bool = False) -> Iterator[T]:
        """Register ``obj`` under ``name`` for the duration of a ``with`` block (tests, experiments).

        On exit the previous entry (if ``overwrite`` replaced one) is restored, or ``name`` is
        removed again, even when the block raises.

        Example:
            >>> from securetrain.registry import Registry
            >>> colours = Registry("colour")
            >>> with colours.temporarily("red", "#f00"):
            ...     colours.get("red")
            '#f00'
            >>> "red" in colours
            False
        """
        previous = self._items.get(name)
        had_previous = name in self._items
        self.add(name, obj, overwrite=overwrite)
        try:
            yield obj
        finally:
            if had_previous:
                self._items[name] = previous  # type: ignore[assignment]
            else:
                self._items.pop(name, None)

    def get(self, name: str) -> T:
        """Return the entry for ``name`` or raise :class:`UnknownNameError` listing the choices."""
        if name not in self._items:
            self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items) from None

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            self._load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self._load_entry_points()
        return iter(sorted(self._items))

    def __len__(self) -> int:
        self._load_entry_points()
        return len(self._items)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._load_entry_points()
        return sorted(self._items)
