"""Training: the loop, its configuration, and the defense protocol.

Example:
    >>> from securetrain.training import TrainConfig, Defense, protect, fit
    >>> TrainConfig().epochs
    5
"""

from __future__ import annotations

from securetrain.training.config import OPTIMIZERS, TrainConfig
from securetrain.training.defense import (
    Callback,
    Defense,
    DefenseStack,
    LossFn,
    TrainingSession,
    per_sample_cross_entropy,
    protect,
)
from securetrain.training.evaluate import evaluate, predict_logits
from securetrain.training.loop import CHECKPOINT_NAME, TrainResult, fit

__all__ = [
    "CHECKPOINT_NAME",
    "OPTIMIZERS",
    "Callback",
    "Defense",
    "DefenseStack",
    "LossFn",
    "TrainConfig",
    "TrainResult",
    "TrainingSession",
    "evaluate",
    "fit",
    "per_sample_cross_entropy",
    "predict_logits",
    "protect",
]
