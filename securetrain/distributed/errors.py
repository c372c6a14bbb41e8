"""Errors of distributed training.

Both derive from :class:`securetrain.errors.SecureTrainError`, so the command line
prints them as ``securetrain train: error: ...`` and exits with status 1 (see ``docs/cli.md``).

Example:
    >>> from securetrain.distributed.errors import DistributedError, WorkerFailedError
    >>> err = WorkerFailedError("worker rank 1 was killed by signal SIGKILL", failures=[(1, -9, "SIGKILL")])
    >>> isinstance(err, DistributedError), err.failures[0][0]
    (True, 1)
"""

from __future__ import annotations

from collections.abc import Sequence

from securetrain.errors import SecureTrainError


class DistributedError(SecureTrainError, RuntimeError):
    """Distributed training cannot start or cannot go on (a lost worker, replicas that drifted apart)."""


class WorkerFailedError(DistributedError):
    """A worker process of a launched job failed; the launcher stopped the others.

    ``failures`` lists ``(global_rank, exit_code, signal_name_or_None)`` of every failed
    worker, the root cause first.
    """

    def __init__(self, message: str, *, failures: Sequence[tuple[int, int, str | None]] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)


__all__ = ["DistributedError", "WorkerFailedError"]
