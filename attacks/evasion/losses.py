"""Per-sample losses that gradient attacks ascend, and input gradients that never fail.

``ce`` is the cross-entropy (Madry et al.'s PGD); ``margin`` is the Carlini-Wagner margin
``max_{j != y} z_j - z_y``, whose gradient does not vanish on very confident predictions;
``dlr`` is Croce & Hein's (2020) difference of logits ratio, the margin divided by the spread of
the top logits, so it is invariant to shifting and rescaling the logits (a saturated softmax or
a model that scales its logits up does not weaken it). :func:`targeted_dlr` is its targeted form.

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


class _CrossEntropy(torch.autograd.Function):
    """Per-sample cross-entropy whose gradient does not round to zero on confident predictions.

    Autograd's gradient for the true class is ``p_y - 1``, which is exactly 0 in float32 once the
    other classes' probabilities fall below ~6e-8 (a logit gap above ~16.6): a sign-gradient
    attack then does not move the sample at all, and the audit calls it robust. Here it is
    ``-sum_{j != y} p_j``, the same value computed without cancellation.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, dim=1)
        ctx.save_for_backward(logp, labels)
        return -logp.gather(1, labels[:, None]).squeeze(1)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        logp, labels = ctx.saved_tensors  # type: ignore[attr-defined]
        others = logp.exp().scatter(1, labels[:, None], 0.0)
        grad = others.scatter(1, labels[:, None], -others.sum(1, keepdim=True))
        return grad * grad_out[:, None], None


@LOSSES.register("ce")
def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (its input gradient stays non-zero on confident predictions).

    Example:
        >>> import torch
        >>> logits = torch.tensor([[0.0, 30.0]], requires_grad=True)
        >>> cross_entropy(logits, torch.tensor([1])).sum().backward()
        >>> bool(logits.grad[0, 1] < 0)  # autograd's own gradient here is exactly 0
        True
    """
    out: torch.Tensor = _CrossEntropy.apply(logits, labels)  # type: ignore[no-untyped-call]
    return out


@LOSSES.register("margin")
def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample ``max_{j != y} z_j - z_y``: positive exactly when the sample is misclassified."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return other - true


@LOSSES.register("dlr")
def dlr(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample ``-(z_y - max_{j != y} z_j) / (z_(1) - z_(3))`` (``z_(k)``: the k-th largest logit).

    With fewer than 3 classes the spread is undefined and the plain :func:`margin` is returned.

    Example:
        >>> import torch
        >>> dlr(torch.tensor([[3.0, 1.0, 0.0, -1.0]]), torch.tensor([0]))
        tensor([-0.6667])
    """
    if logits.shape[1] < 3:
        return margin(logits, labels)
    top = logits.sort(dim=1, descending=True).values
    spread = top[:, 0] - top[:, 2] + _DLR_TINY
    return margin(logits, labels) / spread


def targeted_dlr(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample targeted DLR ``-(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)``, to be maximised.

    With fewer than 4 classes the spread is undefined and the targeted margin ``z_t - z_y`` is
    returned.

    Example:
        >>> import torch
        >>> targeted_dlr(torch.tensor([[4.0, 2.0, 1.0, 0.0]]), torch.tensor([0]), torch.tensor([1]))
        tensor([-0.5714])
    """
    true = logits.gather(1, labels[:, None]).squeeze(1)
    target = logits.gather(1, targets[:, None]).squeeze(1)
    if logits.shape[1] < 4:
        return target - true
    top = logits.sort(dim=1, descending=True).values
    spread = top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _DLR_TINY
    return (target - true) / spread


_DLR_TINY = 1e-12


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


def expected_loss_and_input_grad(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor, loss_fn: LossFn, *, draws: int = 1, validate: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`loss_and_input_grad` averaged over ``draws`` forward passes (expectation over
    transformation, Athalye et al. 2018): for models whose output is random, the averaged
    gradient points where the expected loss rises, a single draw's does not. ``draws=1`` is
    exactly :func:`loss_and_input_grad`.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 2)
        >>> x, y = torch.rand(4, 3), torch.tensor([0, 1, 0, 1])
        >>> one = loss_and_input_grad(model, x, y, margin)[2]
        >>> torch.allclose(expected_loss_and_input_grad(model, x, y, margin, draws=3)[2], one)
        True
    """
    logits, loss, grad = loss_and_input_grad(model, x, labels, loss_fn, validate=validate)
    if draws == 1:
        return logits, loss, grad
    for _ in range(draws - 1):
        lg, ls, gr = loss_and_input_grad(model, x, labels, loss_fn)
        logits, loss, grad = logits + lg, loss + ls, grad + gr
    return logits / draws, loss / draws, grad / draws
