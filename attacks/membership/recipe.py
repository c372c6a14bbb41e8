"""The training recipe of a run, replayable on other data (for shadow models and canary audits).

A run's ``config.json`` fixes the model, the :class:`~securetrain.training.TrainConfig` and
the defenses. :class:`TrainingRecipe` rebuilds all three for every new training set, so a
shadow model of a private run is private in the same way (same target epsilon, delta, clipping
norm; the noise is recalibrated by the defense for the shadow training set's size).

Defenses are rebuilt from their ``config()`` dicts by builders in :data:`DEFENSE_BUILDERS`,
which import the ``defenses`` packages lazily (the core never imports them). Register a builder
for your own defense with :func:`register_defense_builder`.

Example:
    >>> import torch
    >>> from securetrain.training import TrainConfig
    >>> recipe = TrainingRecipe(model_name="mlp", input_shape=(30,), num_classes=2,
    ...                         bounds=(-12.0, 12.0), train_config=TrainConfig(epochs=1, progress=False))
    >>> model = recipe((torch.zeros(8, 30), torch.zeros(8, dtype=torch.long)), seed=3)
    >>> model.training
    False
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from securetrain.errors import AttackError, UnknownNameError
from securetrain.models import build_model
from securetrain.registry import Registry
from securetrain.training import Defense, TrainConfig, fit

DefenseBuilder = Callable[[dict[str, Any]], Defense]
"""``builder(config_dict) -> Defense``: a fresh defense equal in settings to the one that wrote the dict."""

DEFENSE_BUILDERS: Registry[DefenseBuilder] = Registry("defense builder")


def register_defense_builder(name: str, builder: DefenseBuilder, *, overwrite: bool = False) -> None:
    """Teach :func:`build_defense` to rebuild defenses whose ``config()["name"]`` is ``name``."""
    DEFENSE_BUILDERS.add(name, builder, overwrite=overwrite)


def _lazy_class_builder(module: str, attr: str, drop: tuple[str, ...] = ()) -> DefenseBuilder:
    """A builder that imports ``module.attr`` when first used and constructs it from a config dict.

    The class's ``from_config(dict)`` is used if it has one; otherwise the dict's keys that are
    constructor parameters are passed (``name``, the keys in ``drop`` and keys the constructor
    does not take are left out).
    """

    def build(cfg: dict[str, Any]) -> Defense:
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise AttackError(
                f"cannot rebuild defense {cfg.get('name')!r} for shadow models: {module}.{attr} is not available ({exc})"
            ) from exc
        settings = {k: v for k, v in cfg.items() if k not in drop}
        if hasattr(cls, "from_config"):
            return cls.from_config(settings)
        params = inspect.signature(cls).parameters
        return cls(**{k: v for k, v in settings.items() if k in params and k != "name"})

    return build


# Built-in defenses, imported only when a run used them. A DP seed fixed in the run's config is
# not reused: every shadow model draws its Poisson sampling and noise from its own training seed
# (shadow models that share noise would understate the variance LiRA measures).
PRIVACY_NAMES = ("privacy", "dp", "differential_privacy")
for _name in PRIVACY_NAMES:
    DEFENSE_BUILDERS.add(_name, _lazy_class_builder("defenses.privacy", "DifferentialPrivacy", drop=("seed",)))


def build_defense(cfg: dict[str, Any]) -> Defense:
    """A fresh defense from a ``config()`` dict (as stored in a run's ``config.json``).

    Raises :class:`securetrain.errors.AttackError` for a dict without a name or a name with no
    registered builder.
    """
    if not isinstance(cfg, dict) or not isinstance(cfg.get("name"), str):
        raise AttackError(f"a defense config must be a dict with a 'name', got {cfg!r}")
    try:
        builder = DEFENSE_BUILDERS.get(cfg["name"])
    except UnknownNameError:
        raise AttackError(
            f"cannot rebuild defense {cfg['name']!r} for shadow models; register a builder with "
            f"attacks.membership.register_defense_builder({cfg['name']!r}, builder) "
            f"(known: {', '.join(DEFENSE_BUILDERS.names())})"
        ) from None
    defense = builder(cfg)
    if not isinstance(defense, Defense):
        raise AttackError(f"the builder for {cfg['name']!r} returned {type(defense).__name__}, not a Defense")
    return defense


@dataclass
class TrainingRecipe:
    """Trains a fresh zoo model with a fixed configuration and defenses on any ``(x, y)``.

    ``recipe((x, y), seed)`` returns the trained plain model in eval mode. The seed replaces
    ``train_config.seed`` (initialisation, data order, DP noise); the progress bar is off.
    """

    model_name: str
    input_shape: tuple[int, ...]
    num_classes: int
    bounds: tuple[float, float]
    train_config: TrainConfig
    defense_configs: Sequence[dict[str, Any]] = ()
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, train_xy: tuple[torch.Tensor, torch.Tensor], seed: int) -> nn.Module:
        cfg = dataclasses.replace(self.train_config, seed=int(seed), progress=False)
        torch.manual_seed(int(seed))
        model = build_model(self.model_name, self.input_shape, self.num_classes, **self.model_kwargs)
        defenses = [build_defense(c) for c in self.defense_configs]
        result = fit(model, train_xy, None, cfg, defenses, num_classes=self.num_classes, bounds=self.bounds)
        return result.model.eval()

    @property
    def private(self) -> bool:
        """Whether the recipe includes a differential-privacy defense."""
        return any(c.get("name") in PRIVACY_NAMES for c in self.defense_configs)

    @classmethod
    def from_config(cls, run_config: dict[str, Any]) -> TrainingRecipe:
        """The recipe of a run from its parsed ``config.json``."""
        try:
            d, m, t = run_config["data"], run_config["model"], run_config["train"]
        except (KeyError, TypeError) as exc:
            raise AttackError(f"a run config needs 'data', 'model' and 'train' sections; missing {exc}") from None
        if not m.get("zoo", True):
            raise AttackError(
                f"cannot train shadow models for a run with a custom model ({m.get('name')}); build a "
                "TrainingRecipe-like callable yourself and use train_shadow_models / LiRA directly"
            )
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        train_config = TrainConfig(**{k: v for k, v in t.items() if k in names})
        return cls(
            model_name=m["name"],
            input_shape=tuple(int(s) for s in d["input_shape"]),
            num_classes=int(d["num_classes"]),
            bounds=(float(d["bounds"][0]), float(d["bounds"][1])),
            train_config=train_config,
            defense_configs=[dict(c) for c in run_config.get("defenses") or []],
            model_kwargs=dict(m.get("kwargs") or {}),
        )

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike[str]) -> TrainingRecipe:
        """The recipe of the run in ``run_dir``."""
        from securetrain.runs import read_config

        return cls.from_config(read_config(run_dir))


__all__ = ["DEFENSE_BUILDERS", "DefenseBuilder", "TrainingRecipe", "build_defense", "register_defense_builder"]
