"""The defense protocol: how privacy and robustness plug into any training loop.

A :class:`Defense` may

* wrap the model, optimizer and data loader (``setup``; differential privacy does),
* transform the per-sample loss (``wrap_loss``; adversarial training does),
* veto the next step (``before_step``; a privacy budget does),
* observe each step and epoch and add figures to the epoch's history row
  (``epoch_metrics``), save and restore its state for resume,
* take over the data sharding and gradient combination of a distributed session
  (``distribute``),
* contribute sections to the run's report (``report``), and
* be written to and rebuilt from ``config.json`` (``config`` / ``from_config``).

What a defense must tell the others is an explicit attribute: ``forward_passes_per_step``
says how many hooked forward passes of the *same* samples its loss makes per step
(TRADES makes two), and :class:`DefenseStack` totals it for the privacy accounting.

Defenses compose: a :class:`DefenseStack` applies them in ``order`` (wrappers first),
chains their loss transforms, and asks each one before every step. The training loop
knows nothing about any particular defense; a hand-written loop uses the same objects
through :func:`securetrain.training.protect`.

Every defense class is registered in :data:`DEFENSES` under its ``name``; the built-in
ones are declared as entry points of the group ``securetrain.defenses`` (a third-party
package declares its own there, or calls ``DEFENSES.add``). Resume, the membership audit
and the command line rebuild defenses through this registry only.

Losses are *per-sample* (shape ``(batch,)``) so that a privacy defense can clip each
sample's gradient; the session averages them.

Example (a third-party defense, registered and rebuilt from its config):
    >>> from securetrain.training import DEFENSES, Defense, DefenseStack
    >>> class LabelNoise(Defense):
    ...     name = "label-noise-doc"
    ...     def __init__(self, rate: float = 0.1) -> None:
    ...         self.rate = rate
    ...     def config(self):
    ...         return {"name": self.name, "rate": self.rate}
    >>> with DEFENSES.temporarily(LabelNoise.name, LabelNoise):
    ...     rebuilt = Defense.from_config({"name": "label-noise-doc", "rate": 0.2})
    >>> type(rebuilt).__name__, rebuilt.rate
    ('LabelNoise', 0.2)
"""

from __future__ import annotations

import argparse
import inspect
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from securetrain.errors import ConfigurationError, UnknownNameError
from securetrain.registry import Registry

if TYPE_CHECKING:
    from securetrain.distributed.context import DistributedContext
    from securetrain.distributed.role import DistributedRole
    from securetrain.training.session import TrainingSession

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(model, x, y) -> per-sample losses of shape (batch,)``."""

EpochMetrics = dict[str, float | None]
"""Figures a defense adds to an epoch's history row (e.g. ``{"epsilon": 2.1}``)."""


def per_sample_cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The default per-sample loss: cross-entropy of ``model(x)`` against ``y``."""
    return F.cross_entropy(model(x), y, reduction="none")


class DefenseOption(Protocol):
    """A defense's command-line flags: adds them to ``securetrain train`` and builds the defense from them."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def build(self, args: argparse.Namespace) -> Defense | None: ...


class Defense:
    """Base class of every defense. Override only the hooks you need.

    ``order``: defenses with a lower order are set up first (wrappers of the model,
    such as differential privacy, use 0; loss transforms use 50).
    ``forward_passes_per_step``: hooked forward passes of the same samples that this
    defense's loss makes per training step (1 for an ordinary loss, 2 for TRADES).
    ``command_line``: the flags this defense adds to ``securetrain train`` (``None``: none).
    """

    name: ClassVar[str] = "defense"
    order: ClassVar[int] = 50
    forward_passes_per_step: ClassVar[int] = 1
    command_line: ClassVar[DefenseOption | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        legacy = cls.__dict__.get("privacy_forward_passes")
        if legacy is not None:
            warnings.warn(
                f"{cls.__name__}.privacy_forward_passes is deprecated; set forward_passes_per_step instead",
                DeprecationWarning,
                stacklevel=2,
            )
            cls.forward_passes_per_step = int(legacy)

    def setup(self, session: TrainingSession) -> None:
        """Wrap or inspect ``session.model``, ``session.optimizer``, ``session.train_loader``."""

    def wrap_loss(self, loss_fn: LossFn) -> LossFn:
        """Return the per-sample loss to train on, given the one below this defense."""
        return loss_fn

    def before_step(self, session: TrainingSession) -> bool:
        """Return False to stop training before the next step (the reason goes in ``session.stop_reason``)."""
        return True

    def after_step(self, session: TrainingSession) -> None:
        """Called after every optimizer step."""

    def end_epoch(self, session: TrainingSession) -> None:
        """Called after every epoch."""

    def epoch_metrics(self, session: TrainingSession) -> EpochMetrics:
        """Figures for the epoch's history row, asked once after :meth:`end_epoch`."""
        return {}

    def distribute(self, session: TrainingSession, ctx: DistributedContext) -> DistributedRole | None:
        """Take over data sharding / gradient combination for a distributed session, or return None.

        Called once, after ``setup``, when the session runs on several processes. A defense
        that replaced the loader's sampling (differential privacy) shards it here and says
        how its gradients must be combined.
        """
        return None

    def state_dict(self) -> dict[str, Any]:
        """State needed to resume (tensors allowed, nested dicts/lists of plain values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state returned by :meth:`state_dict`."""

    def config(self) -> dict[str, Any]:
        """The defense's settings, written to ``config.json``; ``from_config`` rebuilds it."""
        return {"name": self.name}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Defense:
        """A fresh defense equal in settings to the one whose :meth:`config` gave ``cfg``.

        Called on :class:`Defense` itself, the class is looked up in :data:`DEFENSES` by
        ``cfg["name"]``. The default passes every key except ``name`` to the constructor;
        a defense whose ``config()`` is not its constructor's keywords overrides this.
        """
        if not isinstance(cfg, Mapping) or not isinstance(cfg.get("name"), str):
            raise ConfigurationError(f"a defense config must be a mapping with a 'name', got {cfg!r}")
        if cls is Defense:
            return get_defense_class(cfg["name"]).from_config(cfg)
        settings = {k: v for k, v in cfg.items() if k != "name"}
        params = inspect.signature(cls).parameters
        unknown = sorted(k for k in settings if k not in params)
        if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            raise ConfigurationError(
                f"cannot rebuild defense {cfg['name']!r}: {cls.__name__} takes no setting(s) {', '.join(unknown)}; "
                f"override {cls.__name__}.from_config to map its config() back to the constructor"
            )
        return cls(**settings)

    def report(self, session: TrainingSession) -> dict[str, Any]:
        """Report sections (e.g. ``{"privacy": {...}}``) that this defense fills."""
        return {}

    def teardown(self, session: TrainingSession) -> None:
        """Undo anything ``setup`` attached that must not outlive training."""


DEFENSES: Registry[type[Defense]] = Registry("defense", entry_point_group="securetrain.defenses")
"""Defense classes by ``Defense.name``; filled from the ``securetrain.defenses`` entry points."""


def get_defense_options() -> list[DefenseOption]:
    """The command-line options of every registered defense, in the defenses' ``order``.

    Example:
        >>> len(get_defense_options()) >= 2   # differential privacy and adversarial training
        True
    """
    classes = sorted((get_defense_class(name) for name in DEFENSES.names()), key=lambda c: (c.order, c.name))
    options: list[DefenseOption] = []
    for cls in classes:
        option = cls.command_line
        if option is not None and all(option is not o for o in options):
            options.append(option)
    return options


def get_defense_class(name: str) -> type[Defense]:
    """The registered defense class called ``name``.

    Raises :class:`~securetrain.errors.UnknownNameError` naming the registered defenses
    and how to add one.

    Example:
        >>> get_defense_class("privacy").__name__
        'DifferentialPrivacy'
    """
    try:
        cls = DEFENSES.get(name)
    except UnknownNameError as exc:
        raise UnknownNameError(
            "defense (register it with securetrain.training.DEFENSES.add or the 'securetrain.defenses' entry-point group)",
            name,
            exc.choices,
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Defense)):
        raise ConfigurationError(f"the registered defense {name!r} is {cls!r}, not a Defense subclass")
    return cls


class DefenseStack:
    """An ordered composition of defenses.

    Example:
        >>> from securetrain.training import DefenseStack
        >>> stack = DefenseStack.from_config([{"name": "adversarial", "method": "fgsm", "epsilon": 0.1}])
        >>> [d.name for d in stack], stack.forward_passes_per_step
        (['adversarial'], 1)
        >>> DefenseStack.from_config(stack.config()).config() == stack.config()
        True
    """

    def __init__(self, defenses: Sequence[Defense]) -> None:
        for d in defenses:
            if not isinstance(d, Defense):
                raise TypeError(f"{d!r} is not a securetrain Defense")
        self.defenses: list[Defense] = sorted(defenses, key=lambda d: d.order)
        names = [d.name for d in self.defenses]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigurationError(f"each defense may be used once; repeated: {', '.join(sorted(dupes))}")

    @classmethod
    def from_config(cls, configs: Sequence[Mapping[str, Any]]) -> DefenseStack:
        """Rebuild every defense of a ``config()`` list (as stored in ``config.json``)."""
        if isinstance(configs, Mapping) or not isinstance(configs, Sequence):
            raise ConfigurationError(f"a defense stack config must be a list of defense configs, got {configs!r}")
        return cls([Defense.from_config(c) for c in configs])

    def __iter__(self) -> Iterator[Defense]:
        return iter(self.defenses)

    def __len__(self) -> int:
        return len(self.defenses)

    @property
    def forward_passes_per_step(self) -> int:
        """Hooked forward passes of the same samples per step, over all defenses (at least 1)."""
        return 1 + sum(max(int(d.forward_passes_per_step), 1) - 1 for d in self.defenses)

    def setup(self, session: TrainingSession) -> None:
        for d in self.defenses:
            d.setup(session)

    def loss_fn(self, base: LossFn = per_sample_cross_entropy) -> LossFn:
        fn = base
        # Wrapping in reverse order makes the lowest-order defense the outermost.
        for d in reversed(self.defenses):
            fn = d.wrap_loss(fn)
        return fn

    def before_step(self, session: TrainingSession) -> bool:
        return all(d.before_step(session) for d in self.defenses)

    def after_step(self, session: TrainingSession) -> None:
        for d in self.defenses:
            d.after_step(session)

    def end_epoch(self, session: TrainingSession) -> EpochMetrics:
        """Every defense's ``end_epoch``, then their ``epoch_metrics`` merged."""
        metrics: EpochMetrics = {}
        for d in self.defenses:
            d.end_epoch(session)
        for d in self.defenses:
            metrics.update(d.epoch_metrics(session))
        return metrics

    def distribute(self, session: TrainingSession, ctx: DistributedContext) -> DistributedRole | None:
        """The one defense role of a distributed session (two defenses may not both claim one)."""
        roles = [(d, role) for d in self.defenses if (role := d.distribute(session, ctx)) is not None]
        if len(roles) > 1:
            for _, role in roles:
                role.undo()
            raise ConfigurationError(
                "defenses " + " and ".join(repr(d.name) for d, _ in roles) + " both take over distributed "
                "sampling; at most one defense may shard the data"
            )
        return roles[0][1] if roles else None

    def state_dict(self) -> dict[str, Any]:
        return {d.name: d.state_dict() for d in self.defenses}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for d in self.defenses:
            if d.name in state:
                d.load_state_dict(state[d.name])

    def config(self) -> list[dict[str, Any]]:
        return [d.config() for d in self.defenses]

    def report(self, session: TrainingSession) -> dict[str, Any]:
        sections: dict[str, Any] = {}
        for d in self.defenses:
            sections.update(d.report(session))
        return sections

    def teardown(self, session: TrainingSession) -> None:
        for d in reversed(self.defenses):
            d.teardown(session)


__all__ = [
    "DEFENSES",
    "Defense",
    "DefenseOption",
    "DefenseStack",
    "EpochMetrics",
    "LossFn",
    "get_defense_class",
    "get_defense_options",
    "per_sample_cross_entropy",
]
