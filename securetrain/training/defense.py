"""The defense protocol: how privacy and robustness plug into any training loop.

A :class:`Defense` may

* wrap the model, optimizer and data loader (``setup``; differential privacy does),
* transform the per-sample loss (``wrap_loss``; adversarial training does),
* veto the next step (``before_step``; a privacy budget does),
* observe each step and epoch, save and restore its state for resume, and
* contribute sections to the run's report (``report``).

Defenses compose: a :class:`DefenseStack` applies them in ``order`` (wrappers first),
chains their loss transforms, and asks each one before every step. The training loop
knows nothing about any particular defense; a hand-written loop uses the same objects
through :func:`protect`.

Losses are *per-sample* (shape ``(batch,)``) so that a privacy defense can clip each
sample's gradient; the session averages them.

Example (a hand-written loop, no defense):
    >>> import torch
    >>> from torch import nn
    >>> from securetrain.training import protect
    >>> model = nn.Linear(4, 2)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> loader = torch.utils.data.DataLoader(
    ...     torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))), batch_size=4)
    >>> session = protect(model, opt, loader, defenses=[])
    >>> for x, y in session.train_loader:
    ...     if not session.can_step():
    ...         break
    ...     session.optimizer.zero_grad()
    ...     session.loss(x, y).backward()
    ...     session.step()
    >>> session.step_count
    2
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from securetrain.modes import unwrap

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(model, x, y) -> per-sample losses of shape (batch,)``."""


def per_sample_cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The default per-sample loss: cross-entropy of ``model(x)`` against ``y``."""
    return F.cross_entropy(model(x), y, reduction="none")


class Defense:
    """Base class of every defense. Override only the hooks you need.

    ``order``: defenses with a lower order are set up first (wrappers of the model,
    such as differential privacy, use 0; loss transforms use 50).
    """

    name: ClassVar[str] = "defense"
    order: ClassVar[int] = 50

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

    def state_dict(self) -> dict[str, Any]:
        """State needed to resume (tensors allowed, nested dicts/lists of plain values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state returned by :meth:`state_dict`."""

    def config(self) -> dict[str, Any]:
        """The defense's settings, written to ``config.json``."""
        return {"name": self.name}

    def report(self, session: TrainingSession) -> dict[str, Any]:
        """Report sections (e.g. ``{"privacy": {...}}``) that this defense fills."""
        return {}

    def teardown(self, session: TrainingSession) -> None:
        """Undo anything ``setup`` attached that must not outlive training."""


class Callback(Protocol):
    """Observer of a training run (progress, logging, interruption in tests)."""

    def on_epoch_end(self, session: TrainingSession) -> None: ...


@dataclass
class TrainingSession:
    """The mutable state of one training run, shared by the loop and the defenses."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    train_loader: Iterable[Any]
    defenses: DefenseStack = field(default_factory=lambda: DefenseStack([]))
    loss_fn: LossFn = per_sample_cross_entropy
    dataset_size: int | None = None
    generator: torch.Generator | None = None
    epoch: int = 0
    step_count: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    forward_passes: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def plain_model(self) -> nn.Module:
        """The user's module without any wrapper (Opacus, DDP)."""
        return unwrap(self.model)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of the defended per-sample loss."""
        losses = self.loss_fn(self.model, x, y)
        if losses.dim() != 1 or losses.shape[0] != x.shape[0]:
            raise ValueError(
                f"a per-sample loss must have shape ({x.shape[0]},), got {tuple(losses.shape)}; "
                "use reduction='none'"
            )
        self.extras["last_losses"] = losses.detach()
        return losses.sum() / max(int(losses.shape[0]), 1)

    def can_step(self) -> bool:
        """Ask every defense whether one more step is allowed."""
        if self.stop_reason is not None:
            return False
        return self.defenses.before_step(self)

    def step(self) -> None:
        """``optimizer.step()`` followed by every defense's ``after_step``."""
        self.optimizer.step()
        self.step_count += 1
        self.defenses.after_step(self)

    def note(self, message: str) -> None:
        """Record a message for the report (and log it)."""
        import logging

        logging.getLogger("securetrain").warning(message)
        self.notes.append(message)


class DefenseStack:
    """An ordered composition of defenses."""

    def __init__(self, defenses: Sequence[Defense]) -> None:
        for d in defenses:
            if not isinstance(d, Defense):
                raise TypeError(f"{d!r} is not a securetrain Defense")
        self.defenses: list[Defense] = sorted(defenses, key=lambda d: d.order)
        names = [d.name for d in self.defenses]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            from securetrain.errors import ConfigurationError

            raise ConfigurationError(f"each defense may be used once; repeated: {', '.join(sorted(dupes))}")

    def __iter__(self):
        return iter(self.defenses)

    def __len__(self) -> int:
        return len(self.defenses)

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

    def end_epoch(self, session: TrainingSession) -> None:
        for d in self.defenses:
            d.end_epoch(session)

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


def protect(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: Iterable[Any],
    defenses: Sequence[Defense] = (),
    loss_fn: LossFn = per_sample_cross_entropy,
    dataset_size: int | None = None,
) -> TrainingSession:
    """Apply ``defenses`` to a user's own model, optimizer and loader.

    Returns a :class:`TrainingSession` whose ``model``, ``optimizer`` and ``train_loader``
    are the (possibly wrapped) objects to train with; use ``session.loss(x, y)``,
    ``session.can_step()`` and ``session.step()`` in the loop, and
    ``session.defenses.report(session)`` for the report sections.
    """
    if dataset_size is None:
        dataset = getattr(train_loader, "dataset", None)
        dataset_size = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else None
    stack = DefenseStack(defenses)
    session = TrainingSession(
        model=model, optimizer=optimizer, train_loader=train_loader, defenses=stack, dataset_size=dataset_size
    )
    stack.setup(session)
    session.loss_fn = stack.loss_fn(loss_fn)
    return session
