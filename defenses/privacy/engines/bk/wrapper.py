""":class:`BKModule`: the ``bk`` wrapper, which can keep autograd from computing batch gradients.

With ``skip_param_grads``, a recorded forward pass runs with the trained parameters'
``requires_grad`` off, so the backward pass computes the layers' output gradients but
not the parameters' batch gradients, which DP-SGD replaces by its own clipped sums
anyway. A trained layer whose input does not require a gradient (the first layer, an
embedding of integer inputs, a layer fed by a buffer) would then produce an output
without one: :func:`grad_source` makes such an output a start of the backward pass (no
copy), so its gradient still arrives, and nothing upstream of it is differentiated.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk.wrapper import BKModule
    >>> fc = nn.Linear(3, 2)
    >>> wrapper = BKModule(fc, list(fc.parameters()), skip_param_grads=True)
    >>> out = wrapper(torch.randn(4, 3))
    >>> out.requires_grad, fc.weight.requires_grad  # no gradient flows yet; parameters restored
    (False, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from defenses.privacy.engines.base import HookToggle


class _GradSource(torch.autograd.Function):
    """Identity on ``x`` that attaches it to the autograd graph (``anchor`` is a scalar requiring grad)."""

    @staticmethod
    def forward(ctx: Any, anchor: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.mark_dirty(x)  # the same tensor, now with a history: later in-place operations stay allowed
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, grad


def grad_source(x: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """``x`` (a tensor that does not require grad) made to receive a gradient, without a copy.

    ``anchor``: any scalar tensor with ``requires_grad=True`` (it never gets a gradient).

    Example:
        >>> import torch
        >>> from defenses.privacy.engines.bk.wrapper import grad_source
        >>> y = grad_source(torch.ones(2), torch.zeros((), requires_grad=True))
        >>> y.register_hook(print)  # doctest: +ELLIPSIS
        <...>
        >>> (3 * y).sum().backward()
        tensor([3., 3.])
    """
    if x._is_view():
        x = x.clone()  # a view of another tensor is copied (its base would share the history)
    return _GradSource.apply(anchor, x)  # type: ignore[no-untyped-call,no-any-return]


class BKModule(HookToggle):
    """The ``bk`` wrapper. With ``skip_param_grads``, a recorded forward pass runs with the
    trained parameters' ``requires_grad`` off, so the backward pass computes the layers'
    output gradients but not the parameters' batch gradients, which DP-SGD replaces by its
    own clipped sums anyway. ``p.grad`` is then left to terms computed outside the
    per-sample path (the validity check looks for any).
    """

    def __init__(self, module: nn.Module, params: Sequence[nn.Parameter], skip_param_grads: bool) -> None:
        super().__init__(module)
        self._trained = list(params)
        self.skip_param_grads = skip_param_grads

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not (self.skip_param_grads and self.hooks_enabled and self.training and torch.is_grad_enabled()):
            return super().forward(*args, **kwargs)
        for p in self._trained:
            p.requires_grad_(False)
        try:
            return super().forward(*args, **kwargs)
        finally:
            for p in self._trained:
                p.requires_grad_(True)
