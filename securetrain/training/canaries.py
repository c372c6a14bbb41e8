"""The gradient-canary seam: how a privacy audit plants Dirac canaries in a private training run.

A white-box audit of DP-SGD (:func:`attacks.audit.audit_dp_sgd`) trains the run's own recipe
once more with canary *samples* in the data set: the Poisson sampler draws them like any other
sample, and whenever one is in a physical batch its per-sample gradient is replaced by a
**Dirac canary**, a gradient that is zero except at one parameter coordinate. The replacement
happens inside the private optimizer, *before* clipping, so the canary goes through the same
clipping, summation, noise and distributed reduction as the real samples.

Two structural types make that explicit, without the core importing any defense or audit:

* :class:`GradientCanaries`: what the auditor hands in. The private optimizer calls
  :meth:`~GradientCanaries.bind` once with the parameters its clipped sum covers (in order)
  and the clipping norm, and :meth:`~GradientCanaries.take` after every backward pass to learn
  which rows of that physical batch are canaries (a :class:`DiracRows`).
* :class:`AcceptsGradientCanaries`: a defense that can host them (differential privacy does);
  the auditor finds it with an ``isinstance`` check and calls
  :meth:`~AcceptsGradientCanaries.insert_gradient_canaries` before training.

Example:
    >>> import torch
    >>> rows = DiracRows(rows=torch.tensor([2]), param_index=torch.tensor([0]), coord=torch.tensor([5]), norm=3.0)
    >>> rows.count
    1
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@dataclass(frozen=True)
class DiracRows:
    """Rows of one physical batch whose per-sample gradient is a Dirac canary.

    Row ``rows[k]`` of the batch gets, instead of its own gradient, a gradient equal to
    ``norm`` at coordinate ``coord[k]`` of the flattened parameter ``params[param_index[k]]``
    (``params`` as given to :meth:`GradientCanaries.bind`) and zero elsewhere. ``norm`` is
    the gradient's norm *before* clipping.
    """

    rows: torch.Tensor
    param_index: torch.Tensor
    coord: torch.Tensor
    norm: float

    @property
    def count(self) -> int:
        """Number of canary rows."""
        return int(self.rows.numel())


@runtime_checkable
class GradientCanaries(Protocol):
    """Canary gradients an auditor plants in a private optimizer (see the module docstring)."""

    def bind(self, params: Sequence[nn.Parameter], max_grad_norm: float) -> None:
        """Called once by the private optimizer: the parameters its clipped sum covers, and ``C``."""
        ...

    def take(self, batch_size: int) -> DiracRows | None:
        """The canary rows of the physical batch just backpropagated (``batch_size`` per-sample rows)."""
        ...


@runtime_checkable
class AcceptsGradientCanaries(Protocol):
    """A defense whose private optimizer can host gradient canaries (for audits only)."""

    def insert_gradient_canaries(self, canaries: GradientCanaries | None) -> None:
        """Plant ``canaries`` in the next training run set up with this defense (``None``: remove them)."""
        ...


__all__ = ["AcceptsGradientCanaries", "DiracRows", "GradientCanaries"]
