"""Entry point of the ``securetrain`` command.

Every module in :mod:`securetrain.cli.commands` that defines ``register(subparsers)`` is a
sub-command; the function it sets as ``func`` runs it and returns an exit code.

Errors and exit status (``docs/cli.md``):

* Every failure is **one line** on stderr, ``securetrain COMMAND: error: MESSAGE``; no
  traceback unless the global ``--debug`` flag is given (``securetrain --debug COMMAND ...``),
  which prints the traceback before that line. The exit status is the same with ``--debug``.
* Exit status **2**: a usage error, i.e. the command line itself is wrong: argparse errors
  (unknown flag, a value of the wrong type, a missing argument, no command),
  :class:`~securetrain.errors.ConfigurationError` (a bad option value or combination),
  :class:`~securetrain.errors.UnknownNameError` (a model, data set, attack... that does not
  exist) and :class:`~securetrain.errors.AttackError` (invalid attack arguments). Fix the
  command and rerun.
* Exit status **1**: everything else. Every other :mod:`securetrain.errors` error (bad data,
  a corrupted checkpoint, config or report, a model that does not fit, encryption, privacy
  accounting, a failed distributed worker...), the environment (``OSError`` such as a
  permission denied or a directory where a file belongs, invalid JSON, a corrupted
  compressed file, input nested too deeply, out of memory), and internal errors
  (``internal error: TYPE: MESSAGE (rerun with --debug for the traceback)``), which are bugs.
* Exit status 130: interrupted with Ctrl-C.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import logging
import pkgutil
import sys
import traceback
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from securetrain.errors import (
    AttackError,
    CheckpointError,
    ConfigurationError,
    SecureTrainError,
    UnknownNameError,
)

EXIT_FAILURE = 1
"""Exit status of every failure that is not a usage error."""
EXIT_USAGE = 2
"""Exit status of a usage error (the command line itself is wrong)."""
EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C."""
USAGE_ERRORS: tuple[type[SecureTrainError], ...] = (ConfigurationError, UnknownNameError, AttackError)
"""The :mod:`securetrain.errors` classes that mean "the command line is wrong" (exit status 2)."""
MAX_SEED = 2**63 - 1
"""The largest ``--seed`` accepted (torch seeds are 64-bit)."""
MAX_THREADS = 4096
"""The largest ``--threads`` accepted."""
_RUN_DIR_COMMANDS = frozenset({"audit", "encrypt", "report", "serve"})
"""Commands whose positional ``dir`` is a run directory."""


class _UsageError(Exception):
    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog
        self.message = message


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (raised to :func:`main`, not printed with usage)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every discovered sub-command."""
    from securetrain import __version__
    from securetrain.cli import commands

    parser = _Parser(
        prog="securetrain",
        description="Train private, robust and confidential PyTorch models and report all three honestly.",
        epilog="Exit status: 0 on success, 2 for a usage error (bad flags, options or names), 1 for any other "
        "failure. Errors are one line; --debug adds the traceback.",
    )
    parser.add_argument("--version", action="version", version=f"securetrain {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: 1 for models of at most 1M parameters, such as the zoo's models on the "
        "embedded data, where more threads are slower; torch's choice for larger ones)",
    )
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of an error (before its one-line message)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{mod.name}")
        module.register(sub)
    return parser


def _one_line(text: str) -> str:
    """``text`` with its lines joined by spaces (an error is one line on stderr)."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _where(exc: OSError) -> str:
    name = exc.filename if exc.filename is not None else exc.filename2
    return str(name) if name is not None else "a file"


def describe_error(exc: BaseException) -> tuple[int, str]:
    """``(exit status, one-line message)`` for an exception that ended a command.

    Example:
        >>> describe_error(ConfigurationError("--epochs must be at least 1"))
        (2, '--epochs must be at least 1')
        >>> describe_error(IsADirectoryError(21, "Is a directory", "runs/a/config.json"))[1]
        'runs/a/config.json is a directory, but a file is needed there; remove or rename it, or choose another path'
        >>> describe_error(ZeroDivisionError("division by zero"))
        (1, 'internal error: ZeroDivisionError: division by zero (rerun with --debug for the traceback)')
    """
    if isinstance(exc, SecureTrainError):
        code = EXIT_USAGE if isinstance(exc, USAGE_ERRORS) else EXIT_FAILURE
        return code, _one_line(str(exc)) or type(exc).__name__
    message: str
    if isinstance(exc, json.JSONDecodeError):
        message = f"invalid JSON ({exc}); check the file or option that holds it"
    elif isinstance(exc, PermissionError):
        message = f"permission denied: {_where(exc)}; check its owner and mode, or choose another path"
    elif isinstance(exc, IsADirectoryError):
        message = (
            f"{_where(exc)} is a directory, but a file is needed there; remove or rename it, or choose another path"
        )
    elif isinstance(exc, NotADirectoryError):
        message = f"{_where(exc)}: part of this path is a file, not a directory; choose another path"
    elif isinstance(exc, FileExistsError):
        message = f"{_where(exc)} already exists and is in the way; remove or rename it, or choose another path"
    elif isinstance(exc, FileNotFoundError):
        message = f"{_where(exc)} does not exist; check the path"
    elif isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        message = f"no space left on the device while writing {_where(exc)}; free some space or choose another path"
    elif isinstance(exc, OSError) and type(exc).__name__ == "BadGzipFile":
        message = f"a .gz file is not a valid gzip file ({exc}); replace it with a good copy"
    elif isinstance(exc, OSError):
        detail = exc.strerror or str(exc)
        message = f"{exc.filename}: {detail}" if exc.filename is not None else detail
    elif isinstance(exc, (zlib.error, EOFError)):
        message = f"a compressed file is corrupted or truncated ({exc}); replace it with a good copy"
    elif isinstance(exc, RecursionError):
        message = (
            "an input is nested too deeply to read (a JSON file or option with thousands of nested levels?); "
            "check the files and options given"
        )
    elif isinstance(exc, MemoryError):
        message = "out of memory; use fewer samples or a smaller --batch-size, or a machine with more memory"
    else:
        message = f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
    return EXIT_FAILURE, _one_line(message)


def check_global_options(args: argparse.Namespace) -> None:
    """Checks shared by every command: ``--threads``, ``--seed`` and a run directory that is a file."""
    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        if args.threads < 1:
            raise ConfigurationError(f"--threads must be at least 1, got {args.threads}")
        raise ConfigurationError(f"--threads must be at most {MAX_THREADS}, got {args.threads}")
    seed = getattr(args, "seed", None)
    if isinstance(seed, int) and not 0 <= seed <= MAX_SEED:
        raise ConfigurationError(f"--seed must be an integer in 0..2**63-1 ({MAX_SEED}), got {seed}")
    run_dir = getattr(args, "dir", None)
    if args.command in _RUN_DIR_COMMANDS and isinstance(run_dir, str):
        path = Path(run_dir)
        if path.exists() and not path.is_dir():
            raise CheckpointError(
                f"{run_dir} is not a securetrain run directory (it is a file); "
                f"give the directory that contains config.json and report.json, e.g. {path.parent}"
            )


def _command_names(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    return []


def _report(command: str | None, code: int, message: str) -> int:
    prefix = f"securetrain {command}" if command else "securetrain"
    sys.stderr.write(f"{prefix}: error: {message}\n")
    sys.stderr.flush()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0, 1 or 2: see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        prog = exc.prog
        if prog == parser.prog:  # e.g. "unrecognized arguments", reported by the top parser: name the command
            given = [a for a in (sys.argv[1:] if argv is None else argv) if a in _command_names(parser)]
            prog = f"{parser.prog} {given[0]}" if given else prog
        sys.stderr.write(f"{prog}: error: {_one_line(exc.message)} (see {prog} --help)\n")
        return EXIT_USAGE
    quiet = bool(getattr(args, "quiet", False))  # --quiet of the commands that have it
    logging.basicConfig(
        level=logging.ERROR if quiet else logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        names = ", ".join(_command_names(parser))
        return _report(None, EXIT_USAGE, f"no command given; choose one of: {names} (see securetrain --help)")
    try:
        check_global_options(args)
        threads = args.threads
        if threads is None:
            from securetrain.cli.threads import default_threads

            threads = default_threads(args)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        return _report(args.command, EXIT_INTERRUPTED, "interrupted")
    except Exception as exc:  # every failure becomes one line: see the module docstring
        if args.debug:
            traceback.print_exc()
        code, message = describe_error(exc)
        return _report(args.command, code, message)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
