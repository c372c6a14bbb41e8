"""Each rank's shard of every batch, drawn so that the ranks together take the global batch.

The rule everywhere: every rank draws the *global* batch with the same random generator
(same seed, same state), then keeps the positions ``rank, rank + W, rank + 2W, ...`` of
it. The union over ranks is then exactly the batch one process would draw, whatever the
number of processes ``W``:

* for Poisson sampling (differential privacy) the union is a Poisson sample of the whole
  data set at the global sample rate ``q``, which is what the accountant analyses, and
  a rank whose share happens to be empty still takes part in the step (unlike Opacus's
  ``DistributedUniformWithReplacementSampler``, which skips empty local batches and so
  lets the ranks fall out of step);
* for shuffled fixed-size batches the union is the single-process batch;
* the generator's state is the same on every rank, so rank 0's checkpoint resumes the
  same sequence of global batches on any number of processes.

Drawing the global batch costs every rank one uniform number per sample and step, which
is small next to a forward pass.

Example:
    >>> import torch
    >>> from securetrain.distributed.sampling import ShardedPoissonSampler
    >>> shards = [list(ShardedPoissonSampler(100, 0.1, steps=3, rank=r, world_size=2,
    ...                                      generator=torch.Generator().manual_seed(0)))
    ...           for r in (0, 1)]
    >>> whole = list(ShardedPoissonSampler(100, 0.1, steps=3, generator=torch.Generator().manual_seed(0)))
    >>> all(sorted(a + b) == w for a, b, w in zip(*shards, whole))
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import Sampler, TensorDataset
from torch.utils.data._utils.collate import default_collate

from securetrain.errors import ConfigurationError, SecureTrainError

_default_collate: Callable[[list[Any]], Any] = default_collate  # torch leaves it unannotated


def _check_rank(rank: int, world_size: int) -> None:
    if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
        raise ConfigurationError(
            f"rank must be in [0, world_size) with world_size >= 1, got rank={rank}, world_size={world_size}"
        )


def shard_indices(indices: Any, rank: int, world_size: int) -> Any:
    """This rank's share of a global batch of indices: positions ``rank::world_size``.

    Shares differ in size by at most one, and may be empty when the batch has fewer
    elements than there are ranks.

    Example:
        >>> shard_indices([10, 11, 12, 13, 14], 1, 2)
        [11, 13]
    """
    _check_rank(rank, world_size)
    return indices[rank::world_size]


class ShardedBatchSampler(Sampler[list[int]]):
    """This rank's share of every batch of a global batch sampler.

    ``batch_sampler`` must draw the same batches on every rank (a ``BatchSampler`` over a
    ``RandomSampler`` whose generator has the same seed everywhere). ``batch_size`` is the
    *global* batch size, so code that reads ``loader.batch_sampler.batch_size`` (the
    privacy defense does) sees the logical batch of the whole job.

    Example:
        >>> import torch
        >>> from torch.utils.data import BatchSampler, RandomSampler
        >>> def sampler(rank):
        ...     g = torch.Generator().manual_seed(0)
        ...     return ShardedBatchSampler(BatchSampler(RandomSampler(range(10), generator=g), 4, False), rank, 2)
        >>> [sorted(a + b) for a, b in zip(sampler(0), sampler(1))] == [
        ...     sorted(b) for b in BatchSampler(RandomSampler(range(10), generator=torch.Generator().manual_seed(0)), 4, False)]
        True
        >>> len(sampler(0)), sampler(0).batch_size
        (3, 4)
    """

    def __init__(self, batch_sampler: Iterable[list[int]], rank: int, world_size: int) -> None:
        _check_rank(rank, world_size)
        self.batch_sampler = batch_sampler
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.batch_size = getattr(batch_sampler, "batch_size", None)
        self.last_global_size = 0

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batch_sampler:
            batch = list(batch)
            self.last_global_size = len(batch)
            yield batch[self.rank :: self.world_size]

    def __len__(self) -> int:
        if not isinstance(self.batch_sampler, Sized):
            raise TypeError("the wrapped batch sampler has no length")
        return len(self.batch_sampler)


class ShardedPoissonSampler:
    """Poisson sampling of a data set of ``n`` samples, sharded over ranks.

    Each of ``steps`` logical batches takes every sample independently with probability
    ``sample_rate`` (the draw is the same on every rank: pass generators with the same
    seed); this rank yields its share of it as a list of indices, possibly empty. Use it
    as the ``batch_sampler`` of a ``DataLoader`` whose ``collate_fn`` accepts an empty
    list (:func:`collate_or_empty`).
    """

    def __init__(
        self,
        n: int,
        sample_rate: float,
        *,
        steps: int,
        rank: int = 0,
        world_size: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_rank(rank, world_size)
        if int(n) < 1:
            raise ConfigurationError(f"n must be at least 1, got {n}")
        if not 0.0 < float(sample_rate) <= 1.0:
            raise ConfigurationError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if int(steps) < 1:
            raise ConfigurationError(f"steps must be at least 1, got {steps}")
        self.n, self.sample_rate, self.steps = int(n), float(sample_rate), int(steps)
        self.rank, self.world_size = int(rank), int(world_size)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def global_indices(self) -> torch.Tensor:
        """Draw one logical batch of the whole job (advances the shared generator)."""
        return poisson_draw(self.n, self.sample_rate, self.generator)

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            yield shard_indices(self.global_indices(), self.rank, self.world_size).tolist()

    def __len__(self) -> int:
        return self.steps


def poisson_draw(n: int, sample_rate: float, generator: torch.Generator) -> torch.Tensor:
    """Indices of one Poisson sample of ``range(n)``: each index independently with probability ``sample_rate``.

    The one Poisson draw of the library (the privacy defense's sampler and the sharded
    sampler both use it), so single-process and distributed runs draw identical batches
    from identical generator states.

    Example:
        >>> import torch
        >>> poisson_draw(10, 1.0, torch.Generator().manual_seed(0)).tolist()
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """
    mask = torch.rand(n, generator=generator) < sample_rate
    return mask.nonzero().flatten()


def collate_or_empty(dataset: Any) -> Callable[[list[Any]], Any]:
    """A ``collate_fn`` that also turns an empty share into empty tensors shaped like ``dataset[0]``.

    Example:
        >>> import torch
        >>> ds = torch.utils.data.TensorDataset(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
        >>> [t.shape for t in collate_or_empty(ds)([])]
        [torch.Size([0, 3]), torch.Size([0])]
    """

    def collate(batch: list[Any]) -> Any:
        if batch:
            return _default_collate(batch)
        if isinstance(dataset, TensorDataset):
            return tuple(t[:0] for t in dataset.tensors)
        return empty_batch_like(_default_collate([dataset[0]]))

    return collate


def empty_batch_like(batch: Any, *, error: type[SecureTrainError] = ConfigurationError) -> Any:
    """A batch of the same structure as ``batch`` with zero rows (tensors, tuples, lists, dicts).

    The one empty-batch helper of the library (an empty Poisson batch, an empty share of a
    distributed batch). Anything else raises ``error``.

    Example:
        >>> import torch
        >>> empty_batch_like((torch.ones(3, 2), torch.ones(3)))[0].shape
        torch.Size([0, 2])
    """
    if isinstance(batch, torch.Tensor):
        return batch[:0]
    if isinstance(batch, dict):
        return {k: empty_batch_like(v, error=error) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(empty_batch_like(v, error=error) for v in batch)
    raise error(
        f"cannot form an empty batch of a {type(batch).__name__}; Poisson sampling and distributed shards need "
        "batches made of tensors (a tuple, list or dict of tensors)"
    )


def is_sharded(loader: Any) -> bool:
    """True when ``loader`` already yields only this rank's share.

    Recognised: a ``DataLoader`` whose batch sampler is a :class:`ShardedBatchSampler` or
    :class:`ShardedPoissonSampler`, or whose sampler is torch's ``DistributedSampler``.
    """
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    if not isinstance(loader, DataLoader):
        return False
    return isinstance(loader.batch_sampler, (ShardedBatchSampler, ShardedPoissonSampler)) or isinstance(
        loader.sampler, DistributedSampler
    )
