"""The :class:`Layer` contract: how ``bk`` turns one module's recorded calls into a block.

A layer family (``linear``, ``conv``, ``norm``, ``embedding``) subclasses :class:`Layer`
and registers it for its module types with
:func:`~defenses.privacy.engines.bk.registry.register_layer`. The engine creates one
layer per trainable module, keeps what :meth:`Layer.prepare` returns of each call's
input, and after the backward pass hands every call of one group of samples, as
:class:`~defenses.privacy.engines.bk.blocks.base.Call` s, to :meth:`Layer.block`.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk.blocks import Call, PerSampleBlock
    >>> from defenses.privacy.engines.bk.layer import Layer
    >>> class ScaleLayer(Layer[nn.Module]):  # y = s * x with one trained scalar s
    ...     def block(self, calls, policy, max_bytes):
    ...         per_sample = sum((a * g).flatten(1).sum(1, keepdim=True) for a, g in calls)
    ...         return PerSampleBlock({self.param("s"): per_sample})
    >>> module = nn.Module()
    >>> module.s = nn.Parameter(torch.ones(1))
    >>> layer = ScaleLayer(module, "scale")
    >>> layer.block([Call(torch.ones(2, 3), torch.ones(2, 3))], "auto", 0).sq_norms()
    tensor([9., 9.])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Generic, TypeVar

import torch
from torch import nn

from defenses.privacy.engines.bk.blocks.base import Block, Call, ParamGrads
from defenses.privacy.engines.bk.blocks.per_sample import PerSampleBlock
from defenses.privacy.engines.bk.chooser import Policy
from defenses.privacy.engines.bk.workspace import Workspace

M = TypeVar("M", bound=nn.Module)


class Layer(ABC, Generic[M]):
    """How ``bk`` turns one module's recorded (input, output-gradient) calls into a :class:`Block`."""

    def __init__(self, module: M, name: str) -> None:
        self.module = module
        self.name = name
        self.workspace = Workspace()

    @staticmethod
    def check(module: nn.Module) -> str | None:
        """Why this module cannot be handled (``None`` when it can)."""
        return None

    def buffer(self, key: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """A work tensor kept from step to step (see :meth:`Workspace.buffer`)."""
        return self.workspace.buffer(key, shape, like)

    def release(self) -> None:
        """The step is over: the work tensors may be handed out again."""
        self.workspace.release()

    def prepare(self, a: torch.Tensor) -> torch.Tensor:
        """What to keep of the input at forward time (default: the input itself, detached)."""
        return a.detach()

    @abstractmethod
    def block(self, calls: Sequence[Call], policy: Policy, max_bytes: int) -> Block:
        """Combine every call of the module in one group of samples."""

    def reduced_block(self, calls: Sequence[Call], policy: Policy, max_bytes: int) -> Block:
        """A :meth:`block` for layers whose :meth:`reduce` always forms per-sample gradients: every
        call's gradients, summed per parameter, in one :class:`PerSampleBlock`."""
        grads: ParamGrads = {}
        for a, g in calls:
            reduced = self.reduce(a, g, policy, max_bytes, force=True)
            if reduced is None:
                raise TypeError(f"{type(self).__name__}.reduce must form per-sample gradients when forced")
            for p, t in reduced.items():
                grads[p] = grads[p] + t if p in grads else t
        return PerSampleBlock(grads)

    def reduce(
        self, a: torch.Tensor, g: torch.Tensor, policy: Policy, max_bytes: int, *, force: bool = False
    ) -> ParamGrads | None:
        """One call's raw per-sample gradients ``(B, *p.shape)``, formed as its output gradient arrives.

        ``None`` (the default) keeps the call's input and output gradient for :meth:`block`
        (ghost norms, outer products). A layer that returns gradients here must return them
        whenever ``force`` is true; they must be linear in ``g``. Reduced calls are summed into
        a :class:`~defenses.privacy.engines.bk.blocks.PerSampleBlock`.
        """
        return None

    def param(self, attr: str) -> nn.Parameter | None:
        """The module's parameter ``attr`` when it exists and is trained, else ``None``."""
        p = getattr(self.module, attr, None)
        return p if isinstance(p, nn.Parameter) and p.requires_grad else None
