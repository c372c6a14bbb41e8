"""What a defense takes over when a session becomes distributed: the typed answer of ``Defense.distribute``.

When a session runs on several processes, :class:`~securetrain.distributed.DistributedTraining`
asks each defense, through ``Defense.distribute(ctx)``, whether it shards the data or changes
how gradients are combined. A defense that does (differential privacy shards its own Poisson
sampler and draws the noise on one rank only) returns a :class:`DistributedRole`; the others
return ``None`` and the loop's own sharding applies.

Example:
    >>> import torch
    >>> from securetrain.distributed.role import DistributedRole
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    >>> role = DistributedRole(owner="privacy", step_optimizer=opt, data_sharded=True, gradient_sum=True)
    >>> role.gradient_sum
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class DistributedRole:
    """A defense's part in a distributed session.

    Attributes:
        owner: the defense's name (for messages).
        step_optimizer: the plain ``torch.optim.Optimizer`` whose ``step`` applies the update;
            gradients are all-reduced in its step pre-hook.
        data_sharded: the defense already made the training loader yield only this rank's
            share of each global batch.
        gradient_sum: gradients are per-rank sums already divided by the *global* batch size
            (as DP-SGD's clipped sums are), so the all-reduce sums them; otherwise each
            rank's mean gradient is weighted by its share's size.
        generators: CPU generators that decide the global batches; rank 0's state is copied to
            every rank before training.
        sampling: one sentence for the report on how the data is split.
        reduction: one sentence for the report on how gradients are combined.
        undo: called when the session leaves distributed mode (removes the sharding).
    """

    owner: str
    step_optimizer: torch.optim.Optimizer
    data_sharded: bool = False
    gradient_sum: bool = False
    generators: tuple[torch.Generator, ...] = ()
    sampling: str = ""
    reduction: str = ""
    undo: Callable[[], None] = field(default=_nothing)


__all__ = ["DistributedRole"]
