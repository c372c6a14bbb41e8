"""One writer per run directory: an exclusive lock held for a whole command.

``train``, ``audit``, ``encrypt`` and ``report`` write into a run directory. Two of them on the
same directory at once would leave it mixed (one run's weights beside the other's config) or
lose one run silently, and one process's clean-up of stale temporaries could delete the other's
live temporary file. :class:`RunLock` takes an exclusive, non-blocking lock (the well-kept
``filelock`` package: ``fcntl.flock`` on POSIX, ``msvcrt`` on Windows) on ``.securetrain.lock``
inside the directory, and writes who holds it (process id, host, command, start time) beside it,
so a second writer is refused at once with a message naming the holder. The operating system
releases the lock when the holder exits, even when it is killed, so a crash never leaves a
directory locked.

Example:
    >>> import tempfile
    >>> from securetrain.errors import CheckpointError, RunDirectoryLocked
    >>> from securetrain.runlock import RunLock
    >>> d = tempfile.mkdtemp()
    >>> with RunLock(d, command="train"):
    ...     try:
    ...         RunLock(d, command="audit").acquire()
    ...     except RunDirectoryLocked as exc:
    ...         print(str(exc).split(":")[0])
    run directory ... is in use by another securetrain command
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from securetrain.errors import CheckpointError, RunDirectoryLocked

LOCK_NAME = ".securetrain.lock"
HOLDER_NAME = ".securetrain.lock.json"
MAX_HOLDER_BYTES = 4096


def _describe_holder(path: Path) -> str:
    try:
        raw = path.read_bytes()[:MAX_HOLDER_BYTES]
        info = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "holder unknown"
    if not isinstance(info, dict):
        return "holder unknown"
    return (
        f"'{info.get('command', '?')}' (pid {info.get('pid', '?')} on {info.get('host', '?')}, "
        f"since {info.get('started', '?')})"
    )


class RunLock:
    """Exclusive lock on a run directory, held from :meth:`acquire` to :meth:`release`.

    ``command`` names what holds it (shown to a refused second writer). The directory must
    exist. Re-entrant within one object: acquiring twice is a no-op.
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, command: str = "securetrain") -> None:
        self.run_dir = Path(run_dir)
        self.command = command
        self._lock = FileLock(str(self.run_dir / LOCK_NAME), timeout=0, is_singleton=False)
        self._held = False

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._held

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`~securetrain.errors.RunDirectoryLocked` naming the holder."""
        if self._held:
            return self
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            holder = _describe_holder(self.run_dir / HOLDER_NAME)
            raise RunDirectoryLocked(
                f"run directory {self.run_dir} is in use by another securetrain command: {holder}; wait for it to "
                "finish, or use another directory"
            ) from None
        self._held = True
        info: dict[str, object] = {
            "command": self.command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "argv": sys.argv[:8],
        }
        holder_path = self.run_dir / HOLDER_NAME
        tmp = self.run_dir / f".{HOLDER_NAME}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps(info), encoding="utf-8")
            os.replace(tmp, holder_path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a read-only directory: the lock still holds, only the name is missing
        return self

    def release(self) -> None:
        """Give the lock back (the holder file is removed first)."""
        if not self._held:
            return
        try:
            (self.run_dir / HOLDER_NAME).unlink(missing_ok=True)
        except OSError:
            pass  # read-only directory: nothing was written
        self._held = False
        self._lock.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def lock_run_for_update(run_dir: str | os.PathLike[str], *, command: str) -> RunLock:
    """Check that ``run_dir`` is a writable run directory and lock it (use in ``with``).

    For commands that add to a run (``audit``, ``encrypt``, ``report``): a directory that is not
    a run, or that cannot be written, is refused *before* any work starts, and a second writer is
    refused while this one holds the lock.

    Raises :class:`~securetrain.errors.CheckpointError` (not a run, read-only) or
    :class:`~securetrain.errors.RunDirectoryLocked`.
    """
    from securetrain.rundir import RunDir

    return lock_report_for_update(RunDir.open(run_dir).path, command=command)


def lock_report_for_update(report_dir: str | os.PathLike[str], *, command: str) -> RunLock:
    """Check that ``report_dir`` and its report.json are writable and lock the directory.

    For ``report``, which needs only report.json (a demo's output folder has no config.json);
    :func:`lock_run_for_update` adds the check that the folder is a run.
    """
    path = Path(report_dir)
    report_path = path / "report.json"
    if not os.access(path, os.W_OK | os.X_OK) or (report_path.exists() and not os.access(report_path, os.W_OK)):
        raise CheckpointError(
            f"run directory {path} is read-only; {command} writes its results into report.json there: "
            "make it writable or copy it elsewhere"
        )
    return RunLock(path, command=command)


__all__ = ["HOLDER_NAME", "LOCK_NAME", "RunLock", "lock_report_for_update", "lock_run_for_update"]
