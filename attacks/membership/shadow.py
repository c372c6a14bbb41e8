"""Shadow models: the same training recipe as the target, run on random halves of a data pool.

Each shadow model trains on a random half of the pool, balanced per example: with ``K``
shadow models every example is in exactly ``K // 2`` of them (``K`` even), or in ``K // 2``
or ``K // 2 + 1`` of them at random (``K`` odd), as in Carlini et al. (2022). The inclusion
matrix ``keep[k, i]`` records which shadow model saw which pool example; LiRA uses it to split
the shadow models into IN and OUT models per example.

Example:
    >>> import torch
    >>> from attacks.membership.shadow import train_shadow_models
    >>> def recipe(train_xy, seed):  # any callable: (x, y), seed -> trained model
    ...     torch.manual_seed(seed)
    ...     return torch.nn.Linear(3, 2)
    >>> pool = (torch.rand(10, 3), torch.randint(0, 2, (10,)))
    >>> shadows = train_shadow_models(recipe, pool, 4, seed=0)
    >>> shadows.keep.shape, shadows.keep.sum(axis=0).tolist() == [2] * 10
    ((4, 10), True)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from attacks.checks import check_num_models, check_xy, row_keys
from attacks.membership.signals import model_signal

log = logging.getLogger("attacks.membership")

Recipe = Callable[[tuple[torch.Tensor, torch.Tensor], int], nn.Module]
"""``recipe((x, y), seed) -> trained model``: trains a fresh model the way the target was trained."""


def inclusion_matrix(num_models: int, num_examples: int, seed: int) -> np.ndarray:
    """Boolean ``(num_models, num_examples)`` matrix: each example in about half the models.

    Example:
        >>> keep = inclusion_matrix(4, 6, seed=1)
        >>> keep.sum(axis=0).tolist()
        [2, 2, 2, 2, 2, 2]
    """
    k = check_num_models(num_models)
    rng = np.random.default_rng(seed)
    n_in = np.full(num_examples, k // 2)
    if k % 2:
        n_in += rng.integers(0, 2, size=num_examples)
    # A random ordering of the models for each example; the first n_in of them include it.
    rank = np.argsort(rng.random((k, num_examples)), axis=0).argsort(axis=0)
    return rank < n_in[None, :]


@dataclass
class ShadowSet:
    """Trained shadow models, their data pool, and which model trained on which pool example."""

    models: list[nn.Module]
    pool: tuple[torch.Tensor, torch.Tensor]
    keep: np.ndarray
    seeds: list[int]
    _index: dict[bytes, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self._index:
            self._index = {key: i for i, key in enumerate(row_keys(*self.pool))}

    def __len__(self) -> int:
        return len(self.models)

    def inclusion(self, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """``(K, n)`` boolean: did shadow model ``k`` train on example ``i`` of ``(x, y)``?

        Examples outside the pool were seen by no shadow model (all False).
        """
        idx = [self._index.get(key, -1) for key in row_keys(x, y)]
        out = np.zeros((len(self.models), len(idx)), dtype=bool)
        for j, i in enumerate(idx):
            if i >= 0:
                out[:, j] = self.keep[:, i]
        return out

    def signals(self, x: torch.Tensor, y: torch.Tensor, signal: str = "scaled_logit") -> np.ndarray:
        """``(K, n)`` array: ``signal`` of every shadow model on ``(x, y)``."""
        return np.stack([model_signal(m, x, y, signal) for m in self.models])


def train_shadow_models(
    recipe: Recipe,
    pool: tuple[torch.Tensor, torch.Tensor],
    num_models: int,
    *,
    seed: int = 0,
    progress: bool = False,
) -> ShadowSet:
    """Train ``num_models`` shadow models with ``recipe``, each on a random half of ``pool``.

    Shadow model ``k`` is trained with seed ``seed * 1000 + k + 1`` (initialisation, data
    order, DP noise), so a run is reproducible and no two shadow models share randomness.
    Raises :class:`securetrain.errors.AttackError` if ``num_models < 1`` or the pool is empty.
    """
    k = check_num_models(num_models)
    x, y = check_xy(pool, "the shadow-model pool")
    keep = inclusion_matrix(k, int(x.shape[0]), seed)
    models: list[nn.Module] = []
    seeds: list[int] = []
    for i in tqdm(range(k), desc="shadow models", disable=not progress, leave=False):
        idx = torch.from_numpy(np.flatnonzero(keep[i]))
        s = int(seed) * 1000 + i + 1
        log.info("training shadow model %d/%d on %d examples (seed %d)", i + 1, k, len(idx), s)
        model = recipe((x[idx], y[idx]), s)
        models.append(model.eval())
        seeds.append(s)
    return ShadowSet(models=models, pool=(x, y), keep=keep, seeds=seeds)


__all__ = ["Recipe", "ShadowSet", "inclusion_matrix", "train_shadow_models"]
