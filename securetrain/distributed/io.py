"""Files in a distributed job: rank 0 writes (atomically), every rank reads what rank 0 read.

Only global rank 0 writes the run directory (checkpoints, weights, config and report,
each through :mod:`securetrain.io`'s atomic writes), so a worker that dies mid-write
leaves the previous file intact. Reading is the mirror image: rank 0 reads the file and
sends its bytes to the other ranks over the process group, so the run directory needs to
exist on rank 0's machine only and every rank resumes from exactly the same bytes. The
bytes are parsed as safetensors; nothing is ever unpickled.

Example (a single process reads the file itself):
    >>> import tempfile, pathlib, torch
    >>> from securetrain.checkpoint import save_state
    >>> from securetrain.distributed.io import load_state_everywhere, on_main
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.safetensors"
    >>> on_main(save_state, p, {"epoch": 2, "w": torch.ones(1)})
    >>> load_state_everywhere(p)["epoch"]
    2
    >>> load_state_everywhere(p.with_name("missing.safetensors")) is None
    True
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from securetrain.checkpoint import load_state
from securetrain.distributed.context import DistributedContext, get_context
from securetrain.distributed.sync import _collective
from securetrain.errors import CheckpointError

T = TypeVar("T")


def on_main(fn: Callable[..., T], *args: Any, ctx: DistributedContext | None = None, **kwargs: Any) -> T | None:
    """Call ``fn(*args, **kwargs)`` on global rank 0 only; other ranks get None."""
    ctx = ctx if ctx is not None else get_context()
    if ctx.is_main:
        return fn(*args, **kwargs)
    return None


def read_bytes_everywhere(path: str | os.PathLike[str], ctx: DistributedContext | None = None) -> bytes | None:
    """The bytes of ``path`` as rank 0 sees it (None if missing there), on every rank."""
    ctx = ctx if ctx is not None else get_context()
    p = Path(path)
    if not ctx.active:
        return p.read_bytes() if p.is_file() else None
    data = p.read_bytes() if ctx.is_main and p.is_file() else None
    device = torch.device("cpu") if (ctx.cpu_group is not None or ctx.backend != "nccl") else ctx.device
    group = ctx.cpu_group if device.type == "cpu" else None
    size = torch.tensor([-1 if data is None else len(data)], dtype=torch.int64, device=device)
    _collective(ctx, lambda: dist.broadcast(size, 0, group=group), f"sending {p.name} from rank 0")
    n = int(size.item())
    if n < 0:
        return None
    if ctx.is_main and data is not None and n:
        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
    elif ctx.is_main:
        buf = torch.empty(0, dtype=torch.uint8, device=device)
    else:
        buf = torch.empty(n, dtype=torch.uint8, device=device)
    if n:
        _collective(ctx, lambda: dist.broadcast(buf, 0, group=group), f"sending {p.name} from rank 0")
    return data if ctx.is_main else bytes(buf.cpu().numpy().tobytes())


def load_state_everywhere(path: str | os.PathLike[str], ctx: DistributedContext | None = None) -> dict[str, Any] | None:
    """:func:`securetrain.checkpoint.load_state` of rank 0's file on every rank (None if it has none).

    Errors (a corrupted or unsafe file) are raised on every rank alike, since every rank
    parses the same bytes.
    """
    ctx = ctx if ctx is not None else get_context()
    p = Path(path)
    if not ctx.active:
        return load_state(p) if p.is_file() else None
    data = read_bytes_everywhere(p, ctx)
    if data is None:
        return None
    if ctx.is_main:
        return load_state(p)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.rank{ctx.rank}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return load_state(tmp)
    except CheckpointError as exc:  # name rank 0's file, not the temporary copy
        raise CheckpointError(str(exc).replace(tmp, str(p))) from exc
    finally:
        os.unlink(tmp)
