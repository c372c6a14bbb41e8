"""Make a :class:`~securetrain.training.TrainingSession` distributed: shard its data, sync its steps.

:func:`distribute` is applied after the defenses' ``setup`` (the training loop does it
for you; a hand-written loop calls it after :func:`securetrain.training.protect`):

1. the training data is sharded: a Poisson loader (installed by the privacy defense) keeps
   drawing the *global* logical batch and this rank trains on its share of it (see
   :mod:`securetrain.distributed.sampling`); any other loader must already be sharded
   (a :class:`~securetrain.distributed.sampling.ShardedBatchSampler` or torch's
   ``DistributedSampler``);
2. gradients are all-reduced before every optimizer step, noise is drawn on rank 0 only,
   buffers are averaged and the replicas are compared after every step
   (:class:`~securetrain.distributed.sync.GradientSync`);
3. rank 0's parameters (and the Poisson sampler's random state) are copied to every rank.

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

from typing import Any

import torch

from securetrain.distributed.context import DistributedContext, get_context
from securetrain.distributed.errors import DistributedError
from securetrain.distributed.sampling import PoissonShard, find_poisson_loader, is_sharded
from securetrain.distributed.sync import GradientSync, broadcast_generator, broadcast_module, is_private_optimizer

DISTRIBUTED_KEY = "distributed"
"""``session.extras`` key holding :meth:`DistributedTraining.describe`."""

VERIFY_EVERY = 1
"""Default interval, in steps, of the replica check (one small all-reduce that overlaps the
next step; 0 turns it off). The training loop uses this default."""


class DistributedTraining:
    """Sharding and synchronisation attached to one session; :meth:`detach` undoes them."""

    def __init__(self, session: Any, ctx: DistributedContext | None = None, *, verify_every: int | None = None) -> None:
        self.session = session
        self.ctx = ctx if ctx is not None else get_context()
        self.verify_every = int(VERIFY_EVERY if verify_every is None else verify_every)
        self.shard: PoissonShard | None = None
        self.sync: GradientSync | None = None
        self.private = is_private_optimizer(session.optimizer)

    @property
    def active(self) -> bool:
        """True when more than one process takes part."""
        return self.ctx.active

    def describe(self) -> dict[str, Any]:
        """What the report records about the job's layout and how steps were combined."""
        info = self.ctx.describe()
        if self.active:
            info["sampling"] = (
                "global Poisson sample at the global sample rate, split across ranks" if self.shard is not None
                else "global batches split across ranks"
            )
            info["gradient_reduction"] = (
                "sum of per-rank clipped sums, Gaussian noise added once per step on rank 0" if self.private
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
        poisson = find_poisson_loader(s.train_loader)
        if poisson is not None:
            generator = getattr(poisson, "generator", None)
            if isinstance(generator, torch.Generator) and generator.device.type == "cpu":
                # the ranks must draw the same global batches, whatever seeded them
                broadcast_generator(generator, ctx)
            self.shard = PoissonShard(poisson, ctx.rank, ctx.world_size).install()
        elif is_sharded(s.train_loader):
            for generator in _loader_generators(s.train_loader):
                broadcast_generator(generator, ctx)
        else:
            raise DistributedError(
                f"cannot tell how session.train_loader ({type(s.train_loader).__name__}) splits the data across the "
                f"{ctx.world_size} processes; build it over the whole data set with "
                "securetrain.distributed.ShardedBatchSampler (same seed on every rank) or torch's DistributedSampler, "
                "or use differential privacy's Poisson sampling, which is sharded automatically"
            )
        try:
            self.sync = GradientSync(
                s.optimizer, s.plain_model, ctx, count=self._local_count, verify_every=self.verify_every
            ).attach()
            broadcast_module(s.plain_model, ctx)
        except BaseException:
            self.detach()
            raise
        s.extras[DISTRIBUTED_KEY] = self.describe()
        return self

    def _local_count(self) -> int:
        losses = self.session.extras.get("last_losses")
        if losses is None:
            raise DistributedError(
                "distributed training weights each rank's gradient by its number of samples; compute the loss "
                "with session.loss(x, y) before session.step()"
            )
        return int(losses.shape[0])

    def finish(self) -> None:
        """Wait for the last replica check (raises if the replicas differ); call it when training ends."""
        if self.sync is not None:
            self.sync.finish()

    def detach(self) -> None:
        """Remove the hooks and give the loader back its own sampling."""
        if self.sync is not None:
            self.sync.detach()
            self.session.extras[DISTRIBUTED_KEY] = self.describe()
            self.sync = None
        if self.shard is not None:
            self.shard.remove()
            self.shard = None


def _loader_generators(loader: Any) -> list[torch.Generator]:
    """The CPU generators that decide a sharded loader's global batches (loader, sampler), once each."""
    found: dict[int, torch.Generator] = {}
    for _ in range(8):
        if loader is None:
            break
        batch_sampler = getattr(loader, "batch_sampler", None)
        inner = getattr(batch_sampler, "batch_sampler", None)
        candidates = [getattr(loader, "generator", None), getattr(batch_sampler, "generator", None),
                      getattr(getattr(inner, "sampler", None), "generator", None)]
        for g in candidates:
            if isinstance(g, torch.Generator) and g.device.type == "cpu":
                found.setdefault(id(g), g)
        loader = getattr(loader, "loader", None)
    return list(found.values())


def distribute(session: Any, ctx: DistributedContext | None = None, *, verify_every: int | None = None) -> DistributedTraining:
    """Attach sharding and gradient synchronisation to ``session`` (after the defenses' setup).

    ``verify_every``: compare the replicas' parameters every this many steps (0: never;
    default :data:`VERIFY_EVERY`, every step; the check costs one small all-reduce that
    overlaps the next step). Returns the handle; call ``finish()`` (waits for the last
    check) and ``detach()`` when done.
    """
    return DistributedTraining(session, ctx, verify_every=verify_every).attach()
