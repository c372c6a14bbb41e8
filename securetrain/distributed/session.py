"""Make a :class:`~securetrain.training.TrainingSession` distributed: shard its data, sync its steps.

:func:`distribute` is applied after the defenses' ``setup`` (the training loop does it
for you; a hand-written loop calls it after :func:`securetrain.training.protect`):

1. every defense is asked, through ``Defense.distribute(session, ctx)``, whether it takes
   over the sharding; the privacy defense does: its Poisson sampler keeps drawing the
   *global* logical batch, this rank trains on its share of it, noise is drawn on rank 0
   only, and it answers with a typed :class:`~securetrain.distributed.role.DistributedRole`.
   Without such a defense the loader must already be sharded (a
   :class:`~securetrain.distributed.sampling.ShardedBatchSampler` or torch's
   ``DistributedSampler``);
2. gradients are all-reduced before every optimizer step, buffers are averaged and the
   replicas are compared after every step
   (:class:`~securetrain.distributed.sync.GradientSync`);
3. rank 0's parameters (and the generators that draw the global batches) are copied to
   every rank.

Because the privacy defense was set up with the global loader (the whole data set and
the global batch size), its sample rate, step count, noise calibration and accountant
are those of the global schedule: a run on ``W`` processes spends the same epsilon as
a run on one process with the same global batch and steps.

For a single process :func:`distribute` changes nothing.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from securetrain.training import protect
    >>> from securetrain.distributed import distribute
    >>> loader = torch.utils.data.DataLoader(
    ...     torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))), batch_size=4)
    >>> model = nn.Linear(4, 2)
    >>> session = protect(model, torch.optim.SGD(model.parameters(), lr=0.1), loader)
    >>> handle = distribute(session)          # no process group: a no-op
    >>> handle.active, handle.describe()["world_size"]
    (False, 1)
    >>> handle.finish(); handle.detach()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from securetrain.distributed.context import DistributedContext, get_context
from securetrain.distributed.errors import DistributedError
from securetrain.distributed.role import DistributedRole
from securetrain.distributed.sampling import ShardedBatchSampler, is_sharded
from securetrain.distributed.sync import GradientSync, broadcast_generator, broadcast_module

if TYPE_CHECKING:
    from securetrain.training.session import TrainingSession

VERIFY_EVERY = 1
"""Default interval, in steps, of the replica check (one small all-reduce that overlaps the
next step; 0 turns it off). The training loop uses this default."""


class DistributedTraining:
    """Sharding and synchronisation attached to one session; :meth:`detach` undoes them.

    ``generators``: CPU generators that decide the loader's global batches (the training
    loop passes its own); rank 0's state is copied to every rank. A ``DataLoader``'s own
    generator and its ``RandomSampler``'s are added automatically.
    """

    def __init__(
        self,
        session: TrainingSession,
        ctx: DistributedContext | None = None,
        *,
        verify_every: int | None = None,
        generators: Sequence[torch.Generator | None] = (),
    ) -> None:
        self.session = session
        self.ctx = ctx if ctx is not None else get_context()
        self.verify_every = int(VERIFY_EVERY if verify_every is None else verify_every)
        self.generators = [g for g in generators if g is not None]
        self.role: DistributedRole | None = None
        self.sync: GradientSync | None = None
        self.described: dict[str, Any] = self.ctx.describe()

    @property
    def active(self) -> bool:
        """True when more than one process takes part."""
        return self.ctx.active

    @property
    def private(self) -> bool:
        """True when a defense combines gradients as DP-SGD's clipped sums."""
        return self.role is not None and self.role.gradient_sum

    def describe(self) -> dict[str, Any]:
        """What the report records about the job's layout and how steps were combined."""
        info = self.ctx.describe()
        if self.active:
            role = self.role
            info["sampling"] = (
                role.sampling if role is not None and role.sampling else "global batches split across ranks"
            )
            info["gradient_reduction"] = (
                role.reduction
                if role is not None and role.reduction
                else "mean over the global batch (shares weighted by size)"
            )
            info["replica_checks"] = self.sync.checks if self.sync is not None else 0
            info["replica_check_every"] = self.verify_every
            info["per_rank_counters"] = (
                "counters a defense keeps per process (e.g. adversarial examples generated, attack time) are rank 0's"
            )
        return info

    def attach(self) -> DistributedTraining:
        """Shard the data, hook the optimizer, copy rank 0's model (no-op for one process)."""
        if not self.active or self.sync is not None:
            return self
        s, ctx = self.session, self.ctx
        self.role = s.defenses.distribute(s, ctx)
        try:
            if self.role is not None and self.role.data_sharded:
                generators = list(self.role.generators)
            elif is_sharded(s.train_loader):
                generators = self.generators + _loader_generators(s.train_loader)
            else:
                raise DistributedError(
                    f"cannot tell how session.train_loader ({type(s.train_loader).__name__}) splits the data across the "
                    f"{ctx.world_size} processes; build it over the whole data set with "
                    "securetrain.distributed.ShardedBatchSampler (same seed on every rank) or torch's DistributedSampler, "
                    "or use differential privacy's Poisson sampling, which is sharded automatically"
                )
            seen: set[int] = set()
            for generator in generators:
                if generator.device.type == "cpu" and id(generator) not in seen:
                    seen.add(id(generator))
                    # the ranks must draw the same global batches, whatever seeded them
                    broadcast_generator(generator, ctx)
            step_optimizer = self.role.step_optimizer if self.role is not None else s.optimizer
            self.sync = GradientSync(
                step_optimizer,
                s.plain_model,
                ctx,
                gradient_sum=self.private,
                count=self._local_count,
                verify_every=self.verify_every,
            ).attach()
            broadcast_module(s.plain_model, ctx)
        except BaseException:
            self.detach()
            raise
        return self

    def _local_count(self) -> int:
        count = self.session.last_batch_size
        if count is None:
            raise DistributedError(
                "distributed training weights each rank's gradient by its number of samples; compute the loss "
                "with session.loss(x, y) before session.step()"
            )
        return count

    def finish(self) -> None:
        """Wait for the last replica check (raises if the replicas differ); call it when training ends."""
        if self.sync is not None:
            self.sync.finish()

    def detach(self) -> None:
        """Remove the hooks and give the defenses back their single-process sampling."""
        if self.sync is not None:
            self.sync.detach()
        if self.role is not None:
            self.role.undo()
        self.described = self.describe()
        self.sync = None
        self.role = None


def _loader_generators(loader: Any) -> list[torch.Generator]:
    """The CPU generators that decide a sharded ``DataLoader``'s global batches (its own, its sampler's)."""
    found: list[torch.Generator] = []
    if not isinstance(loader, DataLoader):
        return found
    if isinstance(loader.generator, torch.Generator):
        found.append(loader.generator)
    samplers: list[Any] = [loader.sampler]
    batch_sampler = loader.batch_sampler
    if isinstance(batch_sampler, ShardedBatchSampler) and isinstance(batch_sampler.batch_sampler, BatchSampler):
        samplers.append(batch_sampler.batch_sampler.sampler)
    elif isinstance(batch_sampler, BatchSampler):
        samplers.append(batch_sampler.sampler)
    for sampler in samplers:
        if isinstance(sampler, RandomSampler) and isinstance(sampler.generator, torch.Generator):
            found.append(sampler.generator)
    return found


def distribute(
    session: TrainingSession,
    ctx: DistributedContext | None = None,
    *,
    verify_every: int | None = None,
    generators: Sequence[torch.Generator | None] = (),
) -> DistributedTraining:
    """Attach sharding and gradient synchronisation to ``session`` (after the defenses' setup).

    ``verify_every``: compare the replicas' parameters every this many steps (0: never;
    default :data:`VERIFY_EVERY`, every step; the check costs one small all-reduce that
    overlaps the next step). ``generators``: the generators that draw the loader's global
    batches, if the loader is not a ``DataLoader`` holding them. Returns the handle; call
    ``finish()`` (waits for the last check) and ``detach()`` when done.
    """
    gens = list(generators) + ([session.generator] if session.generator is not None else [])
    return DistributedTraining(session, ctx, verify_every=verify_every, generators=gens).attach()
