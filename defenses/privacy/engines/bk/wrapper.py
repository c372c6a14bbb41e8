""":class:`BKModule`: the ``bk`` wrapper, which can keep autograd from computing batch gradients.

With ``skip_param_grads``, a recorded forward pass runs with the trained parameters'
``requires_grad`` off and the (floating-point) inputs' on, so the backward pass computes
the layers' output gradients but not the parameters' batch gradients, which DP-SGD
replaces by its own clipped sums anyway.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk.wrapper import BKModule
    >>> fc = nn.Linear(3, 2)
    >>> wrapper = BKModule(fc, list(fc.parameters()), skip_param_grads=True)
    >>> out = wrapper(torch.randn(4, 3))
    >>> out.requires_grad, fc.weight.requires_grad  # output gradients flow; parameters restored
    (True, True)
    >>> out.sum().backward()
    >>> fc.weight.grad is None
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from defenses.privacy.engines.base import HookToggle


class BKModule(HookToggle):
    """The ``bk`` wrapper. With ``skip_param_grads``, a recorded forward pass runs with the
    trained parameters' ``requires_grad`` off and the (floating-point) inputs' on, so the
    backward pass computes the layers' output gradients but not the parameters' batch
    gradients, which DP-SGD replaces by its own clipped sums anyway. ``p.grad`` is then
    left to terms computed outside the per-sample path (the validity check looks for any).
    """

    def __init__(self, module: nn.Module, params: Sequence[nn.Parameter], skip_param_grads: bool) -> None:
        super().__init__(module)
        self._trained = list(params)
        self.skip_param_grads = skip_param_grads

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not (self.skip_param_grads and self.hooks_enabled and self.training and torch.is_grad_enabled()):
            return super().forward(*args, **kwargs)
        floating = [isinstance(a, torch.Tensor) and a.is_floating_point() for a in args]
        if not any(floating):
            return super().forward(*args, **kwargs)
        args = tuple(
            a.detach().requires_grad_(True) if f and not a.requires_grad else a for a, f in zip(args, floating)
        )
        for p in self._trained:
            p.requires_grad_(False)
        try:
            return super().forward(*args, **kwargs)
        finally:
            for p in self._trained:
                p.requires_grad_(True)
