"""``Recipe``: a defense's measured settings and the training settings they were measured with.

One type for every family of defenses: :func:`defenses.privacy.recommended` returns one
for private training, :func:`defenses.adversarial.recommended_adversarial` for adversarial
training. :meth:`Recipe.defense` builds a fresh defense through :data:`RECIPE_BUILDERS`
(one builder per defense family, a registry like every other extension point), and
:meth:`Recipe.train_config` a :class:`~securetrain.training.TrainConfig`.

Example:
    >>> from defenses.recipe import Recipe
    >>> r = Recipe("dp-sgd", 3.0, {"max_grad_norm": 0.1}, {"data": "digits", "epochs": 2}, defense_name="privacy")
    >>> d = r.defense()
    >>> type(d).__name__, d.target_epsilon, d.max_grad_norm
    ('DifferentialPrivacy', 3.0, 0.1)
    >>> r.train_config(epochs=1).epochs
    1
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from securetrain.registry import Registry

if TYPE_CHECKING:
    from securetrain.training import Defense, TrainConfig


@dataclass(frozen=True)
class Recipe:
    """A defense method, its epsilon and settings, and the training settings it was measured with.

    ``epsilon`` is the defense's own: the privacy budget for ``defense_name="privacy"``,
    the L-infinity radius for adversarial training. ``settings`` are the defense's other
    keyword arguments, ``train`` the :class:`~securetrain.training.TrainConfig` keyword
    arguments, ``measured`` a line on what was measured with it (and where).
    """

    method: str
    epsilon: float
    settings: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    defense_name: str = "adversarial"
    measured: str = ""

    def defense(self) -> Defense:
        """A fresh defense with these settings."""
        return RECIPE_BUILDERS.get(self.defense_name)(self)

    def train_config(self, **overrides: Any) -> TrainConfig:
        """A :class:`securetrain.training.TrainConfig` with the recipe's training settings."""
        from securetrain.training import TrainConfig

        return TrainConfig(**{**self.train, **overrides})

    def describe(self) -> str:
        """One line: the training settings and the defense's, e.g. for the command line."""
        parts = [f"{k}={v}" for k, v in self.train.items() if k != "data"]
        parts += [f"{k}={v}" for k, v in self.settings.items()]
        return f"{self.method} at epsilon {self.epsilon:g}: " + ", ".join(parts)


RecipeBuilder = Callable[[Recipe], "Defense"]
RECIPE_BUILDERS: Registry[RecipeBuilder] = Registry("recipe defense family")
"""How :meth:`Recipe.defense` builds each family's defense, by ``Recipe.defense_name``."""


@RECIPE_BUILDERS.register("privacy")
def _privacy(recipe: Recipe) -> Defense:
    from defenses.privacy.defense import DifferentialPrivacy

    return DifferentialPrivacy(recipe.epsilon, **recipe.settings)


@RECIPE_BUILDERS.register("adversarial")
def _adversarial(recipe: Recipe) -> Defense:
    from defenses.adversarial.registry import make_adversarial

    return make_adversarial(recipe.method, recipe.epsilon, **recipe.settings)


__all__ = ["RECIPE_BUILDERS", "Recipe", "RecipeBuilder"]
