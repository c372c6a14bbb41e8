"""The Square attack (Andriushchenko et al. 2020), Linf, written in torch: a query-based
black-box attack that reads the model's scores, never its gradients.

It starts from vertical stripes of ``+-epsilon`` and then, ``queries`` times, redraws the
perturbation inside one random square window (a random ``+-epsilon`` per channel) and keeps the
change for every sample whose margin ``z_y - max_{j != y} z_j`` went down; a sample stops being
queried once it is misclassified. The window covers a share ``p`` of the input that shrinks on
the paper's schedule (``p_init`` halved at 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of
every 10000 queries). Inputs of any shape are seen as ``(channels, height, width)`` images; a
flat feature vector is one row, and its windows are runs of neighbouring features.

Because it needs no gradient, it keeps working where gradients are masked: the audit's masking
checks compare it with the gradient attacks.

Example:
    >>> import torch
    >>> from attacks.evasion.square import Square
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(4, 3)
    >>> x, y = torch.rand(16, 4), torch.randint(0, 3, (16,))
    >>> r = Square(queries=100)(model, x, y, [0.05, 0.5], seed=0)
    >>> r.robust_accuracy[1] <= r.robust_accuracy[0]
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from attacks.evasion.base import Attack, AttackContext, Try, retry_unfooled
from attacks.evasion.losses import margin
from attacks.evasion.registry import register_attack
from securetrain.errors import AttackError
from securetrain.validation import check_count

# (share of the 10000-query schedule after which p is halved again)
_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def window_share(p_init: float, query: int, queries: int) -> float:
    """The share of the input one window covers at query ``query`` of ``queries``.

    Example:
        >>> [window_share(0.8, q, 10000) for q in (0, 11, 51, 9000)]
        [0.8, 0.4, 0.2, 0.0015625]
    """
    it = int(query / queries * 10000)
    halvings = sum(1 for s in _SCHEDULE if it > s)
    return float(p_init) / float(2**halvings)


def as_image_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """A sample shape seen as ``(channels, height, width)``.

    Example:
        >>> as_image_shape((1, 8, 8)), as_image_shape((30,)), as_image_shape((8, 8))
        ((1, 8, 8), (1, 1, 30), (1, 8, 8))
    """
    dims = tuple(int(s) for s in shape)
    if len(dims) == 1:
        return (1, 1, dims[0])
    if len(dims) == 2:
        return (1, dims[0], dims[1])
    return (math.prod(dims[:-2]), dims[-2], dims[-1])


@register_attack
@dataclass(frozen=True, repr=False)
class Square(Attack):
    """Square attack, Linf: ``queries`` score queries per sample (fewer once it is fooled),
    ``restarts`` fresh starts for samples still not fooled, first window share ``p_init``."""

    queries: int = 5000
    restarts: int = 1
    p_init: float = 0.8

    name = "square"
    norm = "linf"
    kind = "score"
    stochastic = True

    def __post_init__(self) -> None:
        check_count("queries", self.queries, error=AttackError, where=self.name)
        check_count("restarts", self.restarts, error=AttackError, where=self.name)
        if not 0.0 < float(self.p_init) <= 1.0:
            raise AttackError(f"{self.name}: p_init must lie in (0, 1], got {self.p_init}")

    def run(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        epsilons: Sequence[float],
        ctx: AttackContext,
    ) -> list[torch.Tensor]:
        def search(eps: float) -> Try:
            return lambda idx: self._search(model, inputs[idx], labels[idx], eps, ctx)

        return retry_unfooled(inputs, epsilons, lambda eps: [search(eps)] * self.restarts)

    def _search(
        self, net: nn.Module, x0: torch.Tensor, y: torch.Tensor, eps: float, ctx: AttackContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = ctx.bounds
        n = x0.shape[0]
        c, h, w = as_image_shape(x0.shape[1:])
        img0 = x0.reshape(n, c, h, w)
        # vertical stripes: one random sign per channel and column
        stripes = torch.randint(0, 2, (n, c, 1, w), device=x0.device).to(x0.dtype).mul_(2).sub_(1)
        x = (img0 + eps * stripes).clamp(lo, hi)
        with torch.no_grad():
            loss = margin(net(x.reshape(x0.shape)), y).neg()  # z_y - max other: positive while correct
        for q in range(self.queries):
            active = (loss >= 0).nonzero().flatten()
            if active.numel() == 0:
                break
            p = window_share(self.p_init, q, self.queries)
            if h == 1 or w == 1:
                sh = 1 if h == 1 else max(1, min(h, round(p * h)))
                sw = 1 if w == 1 else max(1, min(w, round(p * w)))
            else:
                side = max(1, min(h, w, round(math.sqrt(p * h * w))))
                sh = sw = side
            top = int(torch.randint(0, h - sh + 1, (1,)))
            left = int(torch.randint(0, w - sw + 1, (1,)))
            base = img0[active]
            cand = x[active]  # advanced indexing already copies
            signs = torch.randint(0, 2, (active.numel(), c, 1, 1), device=x0.device).to(x0.dtype).mul_(2).sub_(1)
            patch = base[:, :, top : top + sh, left : left + sw] + eps * signs
            cand[:, :, top : top + sh, left : left + sw] = patch.clamp(lo, hi)
            with torch.no_grad():
                new = margin(net(cand.reshape(-1, *x0.shape[1:])), y[active]).neg()
            better = new < loss[active]
            if better.any():
                keep = active[better]
                x[keep] = cand[better]
                loss[keep] = new[better]
        return x.reshape(x0.shape), loss < 0
