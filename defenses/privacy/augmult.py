"""Augmentation multiplicity (De et al. 2022): K augmented views per sample, averaged before clipping.

Each sample of a (physical) batch is repeated ``K`` times, each copy augmented on its own
(:mod:`defenses.privacy.augment`), and the model runs on the ``B * K`` rows; the loss of a
sample is the mean of its views' losses (:class:`AugmentedViews`). The per-sample gradient
engine computes one gradient per row; :class:`AveragedViews` averages them in groups of
``K`` consecutive rows, so the gradient of sample ``i`` is the mean of its ``K`` view
gradients -- *then* it is clipped to ``C``, summed, noised. Every view is computed from
sample ``i`` alone and the clip bounds their average, so each sample still changes the
clipped sum by at most ``C``: the privacy unit stays the sample, and the sample rate, noise
and epsilon are those of the same run without augmentation multiplicity.

The averaging reads every row's gradient (:meth:`PerSampleGrads.materialize`), so a step
costs about ``K`` times the forward and backward work of a plain private step, and memory
for ``B * K`` per-sample gradients of the physical batch. Among the engines, those that form
every per-sample gradient anyway are then the fastest: ``auto`` tries :data:`VIEWS_ORDER`
(ExpandedWeights first: on the digits CNN, batch 256, K=4, a step took 143 ms with ``ew``,
183 ms with ``hooks``, 240 ms with ``bk``, 327 ms with ``vmap``; ``bk`` at K=1: 38 ms).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.augmult import AugmentedViews, AveragedViews
    >>> from defenses.privacy.engines import make_engine
    >>> engine = make_engine("vmap")
    >>> model = engine.attach(nn.Linear(3, 2))
    >>> views = AugmentedViews(4, "identity", torch.Generator().manual_seed(0))
    >>> x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    >>> losses = views.loss(lambda m, a, b: nn.functional.cross_entropy(m(a), b, reduction="none"), model, x, y)
    >>> losses.mean().backward()
    >>> psg = AveragedViews(engine.collect(), 4)
    >>> psg.batch_size, psg.sq_norms().shape
    (5, torch.Size([5]))
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from defenses.privacy.augment import Augmentation, make_augmentation
from defenses.privacy.engines.base import PerSampleGrads
from securetrain.errors import PrivacyError

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

VIEWS_ORDER: tuple[str, ...] = ("ew", "bk", "hooks", "vmap")
"""The engines ``grad_sample_mode="auto"`` tries with ``augmult`` > 1, fastest first (measured, see above)."""


class AugmentedViews:
    """Expands a batch into ``views`` augmented copies of each sample and averages their losses.

    ``augmentation``: a registered name or an :class:`~defenses.privacy.augment.Augmentation`;
    ``generator``: where the augmentations draw their randomness (the privacy defense keeps
    it in its checkpoints).
    """

    def __init__(self, views: int, augmentation: str | Augmentation, generator: torch.Generator) -> None:
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise PrivacyError(f"augmult must be an integer >= 1, got {views!r}")
        self.views = views
        self.augmentation = make_augmentation(augmentation) if isinstance(augmentation, str) else augmentation
        self.generator = generator

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """The ``len(x) * views`` augmented rows: the views of sample ``i`` are rows ``i*K .. i*K+K-1``."""
        if not isinstance(x, torch.Tensor):
            raise PrivacyError(
                f"augmult augments tensor inputs, got {type(x).__name__}; leave augmult out for keyword inputs"
            )
        rows = x.repeat_interleave(self.views, dim=0) if self.views > 1 else x
        out = self.augmentation(rows, self.generator)
        if out.shape != rows.shape:
            raise PrivacyError(
                f"the augmentation {type(self.augmentation).__name__} changed the shape of the rows from "
                f"{tuple(rows.shape)} to {tuple(out.shape)}; an augmentation must keep each sample's shape"
            )
        if out.stride() != _standard_strides(out.shape):  # e.g. a permuted result; ExpandedWeights needs them
            out = out.clone(memory_format=torch.contiguous_format)
        return out

    def loss(self, loss_fn: LossFn, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample losses, shape ``(len(x),)``: each the mean of ``loss_fn`` over the sample's views."""
        k = self.views
        labels = y.repeat_interleave(k, dim=0) if k > 1 else y
        losses = loss_fn(model, self.expand(x), labels)
        if k == 1:
            return losses
        if losses.dim() != 1 or losses.shape[0] != x.shape[0] * k:
            raise PrivacyError(
                f"with augmult={k} the per-sample loss must give one loss per view, shape ({x.shape[0] * k},), "
                f"got {tuple(losses.shape)}; use reduction='none'"
            )
        return losses.view(x.shape[0], k).mean(1)


def _standard_strides(shape: torch.Size) -> tuple[int, ...]:
    """The strides of a freshly allocated (row-major) tensor of ``shape``."""
    strides: list[int] = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(int(size), 1)
    return tuple(reversed(strides))


class AveragedViews(PerSampleGrads):
    """The per-sample gradients of ``psg`` averaged over groups of ``views`` consecutive rows.

    ``psg`` holds one gradient per row of ``B * views`` rows (per group of backward passes);
    this holds ``B`` gradients, each the mean of one sample's view gradients.
    """

    def __init__(self, psg: PerSampleGrads, views: int) -> None:
        if psg.batch_size % views:
            raise PrivacyError(
                f"{psg.batch_size} per-sample gradients cannot be {views} views of each sample: with augmult the "
                "model must see the rows of the defended loss (session.loss), K views per sample"
            )
        self._psg = psg
        self.views = views
        self.batch_size = psg.batch_size // views
        self.groups = psg.groups
        self._means: dict[nn.Parameter, torch.Tensor] | None = None

    def _averaged(self) -> dict[nn.Parameter, torch.Tensor]:
        if self._means is None:
            b, k = self.batch_size, self.views
            self._means = {
                p: g.reshape(b, k, -1).mean(1).reshape(b, *g.shape[1:]) for p, g in self._psg.materialize().items()
            }
        return self._means

    def sq_norms(self) -> torch.Tensor:
        total: torch.Tensor | None = None
        for g in self._averaged().values():
            n = g.reshape(g.shape[0], -1).pow(2).sum(1)
            total = n if total is None else total + n
        if total is None:
            return torch.zeros(self.batch_size)
        return total

    def add_weighted(self, weights: torch.Tensor, out: dict[nn.Parameter, torch.Tensor]) -> None:
        for p, g in self._averaged().items():
            out[p].view(-1).addmv_(g.reshape(g.shape[0], -1).t().to(out[p].dtype), weights.to(out[p].dtype))

    def implied_grads(self) -> dict[nn.Parameter, torch.Tensor | None]:
        # the batch gradient of the mean over samples of view means is the mean over all rows: unchanged
        return self._psg.implied_grads()

    def materialize(self) -> dict[nn.Parameter, torch.Tensor]:
        return dict(self._averaged())


__all__ = ["VIEWS_ORDER", "AugmentedViews", "AveragedViews"]
