"""securetrain: private, robust and confidential training of PyTorch models, reported honestly.

Nothing heavy is imported until used.

Example:
    >>> import securetrain
    >>> securetrain.__version__
    '0.1.0'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from securetrain.runs import load_model, train

__all__ = ["__version__", "load_model", "train"]


_SUBMODULES = ("data", "models", "training", "report", "errors", "encrypted", "runs", "checkpoint", "modes")


def __getattr__(name: str) -> Any:
    if name in ("load_model", "train"):
        from securetrain import runs

        return getattr(runs, name)
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"securetrain.{name}")
    raise AttributeError(f"module 'securetrain' has no attribute {name!r}")
