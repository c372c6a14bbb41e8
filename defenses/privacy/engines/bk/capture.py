"""What the engine records during a step: one :class:`Capture` per call of a trained module.

A capture holds the kept input of one call and, once the backward pass reaches the
call's output, either its gradient (summed when the output is reached more than once)
or, when the layer can form the call's per-sample gradients at once
(:meth:`~defenses.privacy.engines.bk.layer.Layer.reduce`), those gradients: the output
gradient is then not kept, and neither is the input (freed as a non-private backward pass
frees it), so the step's memory stays close to a non-private step's.
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
    >>> [len(rec.calls) for rec in calls_by_group([cap])[0].values()]
    [1]
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from defenses.privacy.engines.bk.blocks import Call, ParamGrads
from defenses.privacy.engines.bk.chooser import Policy
from defenses.privacy.engines.bk.layer import Layer
from securetrain.errors import EngineUnsupported


@dataclass(eq=False)
class Capture:
    """One recorded call: its layer, kept input, group of samples and (once reached) output gradient.

    ``reduced``: the call's raw per-sample gradients when the layer formed them as the
    gradient arrived (then ``grad`` stays ``None`` and ``activation`` is dropped). ``source``:
    a weak reference to the call's input as the module saw it, for a second backward pass
    through a retained graph (which keeps the input alive where the graph saved it).
    """

    layer: Layer[Any]
    activation: torch.Tensor | None
    group: int
    policy: Policy = "materialize"
    max_bytes: int = 0
    grad: torch.Tensor | None = None
    reduced: ParamGrads | None = None
    source: weakref.ref[torch.Tensor] | None = None

    def add_grad(self, g: torch.Tensor) -> None:
        """Autograd reached the call's output with gradient ``g`` (once more)."""
        if self.reduced is not None:  # linear in g: add this gradient's share
            more = self.layer.reduce(self._formed_input(), g, self.policy, self.max_bytes, force=True)
            assert more is not None
            self.reduced = {p: t + more[p] for p, t in self.reduced.items()}
        elif self.grad is not None:
            self.grad = self.grad + g
        else:
            assert self.activation is not None
            self.reduced = self.layer.reduce(self.activation, g, self.policy, self.max_bytes)
            if self.reduced is None:
                self.grad = g
            else:
                self.activation = None

    def _formed_input(self) -> torch.Tensor:
        """The input of a call whose gradients were formed, if something else still holds it."""
        a = self.source() if self.source is not None else None
        if a is None:
            raise EngineUnsupported(
                f"bk formed the per-sample gradients of {self.layer.name} when the first backward pass reached it "
                "and did not keep its input, so a second backward pass through the same graph (retain_graph=True) "
                "cannot add to them; add the losses and call backward() once, or use engine='vmap'",
                [self.layer.name],
            )
        return self.layer.prepare(a)

    @property
    def reached(self) -> bool:
        """Whether the backward pass reached the call's output."""
        return self.grad is not None or self.reduced is not None


@dataclass
class LayerCalls:
    """A layer's calls in one group: kept (input, output gradient) pairs and already formed gradients."""

    calls: list[Call] = field(default_factory=list)
    reduced: list[ParamGrads] = field(default_factory=list)


def calls_by_group(captures: Iterable[Capture]) -> dict[int, dict[Layer[Any], LayerCalls]]:
    """``{group: {layer: calls}}`` of the captures whose output got a gradient, in recording order."""
    by_group: dict[int, dict[Layer[Any], LayerCalls]] = {}
    for cap in captures:
        if not cap.reached:
            continue
        rec = by_group.setdefault(cap.group, {}).setdefault(cap.layer, LayerCalls())
        if cap.reduced is not None:
            rec.reduced.append(cap.reduced)
        else:
            assert cap.grad is not None and cap.activation is not None
            rec.calls.append(Call(cap.activation, cap.grad))
    return by_group
