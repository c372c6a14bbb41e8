"""The :class:`Block` contract: one layer's per-sample gradients for one group of samples.

A block holds what one layer recorded for one group of samples (a backward pass, or
several forward passes that share one) and answers the three questions DP-SGD asks:
the per-sample squared norms, a weighted sum of the per-sample gradients (the clipped
sum), and, for checks, the batch gradient autograd would compute and the per-sample
gradients themselves. Gradients are *raw*: they carry the ``1/B`` of a mean loss.

Example:
    >>> import torch
    >>> from defenses.privacy.engines.bk.blocks.base import Call, sq_rows
    >>> sq_rows(torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
    tensor([25.,  1.])
    >>> Call(torch.zeros(2, 3), torch.ones(2, 4)).grad.shape
    torch.Size([2, 4])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal, NamedTuple

import torch
from torch import nn

Mode = Literal["outer", "mat", "ghost"]
"""How a block computes norms: outer products (one position), materialised per-sample
gradients, or ghost norms from the Gram matrices of inputs and output gradients."""

ParamGrads = dict[nn.Parameter, torch.Tensor]
"""Gradients keyed by parameter (per-sample ``(B, *p.shape)`` or summed ``p.shape``)."""


class Call(NamedTuple):
    """What one call of a module leaves for its block: the kept input and its output's gradient."""

    activation: torch.Tensor
    grad: torch.Tensor


def sq_rows(x: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of each row of a ``(B, n)`` tensor."""
    norms: torch.Tensor = torch.linalg.vecdot(x, x)
    return norms


def plus(total: torch.Tensor | None, term: torch.Tensor) -> torch.Tensor:
    """``term`` when nothing was summed yet, else ``total + term``."""
    return term if total is None else total + term


class Block(ABC):
    """One layer's contribution to one group of samples (raw: gradients carry the 1/B of a mean loss)."""

    mode: Mode

    @abstractmethod
    def sq_norms(self) -> torch.Tensor:
        """Raw squared per-sample norms, summed over the layer's parameters, ``(B,)``."""

    @abstractmethod
    def add_weighted(self, w: torch.Tensor, out: ParamGrads) -> None:
        """``out[p] += sum_i w_i * raw_grad_i(p)``."""

    @abstractmethod
    def implied(self) -> ParamGrads:
        """``sum_i raw_grad_i(p)``: what autograd puts in ``p.grad``."""

    @abstractmethod
    def materialize(self) -> ParamGrads:
        """Raw per-sample gradients ``(B, *p.shape)``."""
