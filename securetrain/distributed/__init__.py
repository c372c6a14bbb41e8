"""Scale out: private and adversarial training across processes with ``torch.distributed``.

Launch with ``securetrain train --nproc N ...`` or with ``torchrun`` directly:

    torchrun --nproc-per-node 2 -m securetrain.cli.main train --data digits --dp --epsilon 3

Each process trains on its share of every global batch (``gloo`` on CPU, ``nccl`` on
GPU); gradients are all-reduced before every step, differential-privacy noise is added
once per global step (on rank 0), and the privacy accountant follows the global
schedule, so the epsilon is the one a single process with the same global batch and
steps would report. Only rank 0 writes files, atomically; a run resumes on any number
of processes. See ``docs/distributed.md``.

Public API:

* context: :func:`init_process_group`, :func:`destroy_process_group`, :func:`process_group`,
  :func:`get_context`, :class:`DistributedContext`, :func:`rank`, :func:`world_size`,
  :func:`is_main_process`, :func:`barrier`, :func:`launched_by_torchrun`
* data: :class:`ShardedBatchSampler`, :class:`ShardedPoissonSampler`, :func:`shard_indices`,
  :func:`collate_or_empty`
* training: :func:`distribute` (for a hand-written loop after ``protect``),
  :class:`GradientSync`, :func:`broadcast_module`, :func:`replicas_identical`
* files: :func:`on_main`, :func:`load_state_everywhere`
* launching: :func:`launch`, :class:`DistributedError`, :class:`WorkerFailedError`

Example:
    >>> from securetrain.distributed import get_context, shard_indices
    >>> get_context().world_size
    1
    >>> shard_indices([0, 1, 2, 3, 4], 0, 2)
    [0, 2, 4]
"""

from __future__ import annotations

from securetrain.distributed.context import (
    DistributedContext,
    barrier,
    destroy_process_group,
    get_context,
    init_process_group,
    is_main_process,
    launched_by_torchrun,
    process_group,
    rank,
    resolve_context,
    world_size,
)
from securetrain.distributed.errors import DistributedError, WorkerFailedError
from securetrain.distributed.io import load_state_everywhere, on_main, read_bytes_everywhere
from securetrain.distributed.launch import launch
from securetrain.distributed.role import DistributedRole
from securetrain.distributed.sampling import (
    ShardedBatchSampler,
    ShardedPoissonSampler,
    collate_or_empty,
    empty_batch_like,
    poisson_draw,
    shard_indices,
)
from securetrain.distributed.session import DistributedTraining, distribute
from securetrain.distributed.sync import GradientSync, all_reduce_sum, broadcast_module, replicas_identical

__all__ = [
    "DistributedContext",
    "DistributedError",
    "DistributedRole",
    "DistributedTraining",
    "GradientSync",
    "ShardedBatchSampler",
    "ShardedPoissonSampler",
    "WorkerFailedError",
    "all_reduce_sum",
    "barrier",
    "broadcast_module",
    "collate_or_empty",
    "destroy_process_group",
    "distribute",
    "empty_batch_like",
    "get_context",
    "poisson_draw",
    "init_process_group",
    "is_main_process",
    "launch",
    "launched_by_torchrun",
    "load_state_everywhere",
    "on_main",
    "process_group",
    "rank",
    "read_bytes_everywhere",
    "replicas_identical",
    "resolve_context",
    "shard_indices",
    "world_size",
]
