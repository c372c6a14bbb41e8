"""Who am I in the job: process-group setup and rank helpers.

A training process is either alone (the default) or one rank of a
``torch.distributed`` process group. :func:`init_process_group` joins the group that
``torchrun`` describes in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) or one given explicitly, with the ``gloo`` backend on
CPU and ``nccl`` on GPU. :func:`get_context` tells any code where it stands without
caring whether a group exists; every helper here is a no-op for a single process.

Example:
    >>> from securetrain.distributed import get_context, is_main_process, barrier
    >>> ctx = get_context()                      # no process group: a single process
    >>> ctx.rank, ctx.world_size, ctx.active, ctx.is_main
    (0, 1, False, True)
    >>> is_main_process()
    True
    >>> barrier()                                # nothing to wait for
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from securetrain.errors import ConfigurationError

log = logging.getLogger("securetrain")

BACKENDS = ("auto", "gloo", "nccl")
"""Backends :func:`init_process_group` accepts (``auto``: ``nccl`` when CUDA is available, else ``gloo``)."""

DEFAULT_TIMEOUT_S = 600.0
"""How long a collective waits for a silent peer before failing (a dead peer fails at once)."""

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""Environment variables that ``torchrun`` (and other ``env://`` launchers) set for every worker."""


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job.

    ``active`` is true when there is more than one process; ``is_main`` for global rank 0
    (the only rank that writes files). ``cpu_group`` is a process group that can move CPU
    tensors (the default group itself for ``gloo``; a ``gloo`` side group under ``nccl``).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cpu_group: Any = None

    @property
    def active(self) -> bool:
        """More than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Global rank 0: the process that writes checkpoints, reports and output."""
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary for config.json and the report."""
        return {
            "world_size": self.world_size,
            "local_world_size": self.local_world_size,
            "nodes": max(1, self.world_size // max(1, self.local_world_size)),
            "backend": self.backend,
            "device": str(self.device),
        }


_SINGLE = DistributedContext()
_CPU_GROUPS: dict[int, Any] = {}


def launched_by_torchrun() -> bool:
    """True inside a worker started by ``torchrun`` (or any launcher that sets the ``env://`` variables)."""
    return all(k in os.environ for k in TORCHRUN_ENV)


def get_context() -> DistributedContext:
    """The context of this process: from the initialised process group, or a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return _SINGLE
    rank, world = dist.get_rank(), dist.get_world_size()
    backend = str(dist.get_backend())
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    return DistributedContext(
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        local_world_size=local_world,
        backend=backend,
        device=device,
        cpu_group=_CPU_GROUPS.get(id(dist.group.WORLD)),
    )


def resolve_context(distributed: bool | None) -> DistributedContext:
    """The context a training run uses: ``None`` = the process group if one is initialised,
    ``False`` = a single process whatever the environment, ``True`` = a process group is required."""
    if distributed is False:
        return _SINGLE
    ctx = get_context()
    if distributed is True and ctx.backend is None:
        raise ConfigurationError(
            "distributed=True but this process is not part of a process group; launch it with "
            "`torchrun --nproc-per-node N -m securetrain.cli.main train ...` (or `securetrain train --nproc N`), "
            "or call securetrain.distributed.init_process_group() first"
        )
    return ctx


def _pick_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigurationError(f"unknown distributed backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise ConfigurationError(
            "the nccl backend needs CUDA GPUs, and none is available here; use backend='gloo' on CPU"
        )
    return backend


def init_process_group(
    backend: str = "auto",
    *,
    rank: int | None = None,
    world_size: int | None = None,
    init_method: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> DistributedContext:
    """Join a process group and return this process's :class:`DistributedContext`.

    Without ``rank`` / ``world_size`` / ``init_method`` the group is the one ``torchrun``
    describes in the environment. With the ``nccl`` backend each process uses the GPU of
    its local rank. Calling it again in a process that already joined returns the context.
    """
    if not dist.is_available():
        raise ConfigurationError("this PyTorch build has no torch.distributed support")
    if dist.is_initialized():
        return get_context()
    explicit = (rank is not None, world_size is not None)
    if any(explicit) and not all(explicit):
        raise ConfigurationError(
            "give both rank= and world_size= (or neither, to read them from torchrun's environment)"
        )
    if rank is None and not launched_by_torchrun():
        missing = [k for k in TORCHRUN_ENV if k not in os.environ]
        raise ConfigurationError(
            f"no process group to join: {', '.join(missing)} not set. Launch the workers with "
            "`torchrun --nproc-per-node N ...` (or `securetrain train --nproc N`), or pass rank=, world_size= "
            "and init_method='tcp://HOST:PORT'"
        )
    if rank is not None and world_size is not None and not 0 <= int(rank) < int(world_size):
        raise ConfigurationError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    if not timeout_s > 0:
        raise ConfigurationError(f"timeout_s must be positive, got {timeout_s}")
    chosen = _pick_backend(backend)
    if chosen == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank or 0)))
    kwargs: dict[str, Any] = {
        "backend": chosen,
        "init_method": init_method or "env://",
        "timeout": timedelta(seconds=timeout_s),
    }
    if rank is not None:
        kwargs.update(rank=int(rank), world_size=int(world_size))  # type: ignore[arg-type]
    dist.init_process_group(**kwargs)
    if chosen == "nccl":
        # checkpoints and bookkeeping travel as CPU tensors: give them a gloo side group
        _CPU_GROUPS[id(dist.group.WORLD)] = dist.new_group(backend="gloo")
    ctx = get_context()
    log.info("joined process group: rank %d of %d (%s)", ctx.rank, ctx.world_size, ctx.backend)
    return ctx


def destroy_process_group() -> None:
    """Leave the process group, if any (safe to call when there is none)."""
    if dist.is_available() and dist.is_initialized():
        _CPU_GROUPS.pop(id(dist.group.WORLD), None)
        dist.destroy_process_group()


@contextmanager
def process_group(backend: str = "auto", **kwargs: Any) -> Iterator[DistributedContext]:
    """``with process_group() as ctx:`` joins the group and always leaves it."""
    ctx = init_process_group(backend, **kwargs)
    try:
        yield ctx
    finally:
        destroy_process_group()


def rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return get_context().rank


def world_size() -> int:
    """Number of processes in the job (1 without a process group)."""
    return get_context().world_size


def is_main_process() -> bool:
    """True on global rank 0 (and in a single process)."""
    return get_context().is_main


def barrier() -> None:
    """Wait for every rank (no-op for a single process)."""
    ctx = get_context()
    if ctx.active:
        dist.barrier(group=ctx.cpu_group)
