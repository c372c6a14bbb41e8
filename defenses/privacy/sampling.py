"""Poisson sampling of logical batches, split into physical batches that fit in memory.

Each logical batch takes every sample independently with probability ``sample_rate``
(the sampled Gaussian mechanism the accountants analyse), so its size varies and may be
zero. When ``physical_batch_size`` is set, a logical batch is cut into chunks of at most
that size; the optimizer is told (``skip_next``) which chunk ends the logical batch, so
clipped gradients are summed across chunks and noised once. The random source is a
dedicated ``torch.Generator`` whose state is saved with the run, so a resumed run draws
the same batches as an uninterrupted one.

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from defenses.privacy.sampling import PoissonBatches
    >>> ds = TensorDataset(torch.arange(100.0).unsqueeze(1), torch.zeros(100, dtype=torch.long))
    >>> batches = PoissonBatches(ds, sample_rate=0.1, steps_per_epoch=10, generator=torch.Generator().manual_seed(0))
    >>> len(batches), sum(int(x.shape[0]) for x, _ in batches) > 0
    (10, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset
from torch.utils.data._utils.collate import default_collate

from securetrain.distributed.sampling import (
    empty_batch_like,
    poisson_draw,
    shard_indices,
)
from securetrain.errors import PrivacyError


class PoissonBatches:
    """Iterable of Poisson-sampled (physical) batches over a map-style ``dataset``.

    ``on_batch(last)`` is called before each batch is yielded, ``last`` telling whether it
    closes its logical batch.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        *,
        sample_rate: float,
        steps_per_epoch: int,
        generator: torch.Generator,
        physical_batch_size: int | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        on_batch: Callable[[bool], None] | None = None,
    ) -> None:
        if not 0.0 < sample_rate <= 1.0:
            raise PrivacyError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.dataset = dataset
        self.n = len(dataset)  # type: ignore[arg-type]
        self.sample_rate = float(sample_rate)
        self.steps_per_epoch = int(steps_per_epoch)
        self.generator = generator
        self.physical_batch_size = physical_batch_size
        self.collate_fn = collate_fn or default_collate
        self.on_batch = on_batch
        self.batches_drawn = 0
        self.rows_yielded: list[int] = []
        """Rows of each batch yielded since the validity monitor last looked (:meth:`take_rows`)."""
        self.rank, self.world_size = 0, 1
        self._tensors = dataset.tensors if isinstance(dataset, TensorDataset) else None
        self._empty: Any = None

    def __len__(self) -> int:
        """Physical batches per epoch (expected, when logical batches are split)."""
        if not self.physical_batch_size:
            return self.steps_per_epoch
        expected = self.sample_rate * self.n
        return self.steps_per_epoch * max(1, math.ceil(expected / self.physical_batch_size))

    def shard(self, rank: int, world_size: int) -> None:
        """Yield only ``rank``'s share of every logical batch of a ``world_size``-process job.

        Every rank still draws the global logical batch (so the generators stay in step and
        the union over ranks is the single-process batch); ``shard(0, 1)`` undoes it.
        """
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise PrivacyError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.rank, self.world_size = int(rank), int(world_size)

    def take_rows(self) -> list[int]:
        """The row counts of the batches yielded since the last call (the validity check compares them)."""
        rows, self.rows_yielded = self.rows_yielded, []
        return rows

    def logical_indices(self) -> torch.Tensor:
        """Draw one logical batch (this rank's share of it in a sharded job): the indices of the samples it takes."""
        idx = poisson_draw(self.n, self.sample_rate, self.generator)
        if self.world_size > 1:
            idx = shard_indices(idx, self.rank, self.world_size)
        return idx

    def _fetch(self, idx: torch.Tensor) -> Any:
        if self._tensors is not None:
            return tuple(t[idx] for t in self._tensors)
        if idx.numel() == 0:
            if self._empty is None:
                self._empty = empty_batch_like(self.collate_fn([self.dataset[0]]), error=PrivacyError)
            return self._empty
        return self.collate_fn([self.dataset[i] for i in idx.tolist()])

    def __iter__(self) -> Iterator[Any]:
        for _ in range(self.steps_per_epoch):
            idx = self.logical_indices()
            if self.physical_batch_size and idx.numel() > self.physical_batch_size:
                chunks = list(torch.split(idx, self.physical_batch_size))
            else:
                chunks = [idx]
            for j, chunk in enumerate(chunks):
                if self.on_batch is not None:
                    self.on_batch(j == len(chunks) - 1)
                self.batches_drawn += 1
                self.rows_yielded.append(int(chunk.numel()))
                del self.rows_yielded[:-64]  # a loop that never steps must not grow it without bound
                yield self._fetch(chunk)


class CountingLoader:
    """A user's own loader, passed through unchanged, counting the batches it yields.

    Used when Poisson sampling is off (the guarantee is then marked invalid) so that the
    validity check can still tell whether training batches come from this loader. It
    forwards only ``len()`` and iteration; the user's loader itself is ``.loader``.
    """

    def __init__(self, loader: Iterable[Any]) -> None:
        self.loader = loader
        self.batches_drawn = 0

    def __len__(self) -> int:
        if not isinstance(self.loader, Sized):
            raise TypeError(f"the loader ({type(self.loader).__name__}) has no len()")
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            self.batches_drawn += 1
            yield batch
