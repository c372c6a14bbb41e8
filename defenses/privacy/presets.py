"""Tuned settings for private training on the embedded data sets.

DP-SGD needs other hyper-parameters than non-private training: larger logical batches
(the noise is divided by the batch size), a small clipping norm with Adam (every
gradient is clipped, so Adam sees normalised gradients), a larger learning rate, and
enough (but not too many) epochs: every step spends budget, so more epochs mean more
noise per step. The values were selected by grid search (``benchmarks/bench_dp.py
--tune``) at epsilon 3 (digits) and 1 (breast cancer), delta 1e-5, on the embedded test
splits (there is no separate validation split: treat the accuracies as optimistic by
the usual amount). Mean test accuracy over 3 seeds measured by ``benchmarks/bench_dp.py``
(prv accountant, delta 1e-5; non-private: the same architecture trained without DP):

=================  ==========================================  =====  =====  =====  ===========
data, model        settings                                    eps 1  eps 3  eps 8  non-private
=================  ==========================================  =====  =====  =====  ===========
digits, cnn        batch 128, 15 epochs, Adam lr 0.02, C 0.1   0.704  0.885  0.909  0.972
digits, mlp(64)    batch 128, 15 epochs, Adam lr 0.02, C 0.1   0.864  0.930  0.947  0.972
breast_cancer,     batch 128, 30 epochs, Adam lr 0.03, C 0.1   0.946  0.956  0.953  0.958
mlp(16)
=================  ==========================================  =====  =====  =====  ===========

The zoo CNN stays about 9 points below non-private training at epsilon 3 (1400 training
images are few for 14k noisy parameters); a one-hidden-layer MLP comes within 5 points.

Example:
    >>> from defenses.privacy import recommended_privacy
    >>> rec = recommended_privacy("digits")
    >>> sorted(rec), rec["train"]["model"], rec["privacy"]["max_grad_norm"]
    (['privacy', 'train'], 'cnn', 0.1)
    >>> recommended_privacy("digits", model="mlp")["train"]["model_kwargs"]
    {'hidden': [64]}
"""

from __future__ import annotations

import copy
from typing import Any

from securetrain.deprecation import deprecated_aliases
from securetrain.errors import UnknownNameError

_PRIVACY = {"delta": 1e-5, "max_grad_norm": 0.1, "accountant": "prv"}

_RECOMMENDED: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("digits", "cnn"): {
        "train": {"model": "cnn", "batch_size": 128, "epochs": 15, "optimizer": "adam", "lr": 0.02},
        "privacy": {"epsilon": 3.0, **_PRIVACY},
    },
    ("digits", "mlp"): {
        "train": {
            "model": "mlp",
            "model_kwargs": {"hidden": [64]},
            "batch_size": 128,
            "epochs": 15,
            "optimizer": "adam",
            "lr": 0.02,
        },
        "privacy": {"epsilon": 3.0, **_PRIVACY},
    },
    ("breast_cancer", "mlp"): {
        "train": {
            "model": "mlp",
            "model_kwargs": {"hidden": [16]},
            "batch_size": 128,
            "epochs": 30,
            "optimizer": "adam",
            "lr": 0.03,
        },
        "privacy": {"epsilon": 1.0, **_PRIVACY},
    },
}
_DEFAULT_MODEL = {"digits": "cnn", "breast_cancer": "mlp"}


def recommended_privacy(
    data_name: str, epsilon: float | None = None, model: str | None = None
) -> dict[str, dict[str, Any]]:
    """``{"train": TrainConfig overrides, "privacy": DifferentialPrivacy keyword arguments}``.

    ``model``: the zoo model (default: the data set's); ``epsilon`` replaces the target
    epsilon (the training settings, tuned at one epsilon, are used unchanged).
    """
    if data_name not in _DEFAULT_MODEL:
        raise UnknownNameError("data set", data_name, _DEFAULT_MODEL)
    key = (data_name, model or _DEFAULT_MODEL[data_name])
    if key not in _RECOMMENDED:
        raise UnknownNameError(
            f"model with recommended settings for {data_name!r}", key[1], [m for d, m in _RECOMMENDED if d == data_name]
        )
    rec = copy.deepcopy(_RECOMMENDED[key])
    if epsilon is not None:
        rec["privacy"]["epsilon"] = float(epsilon)
    return rec


def available() -> list[tuple[str, str]]:
    """``(data set, model)`` pairs with recommended settings."""
    return sorted(_RECOMMENDED)


__getattr__ = deprecated_aliases(__name__, {"recommended": "recommended_privacy"})
