"""One writer per run directory: the lock, its refusal message, and release on a killed holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from securetrain.errors import RunDirectoryLocked
from securetrain.runlock import HOLDER_NAME, RunLock

HOLD = (
    "import sys, time; from securetrain.runlock import RunLock; "
    "lock = RunLock(sys.argv[1], command='train --out demo').acquire(); print('held', flush=True); time.sleep(60)"
)


def _start_holder(run_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(timeout=30)
    assert proc.stdout is not None
    proc.stdout.close()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    holder = _start_holder(tmp_path)
    try:
        with pytest.raises(
            RunDirectoryLocked,
            match=rf"run directory {tmp_path} is in use by another securetrain "
            rf"command: 'train --out demo' \(pid {holder.pid} on ",
        ):
            RunLock(tmp_path, command="audit").acquire()
    finally:
        _stop(holder)


def test_a_killed_holder_leaves_the_directory_usable(tmp_path):
    holder = _start_holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    _stop(holder)
    deadline = time.monotonic() + 10
    while True:  # the kernel drops a killed process's flock at once; allow for a slow reaper
        try:
            with RunLock(tmp_path, command="audit") as lock:
                assert lock.held
            break
        except RunDirectoryLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_release_removes_the_holder_file_and_the_lock_is_reusable(tmp_path):
    with RunLock(tmp_path, command="train") as lock:
        assert (tmp_path / HOLDER_NAME).is_file() and lock.held
        with pytest.raises(RunDirectoryLocked):
            RunLock(tmp_path).acquire()  # a second object in the same process is refused too
    assert not (tmp_path / HOLDER_NAME).exists() and not lock.held
    with RunLock(tmp_path, command="again"):
        pass
