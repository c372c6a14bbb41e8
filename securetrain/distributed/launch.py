"""Launching a job on N local processes with ``torchrun``, and turning its failures into one clear error.

``securetrain train --nproc N ...`` calls :func:`launch`, which runs ``torchrun``
itself (``torch.distributed.run``, in this process, as the ``torchrun`` command does):

    torchrun --standalone --nproc-per-node N --max-restarts 0 -m securetrain.cli.main train ...

``--standalone`` makes a rendezvous on a free local port. torchrun starts the workers,
watches them, and when one fails it stops the others and reports every failure; here
that report becomes a :class:`~securetrain.distributed.errors.WorkerFailedError` naming
the failed rank, its exit status or signal, and what to do next. There is no process
management of our own: restarts, rendezvous and multi-machine jobs are torchrun's
(see ``docs/distributed.md``).

Example:
    >>> from securetrain.distributed.launch import torchrun_argv
    >>> torchrun_argv(["train", "--dp"], nproc=2)[:7]
    ['--standalone', '--nproc-per-node', '2', '--max-restarts', '0', '-m', 'securetrain.cli.main']
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from securetrain.distributed.errors import WorkerFailedError
from securetrain.errors import ConfigurationError

log = logging.getLogger("securetrain")

ENTRY_MODULE = "securetrain.cli.main"
"""The module every worker runs (``python -m securetrain.cli.main``)."""

_TERMINATION = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def check_nproc(nproc: Any) -> int:
    """``nproc`` as an int >= 1, or a :class:`ConfigurationError` saying what is allowed."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigurationError(f"--nproc must be a whole number of processes >= 1, got {nproc!r}")
    return nproc


def torchrun_argv(worker_argv: Sequence[str], nproc: int, *, module: str = ENTRY_MODULE) -> list[str]:
    """The ``torchrun`` arguments that run ``python -m module *worker_argv`` on ``nproc`` local processes."""
    check_nproc(nproc)
    return ["--standalone", "--nproc-per-node", str(nproc), "--max-restarts", "0", "-m", module, *worker_argv]


def launch(
    worker_argv: Sequence[str],
    nproc: int,
    *,
    module: str = ENTRY_MODULE,
    failure_hint: Callable[[], str] | None = None,
) -> None:
    """Run ``python -m module *worker_argv`` on ``nproc`` processes under torchrun; wait for all.

    Raises :class:`WorkerFailedError` when a worker fails (torchrun has then stopped the
    others); ``failure_hint()`` adds what the user can do (e.g. where the last checkpoint is).
    """
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    check_nproc(nproc)
    cores = os.cpu_count() or 1
    if nproc > cores:
        log.warning(
            "--nproc %d is more than the %d CPU cores of this machine; the processes will share cores", nproc, cores
        )
    # torch leaves torchrun's entry points unannotated: parse_args -> Namespace, run -> None
    args = torchrun.parse_args(torchrun_argv(worker_argv, nproc, module=module))  # type: ignore[no-untyped-call]
    try:
        torchrun.run(args)  # type: ignore[no-untyped-call]
    except ChildFailedError as exc:
        failures = [
            (int(r), int(f.exitcode), _signal_name(int(f.exitcode)), int(f.pid), float(f.timestamp))
            for r, f in exc.failures.items()
        ]
        message = describe_failures(failures, nproc)
        if failure_hint is not None:
            message += " " + failure_hint()
        raise WorkerFailedError(message, failures=[(r, c, s) for r, c, s, _, _ in order_failures(failures)]) from None


def _signal_name(exitcode: int) -> str | None:
    if exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def order_failures(
    failures: Iterable[tuple[int, int, str | None, int, float]],
) -> list[tuple[int, int, str | None, int, float]]:
    """Root cause first: a worker killed by a signal other than a stop request, then by time, then rank."""

    def key(f: tuple[int, int, str | None, int, float]) -> tuple[int, float, int]:
        rank, code, _name, _pid, ts = f
        killed = code < 0 and -code not in {int(s) for s in _TERMINATION}
        return (0 if killed else 1, ts, rank)

    return sorted(failures, key=key)


def describe_failures(failures: Iterable[tuple[int, int, str | None, int, float]], nproc: int) -> str:
    """One sentence per failed worker, the root cause first.

    Example:
        >>> describe_failures([(0, -15, "SIGTERM", 11, 5.0), (1, -9, "SIGKILL", 12, 5.0)], 2)
        'distributed training failed: worker rank 1 (pid 12) was killed by signal SIGKILL; rank 0 (pid 11) then was stopped (SIGTERM). torchrun stopped the job (2 processes).'
        >>> describe_failures([(1, 2, None, 12, 3.0)], 2)
        'distributed training failed: worker rank 1 (pid 12) exited with status 2. torchrun stopped the job (2 processes).'
    """
    ordered = order_failures(failures)
    parts = []
    for i, (rank, code, name, pid, _ts) in enumerate(ordered):
        if code >= 0:
            what = f"exited with status {code}"
        elif i > 0 and -code in {int(s) for s in _TERMINATION}:
            what = f"was stopped ({name})"
        else:
            what = f"was killed by signal {name}"
        parts.append(f"worker rank {rank} (pid {pid}) {what}" if i == 0 else f"rank {rank} (pid {pid}) then {what}")
    return f"distributed training failed: {'; '.join(parts)}. torchrun stopped the job ({nproc} processes)."


def argv_from_namespace(
    parser: argparse.ArgumentParser, namespace: argparse.Namespace, *, skip: Iterable[str] = ()
) -> list[str]:
    """Command-line arguments that make ``parser`` produce ``namespace`` again (defaults left out).

    Used to hand a parsed ``securetrain train`` command to the workers. Values are
    written as ``--flag=value`` so that values starting with ``-`` survive.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> _ = p.add_argument("--epochs", type=int, default=5)
        >>> _ = p.add_argument("--dp", action="store_true")
        >>> _ = p.add_argument("--lr", type=float, default=0.01)
        >>> argv_from_namespace(p, p.parse_args(["--dp", "--lr", "-0.5"]))
        ['--dp', '--lr=-0.5']
    """
    skipped = set(skip)
    out: list[str] = []
    for action in parser._actions:
        dest = action.dest
        if (
            dest in skipped
            or dest == argparse.SUPPRESS
            or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
        ):
            continue
        if not hasattr(namespace, dest):
            continue
        value = getattr(namespace, dest)
        if value == action.default:
            continue
        if not action.option_strings:
            values = value if isinstance(value, (list, tuple)) else [value]
            out.extend(str(v) for v in values)
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            out.append(flag)  # differs from the default, so the flag was given
        elif isinstance(action, argparse._CountAction):
            out.extend([flag] * int(value or 0))
        elif isinstance(action, argparse._StoreConstAction):
            if value == action.const:
                out.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for v in value or []:
                out.append(f"{flag}={v}")
        elif isinstance(action, argparse._StoreAction):
            if value is None:
                continue
            if action.nargs in (None, "?"):
                out.append(f"{flag}={value}")
            else:
                out.append(flag)
                out.extend(str(v) for v in value)
        else:
            raise ConfigurationError(f"cannot pass the option {flag} ({type(action).__name__}) on to the workers")
    return out
