"""Dirac canary rows inside a batch's per-sample gradients (the privacy side of the canary seam).

:class:`WithDiracRows` wraps an engine's :class:`~defenses.privacy.engines.base.PerSampleGrads`
and replaces the gradient of the rows named by a :class:`securetrain.training.DiracRows` by a
Dirac canary (``norm`` at one parameter coordinate, zero elsewhere). The DP optimizer clips,
sums and noises the wrapped gradients exactly as it does the engine's own, so a planted canary
audits the real clipping, noise and reduction (see :mod:`securetrain.training.canaries`).

Example (two samples of a linear model; row 1 becomes a canary of norm 5 at weight[0, 2]):
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines import make_engine
    >>> from securetrain.training import DiracRows
    >>> engine = make_engine("bk")
    >>> model = engine.attach(nn.Linear(3, 2, bias=False))
    >>> model(torch.ones(2, 3)).sum().div(2).backward()
    >>> rows = DiracRows(rows=torch.tensor([1]), param_index=torch.tensor([0]), coord=torch.tensor([2]), norm=5.0)
    >>> grads = WithDiracRows(engine.collect(), rows, engine.params())
    >>> grads.sq_norms().tolist()
    [6.0, 25.0]
    >>> out = {p: torch.zeros_like(p) for p in engine.params()}
    >>> grads.add_weighted(torch.tensor([1.0, 0.2]), out)
    >>> out[engine.params()[0]].tolist()
    [[1.0, 1.0, 2.0], [1.0, 1.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from defenses.privacy.engines.base import PerSampleGrads
from securetrain.errors import PrivacyError
from securetrain.training.canaries import DiracRows


class WithDiracRows(PerSampleGrads):
    """``grads`` with the rows of ``canary`` replaced by Dirac canary gradients over ``params``."""

    def __init__(self, grads: PerSampleGrads, canary: DiracRows, params: Sequence[nn.Parameter]) -> None:
        if grads.groups != 1:
            raise PrivacyError(
                f"gradient canaries need one backward pass per step; this step had {grads.groups} groups of "
                "forward passes (e.g. TRADES or gradient accumulation)"
            )
        rows = canary.rows.to(torch.long)
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= grads.batch_size):
            raise PrivacyError(f"canary rows {rows.tolist()} are outside the batch of {grads.batch_size}")
        self._grads = grads
        self._rows = rows
        self._params = list(params)
        self._param_index = [int(i) for i in canary.param_index.tolist()]
        self._coord = [int(c) for c in canary.coord.tolist()]
        self._norm = float(canary.norm)
        self.batch_size = grads.batch_size
        self.groups = grads.groups

    def sq_norms(self) -> torch.Tensor:
        norms = self._grads.sq_norms().clone()
        norms[self._rows.to(norms.device)] = self._norm**2
        return norms

    def _data_weights(self, weights: torch.Tensor) -> torch.Tensor:
        data = weights.clone()
        data[self._rows.to(data.device)] = 0
        return data

    def add_weighted(self, weights: torch.Tensor, out: dict[nn.Parameter, torch.Tensor]) -> None:
        self._grads.add_weighted(self._data_weights(weights), out)
        for row, pi, coord in zip(self._rows.tolist(), self._param_index, self._coord):
            target = out[self._params[pi]].view(-1)
            target[coord] += weights[row].to(target.dtype) * self._norm

    def implied_grads(self) -> dict[nn.Parameter, torch.Tensor | None]:
        return self._grads.implied_grads()

    def materialize(self) -> dict[nn.Parameter, torch.Tensor]:
        grads = {p: g.clone() for p, g in self._grads.materialize().items()}
        for g in grads.values():
            g[self._rows.to(g.device)] = 0
        for row, pi, coord in zip(self._rows.tolist(), self._param_index, self._coord):
            grads[self._params[pi]][row].view(-1)[coord] = self._norm
        return grads


__all__ = ["WithDiracRows"]
