"""One training run's mutable state, shared by the loop and the defenses, and :func:`protect`.

A :class:`TrainingSession` carries the (possibly wrapped) model, optimizer and loader,
the frozen :class:`~securetrain.training.RunPlan`, the step and epoch counters, the
history and the notes. Everything defenses tell each other goes through typed fields
and hooks (see :mod:`securetrain.training.defense`); ``extras`` is left to the user's
own data and is never read by the library.

In a hand-written loop, :func:`protect` applies defenses to the user's own objects and
returns a session to use as a context manager: leaving the ``with`` block removes every
hook even when the loop raises.

Example (a hand-written loop, no defense):
    >>> import torch
    >>> from torch import nn
    >>> from securetrain.training import protect
    >>> model = nn.Linear(4, 2)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> loader = torch.utils.data.DataLoader(
    ...     torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))), batch_size=4)
    >>> with protect(model, opt, loader, defenses=[]) as session:
    ...     for x, y in session.train_loader:
    ...         if not session.can_step():
    ...             break
    ...         session.optimizer.zero_grad()
    ...         session.loss(x, y).backward()
    ...         session.step()
    ...     row = session.end_epoch()
    >>> session.step_count, row["epoch"], session.report()
    (2, 1, {})
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from securetrain.errors import ConfigurationError
from securetrain.modes import unwrap
from securetrain.training.defense import Defense, DefenseStack, EpochMetrics, LossFn, per_sample_cross_entropy
from securetrain.training.plan import RunPlan

log = logging.getLogger("securetrain")


class Callback(Protocol):
    """Observer of a training run (progress, logging, interruption in tests)."""

    def on_epoch_end(self, session: TrainingSession) -> None: ...


@dataclass
class TrainingSession:
    """The mutable state of one training run, shared by the loop and the defenses.

    Attributes:
        model, optimizer, train_loader: the objects to train with (a defense may have
            wrapped them in ``setup``).
        defenses: the :class:`DefenseStack`.
        plan: what the run is planned to be (epochs, bounds, data); frozen.
        generator: the loop's data-order generator, if it has one.
        declared_forward_passes: hooked forward passes of the same samples per step that a
            hand-written loop declared (:meth:`declare_forward_passes`); defenses declare
            theirs with ``Defense.forward_passes_per_step``.
        last_batch_size: samples in the last batch passed to :meth:`loss`.
        extras: free for the user's own data; never read by securetrain.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    train_loader: Iterable[Any]
    defenses: DefenseStack = field(default_factory=lambda: DefenseStack([]))
    loss_fn: LossFn = per_sample_cross_entropy
    plan: RunPlan = field(default_factory=RunPlan)
    generator: torch.Generator | None = None
    epoch: int = 0
    step_count: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    declared_forward_passes: int = 1
    last_batch_size: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    _managed: bool = field(default=False, repr=False)
    _entered: bool = field(default=False, repr=False)
    _warned: bool = field(default=False, repr=False)
    _torn_down: bool = field(default=False, repr=False)
    _epoch_steps: int = field(default=0, repr=False)

    # ------------------------------------------------------------------ facts

    @property
    def plain_model(self) -> nn.Module:
        """The user's module without any wrapper (Opacus, DDP)."""
        return unwrap(self.model)

    @property
    def dataset_size(self) -> int | None:
        """Number of training samples, from the plan."""
        return self.plan.dataset_size

    @property
    def forward_passes_per_step(self) -> int:
        """Hooked forward passes of the same samples per step: the defenses' total or the loop's declaration."""
        return max(self.defenses.forward_passes_per_step, int(self.declared_forward_passes))

    def declare_forward_passes(self, passes: int) -> None:
        """Declare that each step of this hand-written loop makes ``passes`` hooked passes of the same samples."""
        if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
            raise ConfigurationError(f"passes must be an integer >= 1, got {passes!r}")
        self.declared_forward_passes = int(passes)

    # ------------------------------------------------------------------ the loop's calls

    def loss(self, x: torch.Tensor | Mapping[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of the defended per-sample loss.

        ``x`` is a batch of inputs, or a mapping of batches (keyword inputs such as
        ``input_ids`` and ``attention_mask``, for a loss like
        :func:`securetrain.hf.model_output_loss` that passes them on).
        """
        self._check_managed()
        losses = self.loss_fn(self.model, x, y)  # type: ignore[arg-type]
        batch = _batch_len(x, y)
        if losses.dim() != 1 or losses.shape[0] != batch:
            raise ValueError(
                f"a per-sample loss must have shape ({batch},), got {tuple(losses.shape)}; use reduction='none'"
            )
        self.last_batch_size = int(losses.shape[0])
        return losses.sum() / max(int(losses.shape[0]), 1)

    def can_step(self) -> bool:
        """Ask every defense whether one more step is allowed."""
        self._check_managed()
        if self.stop_reason is not None:
            return False
        return self.defenses.before_step(self)

    def step(self) -> None:
        """``optimizer.step()`` followed by every defense's ``after_step``."""
        self.optimizer.step()
        self.step_count += 1
        self._epoch_steps += 1
        self.defenses.after_step(self)

    def end_epoch(self, **figures: float | None) -> dict[str, Any]:
        """Close an epoch of a hand-written loop: every defense's ``end_epoch``, one history row.

        ``figures`` (e.g. ``train_loss=0.3``) join the row with the defenses' metrics. Returns
        the row (also appended to ``history``).
        """
        row: dict[str, Any] = {"epoch": self.epoch + 1, "steps": self.step_count}
        row.update(self.collect_epoch_metrics())
        row.update(figures)
        self.history.append(row)
        self.epoch += 1
        self._epoch_steps = 0
        return row

    def collect_epoch_metrics(self) -> EpochMetrics:
        """Run the defenses' ``end_epoch`` hooks and return their merged ``epoch_metrics``."""
        return self.defenses.end_epoch(self)

    def report(self) -> dict[str, Any]:
        """The report sections of every defense (e.g. ``{"privacy": {...}}``)."""
        return self.defenses.report(self)

    def note(self, message: str) -> None:
        """Record a message for the report (and log it)."""
        log.warning(message)
        self.notes.append(message)

    def teardown(self) -> None:
        """Remove what the defenses attached (hooks, wrappers); safe to call twice."""
        if not self._torn_down:
            self._torn_down = True
            self.defenses.teardown(self)

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> TrainingSession:
        self._entered = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.teardown()

    def _check_managed(self) -> None:
        if self._managed and not self._entered and not self._warned:
            self._warned = True
            warnings.warn(
                "using the session returned by protect() outside a 'with' block is deprecated and will stop "
                "working in the next release; write 'with protect(...) as session:' so the defenses' hooks are "
                "removed even when the loop raises",
                DeprecationWarning,
                stacklevel=3,
            )


def _batch_len(x: torch.Tensor | Mapping[str, torch.Tensor], y: torch.Tensor) -> int:
    """Samples in a batch: the first dimension of ``x``, or of the first tensor of a mapping (else of ``y``)."""
    if isinstance(x, Mapping):
        first = next((v for v in x.values() if isinstance(v, torch.Tensor) and v.dim() > 0), y)
        return int(first.shape[0])
    return int(x.shape[0])


def _dataset_size(train_loader: Iterable[Any]) -> int | None:
    if isinstance(train_loader, DataLoader) and isinstance(train_loader.dataset, Sized):
        return len(train_loader.dataset)
    return None


def _batch_size(train_loader: Iterable[Any]) -> int | None:
    if isinstance(train_loader, DataLoader):
        if train_loader.batch_size is not None:
            return int(train_loader.batch_size)
        batch_sampler = train_loader.batch_sampler
        size = batch_sampler.batch_size if isinstance(batch_sampler, torch.utils.data.BatchSampler) else None
        return int(size) if size else None
    return None


def protect(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: Iterable[Any],
    defenses: Sequence[Defense] = (),
    loss_fn: LossFn = per_sample_cross_entropy,
    dataset_size: int | None = None,
    *,
    plan: RunPlan | None = None,
    generator: torch.Generator | None = None,
) -> TrainingSession:
    """Apply ``defenses`` to a user's own model, optimizer and loader; use the result in ``with``.

    Returns a :class:`TrainingSession` whose ``model``, ``optimizer`` and ``train_loader``
    are the (possibly wrapped) objects to train with; use ``session.loss(x, y)``,
    ``session.can_step()``, ``session.step()``, ``session.end_epoch()`` in the loop and
    ``session.report()`` for the report sections. Leaving the ``with`` block tears the
    defenses down (their hooks removed) even when the loop raises.

    ``plan`` tells the defenses what the run is (planned epochs, input bounds); by
    default the data set size and batch size are read from a ``DataLoader``
    (``dataset_size`` overrides the former).
    """
    base = plan if plan is not None else RunPlan()
    size = dataset_size if dataset_size is not None else base.dataset_size or _dataset_size(train_loader)
    batch = base.batch_size or _batch_size(train_loader)
    plan = replace(base, dataset_size=size, batch_size=batch)
    stack = DefenseStack(defenses)
    session = TrainingSession(
        model=model, optimizer=optimizer, train_loader=train_loader, defenses=stack, plan=plan, generator=generator
    )
    session._managed = True
    try:
        stack.setup(session)
    except BaseException:
        session.teardown()  # whatever the defenses set up before the failure is removed
        raise
    session.loss_fn = stack.loss_fn(loss_fn)
    return session


__all__ = ["Callback", "TrainingSession", "protect"]
