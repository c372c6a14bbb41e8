"""What the engine records during a step: one :class:`Capture` per call of a trained module.

A capture holds the kept input of one call and, once the backward pass reaches the
call's output, its gradient (summed when the output is reached more than once).
:func:`calls_by_group` sorts the captures of a step into groups of samples and layers.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk.capture import Capture, calls_by_group
    >>> from defenses.privacy.engines.bk.linear import LinearLayer
    >>> layer = LinearLayer(nn.Linear(3, 2), "fc")
    >>> cap = Capture(layer, torch.randn(4, 3), group=0)
    >>> cap.add_grad(torch.ones(4, 2)); cap.add_grad(torch.ones(4, 2))
    >>> cap.grad[0]
    tensor([2., 2.])
    >>> [len(calls) for calls in calls_by_group([cap])[0].values()]
    [1]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from defenses.privacy.engines.bk.blocks import Call
from defenses.privacy.engines.bk.layer import Layer


@dataclass(eq=False)
class Capture:
    """One recorded call: its layer, kept input, group of samples and (once reached) output gradient."""

    layer: Layer[Any]
    activation: torch.Tensor
    group: int
    grad: torch.Tensor | None = None

    def add_grad(self, g: torch.Tensor) -> None:
        """Autograd reached the call's output with gradient ``g`` (once more)."""
        self.grad = g if self.grad is None else self.grad + g


def calls_by_group(captures: Iterable[Capture]) -> dict[int, dict[Layer[Any], list[Call]]]:
    """``{group: {layer: calls}}`` of the captures whose output got a gradient, in recording order."""
    by_group: dict[int, dict[Layer[Any], list[Call]]] = {}
    for cap in captures:
        if cap.grad is not None:
            by_group.setdefault(cap.group, {}).setdefault(cap.layer, []).append(Call(cap.activation, cap.grad))
    return by_group
