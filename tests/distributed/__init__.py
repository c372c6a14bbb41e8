"""Harness of the multi-process tests: workers on 127.0.0.1, bounded in time, always cleaned up.

``run_workers(fn, 2, *args)`` starts two processes (``torch.multiprocessing``, spawn),
each joining a gloo process group on a free local port through
``securetrain.distributed.process_group`` and calling ``fn(rank, *args)``. A worker that
raises fails the call with its traceback; a job that outlives ``timeout`` is killed.
Workers write what they measured with ``securetrain.checkpoint.save_state`` into a
directory the test owns (safetensors: nothing is unpickled).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, fn: Callable[..., None], nproc: int, port: int, args: tuple[Any, ...]) -> None:
    torch.set_num_threads(1)
    from securetrain.distributed import process_group

    with process_group("gloo", rank=rank, world_size=nproc, init_method=f"tcp://127.0.0.1:{port}", timeout_s=120):
        fn(rank, *args)


def run_workers(fn: Callable[..., None], nproc: int, *args: Any, timeout: float = 180.0) -> None:
    """Run ``fn(rank, *args)`` on ``nproc`` processes in one gloo group; raise if any fails or time runs out."""
    ctx = mp.start_processes(
        _entry, args=(fn, nproc, free_port(), args), nprocs=nproc, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=0.5):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {nproc} workers did not finish within {timeout:.0f} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
            p.join(10)


def descendants(pid: int) -> list[int]:
    """Process ids of every descendant of ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def environ_of(pid: int) -> dict[str, str]:
    """The environment of process ``pid`` (empty if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant still running (the processes a test started)."""
    for p in [*descendants(pid), pid]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def result_path(out: str | os.PathLike[str], rank: int, name: str) -> Path:
    """Where rank ``rank`` stores scenario ``name``'s figures."""
    return Path(out) / f"{name}.rank{rank}.safetensors"
