"""Flags shared by the commands that rebuild a run's model and data: ``--model``, ``--data``, ``--device``.

A run trained on a model or data named by import path (``package.module:name``) records the
spec, but ``audit``, ``encrypt`` and ``serve`` import it only when it is passed again with
``--model`` / ``--data`` (importing runs that module's code). Registered names, installed
plugins and ``npz:PATH`` files need nothing passed.
"""

from __future__ import annotations

import argparse

SPEC_HELP = (
    "{what} spec the run was trained with, given again to allow importing it (package.module:name; "
    "importing runs that code); not needed for registered names or npz: files"
)


def add_spec_arguments(p: argparse.ArgumentParser) -> None:
    """``--model SPEC`` and ``--data SPEC`` (the run's own import-path specs)."""
    p.add_argument("--model", default=None, metavar="SPEC", help=SPEC_HELP.format(what="the model"))
    p.add_argument("--data", default=None, metavar="SPEC", help=SPEC_HELP.format(what="the data"))


def add_device_argument(p: argparse.ArgumentParser, what: str) -> None:
    """``--device cpu|cuda|auto`` (``cuda:N`` too)."""
    p.add_argument(
        "--device",
        default=None,
        help=f"device to {what} on: cpu (default), cuda (cuda:N) or auto (a GPU when torch sees one); "
        "single process only",
    )


__all__ = ["add_device_argument", "add_spec_arguments"]
