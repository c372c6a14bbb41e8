"""The training recipe of a run, replayable on other data (for shadow models and canary audits).

A run's ``config.json`` fixes the model, the :class:`~securetrain.training.TrainConfig` and
the defenses. :class:`TrainingRecipe` rebuilds all three for every new training set, so a
shadow model of a private run is private in the same way (same target epsilon, delta, clipping
norm; the noise is recalibrated by the defense for the shadow training set's size).

Defenses are rebuilt from their ``config()`` dicts through the one defense registry,
:data:`securetrain.training.DEFENSES` (``Defense.from_config``); a third-party defense that is
registered there (or declared in the ``securetrain.defenses`` entry-point group) is rebuilt
like the built-in ones.

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
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from securetrain.errors import AttackError, ConfigurationError, UnknownNameError
from securetrain.models import build_model
from securetrain.training import DEFENSES, Defense, TrainConfig, TrainResult, fit

PRIVACY_NAMES = ("privacy",)
"""``Defense.name`` of the differential-privacy defense (a recipe with it trains private shadow models)."""


def build_defense(cfg: dict[str, Any]) -> Defense:
    """A fresh defense from a ``config()`` dict, through :data:`securetrain.training.DEFENSES`.

    A DP seed fixed in the run's config is not reused: every shadow model draws its Poisson
    sampling and noise from its own training seed (shadow models that share noise would
    understate the variance LiRA measures).

    Raises :class:`securetrain.errors.AttackError` for a dict without a name or a name that is
    not a registered defense.
    """
    if not isinstance(cfg, dict) or not isinstance(cfg.get("name"), str):
        raise AttackError(f"a defense config must be a dict with a 'name', got {cfg!r}")
    settings = {k: v for k, v in cfg.items() if not (k == "seed" and cfg["name"] in PRIVACY_NAMES)}
    try:
        return Defense.from_config(settings)
    except UnknownNameError as exc:
        raise AttackError(
            f"cannot rebuild defense {cfg['name']!r} for shadow models; register its class with "
            f"securetrain.training.DEFENSES.add({cfg['name']!r}, cls) or the 'securetrain.defenses' entry-point "
            f"group (known: {', '.join(exc.choices)})"
        ) from None
    except ConfigurationError as exc:
        raise AttackError(f"cannot rebuild defense {cfg['name']!r} for shadow models: {exc}") from exc


def register_defense_builder(
    name: str, builder: Callable[[dict[str, Any]], Defense], *, overwrite: bool = False
) -> None:
    """Deprecated: register a defense *class* in :data:`securetrain.training.DEFENSES` instead.

    Kept for one release: wraps ``builder(config) -> Defense`` in a registered class whose
    ``from_config`` calls it.
    """
    warnings.warn(
        "register_defense_builder is deprecated; register the defense class with "
        "securetrain.training.DEFENSES.add(name, cls) (its from_config rebuilds it)",
        DeprecationWarning,
        stacklevel=2,
    )

    def from_config(cls: type[Defense], cfg: Mapping[str, Any]) -> Defense:
        defense = builder(dict(cfg))
        if not isinstance(defense, Defense):
            raise ConfigurationError(f"the builder for {name!r} returned {type(defense).__name__}, not a Defense")
        return defense

    built = type(f"Built_{name}", (Defense,), {"name": name, "from_config": classmethod(from_config)})
    DEFENSES.add(name, built, overwrite=overwrite)


def __getattr__(attr: str) -> Any:
    if attr == "DEFENSE_BUILDERS":
        warnings.warn(
            "DEFENSE_BUILDERS is deprecated; use securetrain.training.DEFENSES", DeprecationWarning, stacklevel=2
        )
        return DEFENSES
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


@dataclass
class TrainingRecipe:
    """Trains a fresh model (a registered name or an import-path spec, imported when called) with a
    fixed configuration and defenses on any ``(x, y)``.

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
        return self.run(train_xy, seed).model.eval()

    def run(
        self,
        train_xy: tuple[torch.Tensor, torch.Tensor],
        seed: int,
        *,
        prepare: Callable[[list[Defense]], Sequence[Defense]] | None = None,
    ) -> TrainResult:
        """Train once and return the whole :class:`~securetrain.training.TrainResult` (report sections included).

        ``prepare(defenses)`` may look at the freshly built defenses and returns the list to train
        with (an audit adds its own observer there).
        """
        cfg = dataclasses.replace(self.train_config, seed=int(seed), progress=False)
        torch.manual_seed(int(seed))
        model = build_model(self.model_name, self.input_shape, self.num_classes, **self.model_kwargs)
        defenses: Sequence[Defense] = [build_defense(c) for c in self.defense_configs]
        if prepare is not None:
            defenses = prepare(list(defenses))
        return fit(model, train_xy, None, cfg, defenses, num_classes=self.num_classes, bounds=self.bounds)

    @property
    def private(self) -> bool:
        """Whether the recipe includes a differential-privacy defense."""
        return any(c.get("name") in PRIVACY_NAMES for c in self.defense_configs)

    @classmethod
    def from_config(cls, run_config: dict[str, Any]) -> TrainingRecipe:
        """The recipe of a run from its parsed ``config.json``. A model named there by import path is
        imported when the recipe trains (running its code): pass only configs you trust, or use
        :meth:`from_run`, which asks for the spec again."""
        try:
            d, m, t = run_config["data"], run_config["model"], run_config["train"]
        except (KeyError, TypeError) as exc:
            raise AttackError(f"a run config needs 'data', 'model' and 'train' sections; missing {exc}") from None
        source = m.get("source") or "registry"
        if source == "object" or (not m.get("zoo", True) and source != "import"):
            raise AttackError(
                f"cannot train shadow models for a run with a custom model ({m.get('name')}); train it with the "
                "model named by import path (--model package.module:Factory), or use attacks.membership.audit "
                "with your own train_fn"
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
    def from_run(cls, run_dir: str | os.PathLike[str], *, model: str | None = None) -> TrainingRecipe:
        """The recipe of the run in ``run_dir`` (``model``: its import-path model spec, passed again
        to allow importing it; see :class:`securetrain.rundir.RunDir`)."""
        from securetrain.rundir import RunDir

        run = RunDir.open(run_dir, model=model)
        run.check_specs_given(data=False)
        return cls.from_config(run.config)


__all__ = ["PRIVACY_NAMES", "TrainingRecipe", "build_defense", "register_defense_builder"]
