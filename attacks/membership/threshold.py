"""Threshold attacks on one signal of the target model (no shadow models).

* ``loss`` (Yeom et al. 2018): members have a lower loss; score ``-loss``. Yeom's attack
  thresholds at the mean training loss; the ROC sweeps every threshold, that one included.
* ``confidence``: the softmax probability of the true class.
* ``entropy``: ``-entropy`` of the prediction (members are predicted sharply).
* ``modified-entropy`` (Song and Mittal 2021): ``-modified entropy``, which uses the label.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(2, 2)
    >>> x, y = torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)
    >>> LossThreshold().scores(model, x, y).shape
    (3,)
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from attacks.membership.base import MembershipAttack
from attacks.membership.signals import member_scores


class SignalThreshold(MembershipAttack):
    """Score = ``signal(model, x, y)`` oriented so that members score higher
    (:func:`~attacks.membership.signals.member_scores`); subclasses pick the signal."""

    signal: ClassVar[str] = "loss"

    def scores(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        return member_scores(model, x, y, self.signal)


class LossThreshold(SignalThreshold):
    """Yeom et al. (2018): a low loss means a member."""

    name = "loss"
    signal = "loss"


class ConfidenceThreshold(SignalThreshold):
    """A high true-class confidence means a member."""

    name = "confidence"
    signal = "confidence"


class EntropyThreshold(SignalThreshold):
    """A low prediction entropy means a member."""

    name = "entropy"
    signal = "entropy"


class ModifiedEntropyThreshold(SignalThreshold):
    """Song and Mittal (2021): a low modified entropy means a member."""

    name = "modified-entropy"
    signal = "modified_entropy"


__all__ = [
    "ConfidenceThreshold",
    "EntropyThreshold",
    "LossThreshold",
    "ModifiedEntropyThreshold",
    "SignalThreshold",
]
