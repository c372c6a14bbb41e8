"""Training: the loop, its configuration, and the defense protocol.

Example:
    >>> from securetrain.training import TrainConfig, Defense, protect, fit
    >>> TrainConfig().epochs
    5
"""

from __future__ import annotations

from securetrain.training.canaries import AcceptsGradientCanaries, DiracRows, GradientCanaries
from securetrain.training.config import OPTIMIZERS, TrainConfig
from securetrain.training.defense import (
    DEFENSES,
    Defense,
    DefenseOption,
    DefenseStack,
    EpochMetrics,
    LossFn,
    get_defense_class,
    get_defense_options,
    per_sample_cross_entropy,
)
from securetrain.training.evaluate import evaluate, predict_logits
from securetrain.training.loop import CHECKPOINT_NAME, TrainResult, fit
from securetrain.training.plan import Pretraining, RunPlan
from securetrain.training.protocols import PrivateOptimizer
from securetrain.training.session import Callback, TrainingSession, protect

__all__ = [
    "CHECKPOINT_NAME",
    "AcceptsGradientCanaries",
    "DEFENSES",
    "OPTIMIZERS",
    "Callback",
    "Defense",
    "DefenseOption",
    "DefenseStack",
    "DiracRows",
    "EpochMetrics",
    "GradientCanaries",
    "LossFn",
    "PrivateOptimizer",
    "Pretraining",
    "RunPlan",
    "TrainConfig",
    "TrainResult",
    "TrainingSession",
    "evaluate",
    "fit",
    "get_defense_class",
    "get_defense_options",
    "per_sample_cross_entropy",
    "predict_logits",
    "protect",
]
