"""Dirac gradient canaries planted in a private training run, and the white-box canary statistic.

:class:`DiracCanaryPlanter` is both a :class:`securetrain.training.Defense` (it only watches:
it marks which rows of each batch are canary samples and reads the model after every step) and
the :class:`securetrain.training.GradientCanaries` that the private optimizer asks for canary
rows. Each of the ``m`` canaries owns

* a placeholder input (a distinct random point inside the data's bounds) that is added to the
  training set when the canary is included, so the run's own Poisson sampler (and, on several
  processes, its sharding) decides in which steps the canary takes part, and
* one parameter coordinate, distinct for every canary and drawn at random (from the weights,
  not the biases, when there are enough): whenever the
  canary's placeholder is in a batch, its per-sample gradient is replaced by ``norm_scale * C``
  at that coordinate (a Dirac canary), before clipping.

After every released step (a step of the optimizer; a physical batch that only accumulated is
not one) the planter records the privatized gradient the optimizer stepped with (clipped sum plus
noise, averaged, after any distributed reduction) at every canary coordinate, and which canaries
were in that step's batch. This is the white-box, all-iterates threat model DP-SGD's accounting
is stated in: every noisy gradient is released. :mod:`attacks.audit.dp_audit` turns these
observations into scores and bounds.

Example:
    >>> import torch
    >>> planter = DiracCanaryPlanter(torch.rand(4, 3), seed=0)
    >>> grads, sampled = planter.observations()   # (m, steps): nothing released yet
    >>> planter.m, grads.shape, sampled.dtype
    (4, (4, 0), dtype('bool'))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from securetrain.errors import AttackError
from securetrain.training import Defense, DiracRows, LossFn, TrainingSession

DEFAULT_NORM_SCALE = 10.0
"""A canary's gradient norm before clipping, in units of the clipping norm ``C`` (clipping brings it to ``C``)."""


class DiracCanaryPlanter(Defense):
    """Plant ``m`` Dirac gradient canaries whose placeholder inputs are ``inputs`` (see the module docstring).

    Args:
        inputs: one placeholder input per canary, distinct from each other and from the data.
        seed: seeds the choice of canary coordinates.
        norm_scale: canary gradient norm before clipping, over the clipping norm.
    """

    name: ClassVar[str] = "dirac-canaries"
    order: ClassVar[int] = -1000  # outermost loss wrapper: it sees the batch as sampled

    def __init__(self, inputs: torch.Tensor, *, seed: int = 0, norm_scale: float = DEFAULT_NORM_SCALE) -> None:
        if inputs.dim() < 1 or inputs.shape[0] < 1:
            raise AttackError("the canary planter needs at least one placeholder input")
        if not norm_scale >= 1.0:
            raise AttackError(
                f"norm_scale must be >= 1 (a canary at least as large as the clipping norm), got {norm_scale}"
            )
        flat = inputs.detach().to(torch.float32).contiguous().cpu()
        self.m = int(flat.shape[0])
        self._ids = {flat[i].numpy().tobytes(): i for i in range(self.m)}
        if len(self._ids) != self.m:
            raise AttackError("the canary placeholder inputs must be distinct")
        self.seed = int(seed)
        self.norm_scale = float(norm_scale)
        self._params: list[nn.Parameter] = []
        self._param_index = torch.zeros(self.m, dtype=torch.long)
        self._coord = torch.zeros(self.m, dtype=torch.long)
        self._norm = 0.0
        self._marks: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (batch size, rows, canary ids)
        self._before: list[torch.Tensor] | None = None
        self._pending = torch.zeros(self.m, dtype=torch.bool)  # canaries in the batch of the step under way
        self._rows: list[torch.Tensor] = []
        self._sampled_rows: list[torch.Tensor] = []
        self.steps_observed = 0
        self.rows_planted = 0

    # ------------------------------------------------------------------ GradientCanaries

    def bind(self, params: Sequence[nn.Parameter], max_grad_norm: float) -> None:
        """Give every canary a distinct random coordinate of ``params``; fix the canary norm.

        Coordinates are drawn from the weight matrices and kernels (parameters with two or more
        dimensions) when they hold enough of them: a bias sums the error signal of every sample
        and drifts coherently, which would only blur the statistic.
        """
        sizes = [int(p.numel()) for p in params]
        total = sum(sizes)
        if total < self.m:
            raise AttackError(
                f"{self.m} Dirac canaries need {self.m} distinct parameter coordinates; the model has {total} "
                "trainable parameters: use fewer canaries"
            )
        offsets = torch.tensor(np.cumsum([0, *sizes]), dtype=torch.long)
        weights = [torch.arange(int(offsets[i]), int(offsets[i + 1])) for i, p in enumerate(params) if p.dim() >= 2]
        pool = torch.cat(weights) if weights else torch.zeros(0, dtype=torch.long)
        if pool.numel() < self.m:
            pool = torch.arange(total)
        g = torch.Generator().manual_seed(self.seed)
        flat = pool[torch.randperm(pool.numel(), generator=g)[: self.m]]
        self._param_index = torch.searchsorted(offsets, flat, right=True) - 1
        self._coord = flat - offsets[self._param_index]
        self._params = list(params)
        self._norm = self.norm_scale * float(max_grad_norm)

    def take(self, batch_size: int) -> DiracRows | None:
        """The canary rows of the last batch whose loss was computed."""
        marks, self._marks = self._marks, None
        if marks is None:
            return None
        size, rows, ids = marks
        if size != batch_size:
            raise AttackError(
                f"the canary audit saw a loss over {size} samples but {batch_size} per-sample gradients; it needs "
                "one forward pass of each batch per step (TRADES-style losses are not supported)"
            )
        if rows.numel() == 0:
            return None
        self.rows_planted += int(rows.numel())
        self._pending[ids] = True
        return DiracRows(rows=rows, param_index=self._param_index[ids], coord=self._coord[ids], norm=self._norm)

    # ------------------------------------------------------------------ Defense hooks

    def wrap_loss(self, loss_fn: LossFn) -> LossFn:
        """Mark the canary rows of each batch (by their placeholder input), then compute the loss."""

        def marking_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            if torch.is_grad_enabled():
                self._mark(x)
            return loss_fn(model, x, y)

        return marking_loss

    def _mark(self, x: torch.Tensor) -> None:
        rows = x.detach().to(torch.float32).contiguous().cpu()
        pairs = [(r, self._ids.get(rows[r].numpy().tobytes())) for r in range(rows.shape[0])]
        hits = [(r, i) for r, i in pairs if i is not None]
        rr = torch.tensor([r for r, _ in hits], dtype=torch.long)
        ii = torch.tensor([i for _, i in hits], dtype=torch.long)
        self._marks = (int(x.shape[0]), rr, ii)

    def before_step(self, session: TrainingSession) -> bool:
        """Remember the parameters before the step (to tell a released step from a skipped physical batch)."""
        if self._params:
            with torch.no_grad():
                self._before = [p.detach().clone() for p in self._params]
        return True

    def after_step(self, session: TrainingSession) -> None:
        """Record the released (privatized) gradient at every canary coordinate, and which canaries it contains."""
        before, self._before = self._before, None
        if before is None:
            return
        with torch.no_grad():
            released = any(not torch.equal(b, p.detach()) for b, p in zip(before, self._params))
            if not released:  # a physical batch that only accumulated: nothing was released
                return
            row = torch.zeros(self.m, dtype=torch.float64)
            for pi, p in enumerate(self._params):
                sel = (self._param_index == pi).nonzero().flatten()
                if sel.numel() and p.grad is not None:
                    row[sel] = p.grad.detach().reshape(-1)[self._coord[sel].to(p.device)].to(torch.float64).cpu()
        self._rows.append(row)
        self._sampled_rows.append(self._pending)
        self._pending = torch.zeros(self.m, dtype=torch.bool)
        self.steps_observed += 1

    def observations(self) -> tuple[np.ndarray, np.ndarray]:
        """``(gradients, sampled)``, both ``(m, steps)``: the released gradient at each canary's coordinate in
        every released step, and whether the canary's sample was in that step's batch."""
        if not self._rows:
            return np.zeros((self.m, 0)), np.zeros((self.m, 0), dtype=bool)
        return torch.stack(self._rows, 1).numpy(), torch.stack(self._sampled_rows, 1).numpy()

    @property
    def parameter_groups(self) -> np.ndarray:
        """For every canary, the index of the parameter tensor that holds its coordinate."""
        return self._param_index.numpy().copy()

    def config(self) -> dict[str, Any]:
        """Not written to any config: the planter exists only inside an audit."""
        return {"name": self.name, "m": self.m, "seed": self.seed, "norm_scale": self.norm_scale}


def remove_low_rank(total: torch.Tensor) -> torch.Tensor:
    """``total`` (a weight's summed update, as a matrix ``(shape[0], -1)``) minus its low-rank part.

    The data's gradients add up, over a run, to a matrix of low rank (a few directions carry
    them), whereas the noise is i.i.d. and a Dirac canary is one entry. The singular values
    above the Gavish-Donoho (2014) hard threshold for an unknown noise level,
    ``omega(beta) * median(singular values)``, are taken as the data's drift and removed. It is
    a function of the released updates only, so a bound computed from it stays a valid bound.
    (The audit itself no longer needs it: it scores the released gradients step by step.)

    Example (a rank-1 drift 50 times the noise is removed; the noise stays):
        >>> g = torch.Generator().manual_seed(0)
        >>> noise = torch.randn(40, 30, generator=g, dtype=torch.float64)
        >>> drift = 50 * torch.outer(torch.ones(40), torch.ones(30)) / 30**0.5
        >>> bool((remove_low_rank(noise + drift) - noise).abs().mean() < 0.3)
        True
    """
    mat = total.reshape(total.shape[0], -1)
    rows, cols = mat.shape
    if min(rows, cols) < 2:
        return total
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    beta = min(rows, cols) / max(rows, cols)
    omega = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
    keep = s > omega * float(s.median())
    if not bool(keep.any()):
        return total
    low: torch.Tensor = (u[:, keep] * s[keep]) @ vh[keep]
    residual: torch.Tensor = (mat - low).reshape(total.shape)
    return residual


__all__ = ["DEFAULT_NORM_SCALE", "DiracCanaryPlanter", "remove_low_rank"]
