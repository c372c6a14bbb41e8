"""Per-example signals computed from a model's logits (the raw material of every attack).

A signal maps ``(logits, labels)`` to one float per example. Signals are registered in
:data:`SIGNALS`; attacks turn them into membership scores (higher means "more likely a
member").

Example:
    >>> import torch
    >>> from attacks.membership.signals import SIGNALS
    >>> logits = torch.tensor([[4.0, 0.0], [0.0, 0.0]])
    >>> labels = torch.tensor([0, 1])
    >>> SIGNALS.get("loss")(logits, labels).round(4).tolist()
    [0.0181, 0.6931]
    >>> SIGNALS.get("scaled_logit")(logits, labels).round(4).tolist()
    [4.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from securetrain.registry import Registry
from securetrain.training import predict_logits

Signal = Callable[[torch.Tensor, torch.Tensor], np.ndarray]
"""``signal(logits (n, C), labels (n,)) -> float64 array (n,)``."""

SIGNALS: Registry[Signal] = Registry("membership signal")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


@SIGNALS.register("loss")
def loss(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Cross-entropy of each example (members tend to have a lower loss)."""
    return _np(F.cross_entropy(logits.double(), labels.long(), reduction="none"))


@SIGNALS.register("confidence")
def confidence(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Softmax probability of the true class."""
    return _np(F.softmax(logits.double(), dim=1).gather(1, labels.long()[:, None])[:, 0])


@SIGNALS.register("entropy")
def entropy(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Entropy of the predicted distribution (labels unused; members tend to be predicted sharply)."""
    logp = F.log_softmax(logits.double(), dim=1)
    return _np(-(logp.exp() * logp).sum(dim=1))


@SIGNALS.register("modified_entropy")
def modified_entropy(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Song and Mittal (2021)'s modified entropy, which uses the label (lower for members)."""
    logp = F.log_softmax(logits.double(), dim=1)
    p = logp.exp()
    log1mp = torch.log1p(-p.clamp(max=1 - 1e-15))
    onehot = F.one_hot(labels.long(), num_classes=logits.shape[1]).bool()
    # true class: -(1 - p_y) log p_y ; other classes: -p_j log(1 - p_j)
    terms = torch.where(onehot, -(1 - p) * logp, -p * log1mp)
    return _np(terms.sum(dim=1))


@SIGNALS.register("scaled_logit")
def scaled_logit(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """LiRA's logit-scaled confidence ``log(p_y / (1 - p_y))``, computed stably.

    Equals ``z_y - logsumexp_{j != y} z_j``; roughly Gaussian across training runs, which is
    what LiRA's parametric test assumes (Carlini et al. 2022).
    """
    z = logits.double()
    y = labels.long()
    zy = z.gather(1, y[:, None])[:, 0]
    others = z.scatter(1, y[:, None], float("-inf"))
    return _np(zy - torch.logsumexp(others, dim=1))


def model_signal(model: nn.Module, x: torch.Tensor, y: torch.Tensor, signal: str, batch_size: int = 512) -> np.ndarray:
    """``signal`` of ``model`` on ``(x, y)``; the model runs in eval mode and its mode is restored.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(3, 2)
        >>> model_signal(m, torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), "loss").shape
        (4,)
    """
    fn = SIGNALS.get(signal)
    return fn(predict_logits(model, x, batch_size), y)


MEMBER_DIRECTION: dict[str, float] = {"loss": -1.0, "entropy": -1.0, "modified_entropy": -1.0}
"""Signals on which members score *lower* (-1); every other signal is higher for members (+1)."""


def member_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, signal: str) -> np.ndarray:
    """``signal`` turned into a membership score: higher means more likely a member.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(3, 2)
        >>> x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)
        >>> bool((member_scores(m, x, y, "loss") == -model_signal(m, x, y, "loss")).all())
        True
    """
    return MEMBER_DIRECTION.get(signal, 1.0) * model_signal(model, x, y, signal)


__all__ = [
    "MEMBER_DIRECTION",
    "SIGNALS",
    "Signal",
    "confidence",
    "entropy",
    "loss",
    "member_scores",
    "model_signal",
    "modified_entropy",
    "scaled_logit",
]
