"""Import-path specs: ``package.module:name`` names a callable in the user's own code.

``securetrain train --model mypkg.models:SmallNet --data mypkg.data:load`` imports
``mypkg.models`` and ``mypkg.data`` and calls what they name. **Importing a spec executes
code**: the module's top level on import and the callable when it is called. A spec is
imported only when the user gives it (``--model`` / ``--data`` on the command line, a
``model=`` / ``data=`` argument in Python). A run directory records the specs it was trained
with, but opening one never imports them by itself: the commands that rebuild the model or the
data (``load_model``, ``audit``, ``encrypt``, ``serve``) need the same spec passed again (see
:class:`securetrain.rundir.RunDir`). The module must be importable from this Python: installed,
or on ``sys.path`` (``PYTHONPATH``; the current directory counts when running ``python -m``);
nothing is imported from a run directory.

Example:
    >>> from securetrain.specs import import_spec, parse_spec
    >>> parse_spec("collections:OrderedDict")
    ImportSpec(module='collections', name='OrderedDict')
    >>> parse_spec("digits") is None
    True
    >>> import_spec("collections:OrderedDict", what="model").__name__
    'OrderedDict'
    >>> import_spec("no_such_module_xyz:Net", what="model")
    Traceback (most recent call last):
    ...
    securetrain.errors.SpecError: model spec 'no_such_module_xyz:Net': cannot import module 'no_such_module_xyz' (No module named 'no_such_module_xyz'); it must be importable from this Python: installed, or on sys.path (PYTHONPATH)
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from securetrain.errors import SpecError

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class ImportSpec:
    """A parsed ``module:name`` spec (``name`` may be dotted: ``mod:Class.build``)."""

    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}:{self.name}"


def is_import_spec(text: str) -> bool:
    """Whether ``text`` has the form of an import-path spec (``a.b:c``), not a registered name.

    Example:
        >>> is_import_spec("pkg.mod:load"), is_import_spec("digits"), is_import_spec("npz:/tmp/a.npz")
        (True, False, False)
    """
    module, sep, name = text.partition(":")
    return bool(sep) and bool(_DOTTED.match(module)) and bool(_DOTTED.match(name))


def parse_spec(text: str, *, what: str = "import") -> ImportSpec | None:
    """``"pkg.mod:name"`` -> :class:`ImportSpec`; a text without ``:`` -> ``None`` (a registry name).

    Raises :class:`~securetrain.errors.SpecError` for a text with ``:`` that is not of the form
    ``package.module:name``.
    """
    if ":" not in text:
        return None
    if not is_import_spec(text):
        raise SpecError(
            f"{what} spec {text!r} is not of the form package.module:name (e.g. mypkg.models:SmallNet): "
            "a dotted module path, one colon, then the name of a callable in that module"
        )
    module, _, name = text.partition(":")
    return ImportSpec(module=module, name=name)


def import_spec(text: str, *, what: str) -> Callable[..., Any]:
    """Import the callable that ``text`` (``package.module:name``) names. **Runs the module's code.**

    ``what`` ("model", "data") goes into error messages. Raises
    :class:`~securetrain.errors.SpecError` when the module cannot be imported (or raises while
    being imported), has no such attribute, or the attribute is not callable.
    """
    spec = parse_spec(text, what=what)
    if spec is None:
        raise SpecError(f"{what} spec {text!r} is not of the form package.module:name (e.g. mypkg.models:SmallNet)")
    label = f"{what} spec {text!r}"
    try:
        module = importlib.import_module(spec.module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if spec.module == missing or spec.module.startswith(missing + "."):
            raise SpecError(
                f"{label}: cannot import module {spec.module!r} ({exc}); it must be importable from this Python: "
                "installed, or on sys.path (PYTHONPATH)"
            ) from None
        raise SpecError(f"{label}: importing module {spec.module!r} failed: {exc}") from exc
    except Exception as exc:  # the user's module raised while being imported: name it, keep the cause
        raise SpecError(f"{label}: importing module {spec.module!r} raised {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in spec.name.split("."):
        try:
            obj = getattr(obj, part)  # resolving the name the user wrote, as an import statement would
        except AttributeError:
            raise SpecError(f"{label}: module {spec.module!r} has no attribute {spec.name!r}") from None
    if not callable(obj):
        raise SpecError(f"{label}: {spec.name!r} is a {type(obj).__name__}, not a callable")
    return obj  # type: ignore[no-any-return]


def check_signature(
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    label: str,
    expected: str,
) -> None:
    """Raise :class:`~securetrain.errors.SpecError` if ``fn(*args, **kwargs)`` cannot bind.

    ``label`` names the spec, ``expected`` says what signature was expected. A callable whose
    signature cannot be read (a builtin) passes.

    Example:
        >>> check_signature(lambda a, b: None, ["train"], {}, label="data spec 'm:load'", expected="load(split)")
        Traceback (most recent call last):
        ...
        securetrain.errors.SpecError: data spec 'm:load': expected load(split), but it takes (a, b): missing a required argument: 'b'
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        plain = sig.replace(
            parameters=[p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()],
            return_annotation=inspect.Signature.empty,
        )
        raise SpecError(f"{label}: expected {expected}, but it takes {plain}: {exc}") from None


def accepted_keywords(fn: Callable[..., Any]) -> tuple[tuple[str, ...], bool]:
    """``(names it takes by keyword, in signature order; whether it also takes **kwargs)``;
    a callable whose signature cannot be read: ``((), True)``.

    Example:
        >>> accepted_keywords(lambda hidden=8, *, depth=2: None)
        (('hidden', 'depth'), False)
    """
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return (), True
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = tuple(p.name for p in params if p.kind in kinds)
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


__all__ = ["ImportSpec", "accepted_keywords", "check_signature", "import_spec", "is_import_spec", "parse_spec"]
