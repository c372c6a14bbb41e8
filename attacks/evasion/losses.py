"""Per-sample losses that gradient attacks ascend, and input gradients that never fail.

``ce`` is the cross-entropy (Madry et al.'s PGD); ``margin`` is the Carlini-Wagner margin
``max_{j != y} z_j - z_y``, whose gradient does not vanish on very confident predictions.

Example:
    >>> import torch
    >>> logits = torch.tensor([[2.0, 0.0, 1.0]])
    >>> LOSSES.get("margin")(logits, torch.tensor([0]))
    tensor([-1.])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from attacks.evasion.base import check_logits
from securetrain.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: Registry[LossFn] = Registry("attack loss")


@LOSSES.register("ce")
def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy."""
    return F.cross_entropy(logits, labels, reduction="none")


@LOSSES.register("margin")
def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample ``max_{j != y} z_j - z_y``: positive exactly when the sample is misclassified."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return other - true


def loss_and_input_grad(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor, loss_fn: LossFn, *, validate: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits, per-sample loss, d sum(loss) / d x)``, all detached.

    A model whose output does not depend on ``x`` differentiably (a ``detach``, an ``argmax``)
    yields a zero gradient rather than an error: the gradient-masking checks report it. With
    ``validate=True`` the logits are checked (a typed :class:`~securetrain.errors.ModelError`)
    before the loss is computed.
    """
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xg)
        if validate:
            check_logits(logits, labels, None)
        loss = loss_fn(logits, labels)
        if loss.requires_grad:
            (grad,) = torch.autograd.grad(loss.sum(), xg, allow_unused=True)
        else:
            grad = None
    if grad is None:
        grad = torch.zeros_like(x)
    return logits.detach(), loss.detach(), grad
