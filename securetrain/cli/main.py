"""Entry point of the ``securetrain`` command.

Every module in :mod:`securetrain.cli.commands` that defines ``register(subparsers)`` is a
sub-command; the function it sets as ``func`` runs it and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from securetrain.errors import ConfigurationError, SecureTrainError


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every discovered sub-command."""
    from securetrain import __version__
    from securetrain.cli import commands

    parser = argparse.ArgumentParser(
        prog="securetrain",
        description="Train private, robust and confidential PyTorch models and report all three honestly.",
    )
    parser.add_argument("--version", action="version", version=f"securetrain {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is fastest for the small embedded models on a busy machine)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{mod.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise ConfigurationError(f"--threads must be at least 1, got {args.threads}")
            import torch

            torch.set_num_threads(args.threads)
        return int(args.func(args) or 0)
    except SecureTrainError as exc:
        sys.stderr.write(f"securetrain {args.command}: error: {exc}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
