"""``DifferentialPrivacy``: DP-SGD as a securetrain defense, accounted, enforced, resumable, checked.

Plugged into the training loop (``securetrain.runs.train(..., defenses=[...])``, the
``--dp`` flags of ``securetrain train``) or into a hand-written loop
(``with securetrain.training.protect(...) as session:``), it

* makes the model compatible (BatchNorm -> GroupNorm, LSTM -> DPLSTM, ...; see
  :mod:`defenses.privacy.compat`) and picks a verified per-sample gradient engine
  (:mod:`defenses.privacy.modes`),
* replaces the loader by Poisson sampling at rate ``batch_size / n`` (the loader's batch
  size is the expected logical batch; ``physical_batch_size`` bounds memory;
  :mod:`defenses.privacy.sampling`),
* clips, noises and averages per-sample gradients (:mod:`defenses.privacy.optimizer`),
* calibrates the noise to a target ``epsilon`` for the planned number of steps, or uses a
  given ``noise_multiplier`` (:mod:`defenses.privacy.schedule`), and never takes a step
  that would spend more than the target or ``max_epsilon``
  (:mod:`defenses.privacy.budget`): training stops at the last step that fits and says so,
* saves the accountant history and both random generators with every checkpoint, so a
  resumed run continues the same epsilon,
* checks the accounting assumptions while training (:mod:`defenses.privacy.validity`) and
  reports the epsilon as ``valid: false`` with the reason when one breaks.

The settings are a frozen :class:`~defenses.privacy.config.PrivacyConfig` (``settings``);
``Defense.from_config(dp.config())`` rebuilds an equal defense.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from securetrain.training import protect
    >>> from defenses.privacy import DifferentialPrivacy
    >>> data = torch.utils.data.TensorDataset(torch.randn(256, 4), torch.randint(0, 2, (256,)))
    >>> loader = torch.utils.data.DataLoader(data, batch_size=32)
    >>> model = nn.Sequential(nn.Linear(4, 2))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> dp = DifferentialPrivacy(epsilon=2.0, delta=1e-5, epochs=1, accountant="rdp")
    >>> with protect(model, opt, loader, [dp]) as session:
    ...     for x, y in session.train_loader:
    ...         if not session.can_step():
    ...             break
    ...         session.optimizer.zero_grad()
    ...         session.loss(x, y).backward()
    ...         session.step()
    >>> privacy = session.report()["privacy"]
    >>> privacy["epsilon"] <= 2.0, privacy["valid"], privacy["steps"]
    (True, True, 8)
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence, Sized
from typing import Any, ClassVar, cast

import torch
from torch import nn
from torch.utils.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)

from defenses.privacy.augment import default_augmentation, make_augmentation
from defenses.privacy.augmult import VIEWS_ORDER, AugmentedViews
from defenses.privacy.budget import HistoryEntry, PrivacyBudget
from defenses.privacy.cli import OPTION as PRIVACY_OPTION
from defenses.privacy.compat import make_compatible, rebuild_optimizer
from defenses.privacy.config import PrivacyConfig
from defenses.privacy.ema import ParameterAverage
from defenses.privacy.engines.base import Engine
from defenses.privacy.memory import MemoryFit, measure_step_memory
from defenses.privacy.modes import AUTO_ORDER, EngineChoice, select_engine
from defenses.privacy.optimizer import DPSGDOptimizer
from defenses.privacy.report import privacy_section
from defenses.privacy.sampling import CountingLoader, PoissonBatches
from defenses.privacy.schedule import Schedule, calibrate, plan_schedule
from defenses.privacy.validity import ValidityMonitor, engine_tap
from securetrain.distributed.context import DistributedContext
from securetrain.distributed.role import DistributedRole
from securetrain.errors import CheckpointError, PrivacyError
from securetrain.training import (
    Defense,
    DefenseOption,
    EpochMetrics,
    GradientCanaries,
    LossFn,
    PrivateOptimizer,
    TrainingSession,
)

log = logging.getLogger("securetrain")

EVAL_MODE = (
    "the model is in eval mode during private training: call model.train() before the training loop (the "
    "per-sample gradient checks run in training mode only, and dropout or similar layers behave differently)"
)
"""The warning (or, for engines that need training mode, the :class:`PrivacyError`) for a model left in eval mode."""

EVAL_MODE_FAILS = frozenset({"hooks", "functorch"})
"""Engines that cannot compute per-sample gradients of a model in eval mode (Opacus's hooks capture nothing)."""


class DifferentialPrivacy(Defense):
    """DP-SGD through Opacus with budgets accounted, enforced, resumed and reported honestly.

    Args:
        epsilon: target epsilon. Without ``noise_multiplier`` the noise is calibrated so that
            the planned schedule spends at most this; with it, this is a budget cap.
        delta: target delta, in (0, 1); default ``min(1e-5, 0.1 / n)``. A delta of ``1/n``
            or more is reported as a warning (it allows leaking a whole record).
        max_grad_norm: per-sample clipping norm ``C`` (> 0).
        noise_multiplier: noise standard deviation over ``C``; fixes the noise instead of
            calibrating it (0 means no privacy and is reported as such).
        accountant: ``"prv"`` (default, tightest), ``"rdp"`` or ``"gdp"`` (approximate).
        max_epsilon: hard cap; training stops before a step that would spend more.
        poisson_sampling: replace the loader's sampling by Poisson sampling (default). With
            ``False`` the loader is used as it is and the epsilon is reported as not valid.
        physical_batch_size: split Poisson batches into chunks of at most this size.
        max_memory_mb: memory budget (MB) of one step, for when ``physical_batch_size`` is not
            given: the physical batch is the largest whose measured peak step memory fits
            (:mod:`defenses.privacy.memory`); recorded in the report and the checkpoint.
        grad_sample_mode: ``"auto"`` or an engine name (``bk``, ``ghost``, ``hooks``,
            ``functorch``, ``ew``, ``vmap``).
        epochs / steps: the planned length, for hand-written loops (the training loop
            tells it); needed to calibrate the noise to a target epsilon.
        batch_size: expected logical batch size when the loader does not have one.
        seed: seed of the sampler and noise generators (default: from the loop's seed, or
            drawn from torch's global generator).
        fix_model: replace incompatible layers automatically (else refuse them).
        ema_decay: keep an exponential moving average of the parameters (warm-up
            ``min(decay, (1 + t) / (10 + t))``) and give the model the average when training
            ends (:mod:`defenses.privacy.ema`). Post-processing of the released iterates: the
            epsilon is the same; the per-epoch test figures are those of the raw iterates.
        augmult: augmentation multiplicity (De et al. 2022): train on ``augmult`` augmented
            views of every sample and average their gradients into the sample's gradient
            before clipping (:mod:`defenses.privacy.augmult`). The sample stays the privacy
            unit: sample rate, noise and epsilon are those of ``augmult=1``; a step costs at
            least ``augmult`` times the compute. ``physical_batch_size`` still counts samples.
        augment: the registered augmentation of the views
            (:data:`~defenses.privacy.augment.AUGMENTATIONS`); default: a random translation
            sized to the images (``shift1`` for 8x8, ``shift2`` for 28x28). Data that is not
            images is refused unless one is named. Given with ``augmult=1``, each sample is
            trained on one augmented view.

    The settings are validated once into :attr:`settings` (a frozen
    :class:`~defenses.privacy.config.PrivacyConfig`); after ``setup`` the run's
    :attr:`schedule` and :attr:`budget` say how it samples and what it has spent.
    """

    name: ClassVar[str] = "privacy"
    order: ClassVar[int] = 0
    command_line: ClassVar[DefenseOption | None] = PRIVACY_OPTION
    optimizer_class: ClassVar[type[DPSGDOptimizer]] = DPSGDOptimizer
    """The private optimizer built in ``setup`` (a subclass may swap in its own)."""

    def __init__(
        self,
        epsilon: float | None = None,
        *,
        delta: float | None = None,
        max_grad_norm: float = 1.0,
        noise_multiplier: float | None = None,
        accountant: str = "prv",
        max_epsilon: float | None = None,
        poisson_sampling: bool = True,
        physical_batch_size: int | None = None,
        grad_sample_mode: str = "auto",
        epochs: int | None = None,
        steps: int | None = None,
        batch_size: int | None = None,
        seed: int | None = None,
        fix_model: bool = True,
        ema_decay: float | None = None,
        max_memory_mb: float | None = None,
        augmult: int = 1,
        augment: str | None = None,
    ) -> None:
        self.settings = PrivacyConfig(
            epsilon=epsilon,
            delta=delta,
            max_grad_norm=max_grad_norm,
            noise_multiplier=noise_multiplier,
            accountant=accountant,
            max_epsilon=max_epsilon,
            poisson_sampling=poisson_sampling,
            physical_batch_size=physical_batch_size,
            grad_sample_mode=grad_sample_mode,
            epochs=epochs,
            steps=steps,
            batch_size=batch_size,
            seed=seed,
            fix_model=fix_model,
            ema_decay=ema_decay,
            max_memory_mb=max_memory_mb,
            augmult=augmult,
            augment=augment,
        )
        self.gradient_canaries: GradientCanaries | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        self.schedule: Schedule | None = None
        self.budget: PrivacyBudget | None = None
        self.epoch_points: list[list[float]] = []
        self.monitor = ValidityMonitor()
        self.notes: list[str] = []
        self.model_changes: list[str] = []
        self.engine_choice: EngineChoice | None = None
        self.optimizer: DPSGDOptimizer | None = None
        self.plain_model: nn.Module | None = None
        self.original_optimizer: torch.optim.Optimizer | None = None
        self.loader: PoissonBatches | CountingLoader | None = None
        self.sampler_generator: torch.Generator | None = None
        self.noise_generator: torch.Generator | None = None
        self.stopped_by_budget = False
        self._declared_passes = 1
        self._session_passes = 1
        self._session: TrainingSession | None = None
        self._eval_warned = False
        self.average: ParameterAverage | None = None
        self._averaged_steps = 0
        self.memory_fit: MemoryFit | None = None
        self._fitted_physical_batch: int | None = None
        self.views: AugmentedViews | None = None
        self.augment_name: str | None = None
        self.augment_generator: torch.Generator | None = None

    # ------------------------------------------------------------------ settings (read-only)

    @property
    def target_epsilon(self) -> float | None:
        """The target epsilon, as given."""
        return self.settings.epsilon

    @property
    def max_epsilon(self) -> float | None:
        """The hard cap on the epsilon, as given."""
        return self.settings.max_epsilon

    @property
    def max_grad_norm(self) -> float:
        """The per-sample clipping norm ``C``."""
        return self.settings.max_grad_norm

    @property
    def accountant(self) -> str:
        """The accountant's name (``prv``, ``rdp`` or ``gdp``)."""
        return self.settings.accountant

    @property
    def poisson_sampling(self) -> bool:
        """Whether the loader's sampling is replaced by Poisson sampling."""
        return self.settings.poisson_sampling

    @property
    def physical_batch_size(self) -> int | None:
        """The largest physical batch: given, or chosen from ``max_memory_mb`` in setup (``None``: not split)."""
        if self.settings.physical_batch_size is None and self._fitted_physical_batch is not None:
            return self._fitted_physical_batch
        return self.settings.physical_batch_size

    @property
    def max_memory_mb(self) -> float | None:
        """The memory budget of a step that picks the physical batch, as given."""
        return self.settings.max_memory_mb

    @property
    def grad_sample_mode(self) -> str:
        """The requested per-sample gradient engine (``auto`` or a name)."""
        return self.settings.grad_sample_mode

    @property
    def epochs(self) -> int | None:
        """The planned epochs, as given."""
        return self.settings.epochs

    @property
    def steps(self) -> int | None:
        """The planned steps, as given."""
        return self.settings.steps

    @property
    def seed(self) -> int | None:
        """The seed of the generators, as given."""
        return self.settings.seed

    @property
    def fix_model(self) -> bool:
        """Whether incompatible layers are replaced."""
        return self.settings.fix_model

    @property
    def budget_cap(self) -> float | None:
        """The epsilon no step may exceed: the smaller of the target and ``max_epsilon``."""
        return self.settings.budget_cap

    # ------------------------------------------------------------------ the run (after setup)

    @property
    def noise_multiplier(self) -> float | None:
        """The noise multiplier in use (given or calibrated; ``None`` before setup)."""
        return self.budget.noise_multiplier if self.budget is not None else None

    @property
    def sample_rate(self) -> float | None:
        """The Poisson sample rate ``batch_size / n`` (``None`` before setup)."""
        return self.schedule.sample_rate if self.schedule is not None else None

    @property
    def delta(self) -> float | None:
        """The delta in use (given or from the data set size; ``None`` before setup)."""
        return self.schedule.delta if self.schedule is not None else None

    @property
    def dataset_size(self) -> int | None:
        """Training samples (``None`` before setup)."""
        return self.schedule.dataset_size if self.schedule is not None else None

    @property
    def expected_batch_size(self) -> int | None:
        """The expected logical batch (``None`` before setup)."""
        return self.schedule.expected_batch_size if self.schedule is not None else None

    @property
    def planned_steps(self) -> int | None:
        """The planned number of logical steps, if known."""
        return self.schedule.planned_steps if self.schedule is not None else None

    @property
    def budget_steps(self) -> int | None:
        """The steps the budget allows at the schedule's noise and rate (``None``: no cap)."""
        return self.budget.budget_steps if self.budget is not None else None

    @property
    def history(self) -> tuple[HistoryEntry, ...]:
        """The accountant's history: ``(noise_multiplier, sample_rate, steps)`` records."""
        return self.budget.history if self.budget is not None else ()

    @property
    def steps_taken(self) -> int:
        """Noisy (logical) steps taken so far."""
        return self.budget.steps if self.budget is not None else 0

    @property
    def engine(self) -> Engine | None:
        """The per-sample gradient engine in use."""
        return self.engine_choice.engine if self.engine_choice is not None else None

    @property
    def engine_name(self) -> str | None:
        """The name of the engine in use."""
        return self.engine_choice.name if self.engine_choice is not None else None

    @property
    def engine_tried(self) -> dict[str, str]:
        """Engines ``auto`` skipped, with the reason."""
        return dict(self.engine_choice.tried) if self.engine_choice is not None else {}

    def epsilon_spent(self) -> float:
        """Epsilon spent so far (``inf`` without noise)."""
        return self._budget().spent()

    def _budget(self) -> PrivacyBudget:
        if self.budget is None:
            raise PrivacyError(
                "differential privacy is not set up yet; pass it to protect() or the training loop first"
            )
        return self.budget

    # ------------------------------------------------------------------ setup

    def setup(self, session: TrainingSession) -> None:
        """Fix the model, choose the engine, calibrate the noise, wrap model, optimizer and loader."""
        self._reset_state()
        if isinstance(session.optimizer, PrivateOptimizer):
            raise PrivacyError(
                "the model or optimizer is already wrapped for differential privacy; apply DifferentialPrivacy once"
            )
        settings = self.settings
        model = session.model
        old_params = list(model.parameters())
        self.model_changes = make_compatible(model, fix=settings.fix_model)
        optimizer = session.optimizer
        if self.model_changes:
            optimizer = rebuild_optimizer(optimizer, model, old_params)
            self._note(session, "layers replaced for differential privacy: " + "; ".join(self.model_changes))
        model_params = {id(p) for p in model.parameters()}
        if any(id(p) not in model_params for g in optimizer.param_groups for p in g["params"]):
            raise PrivacyError(
                "the optimizer updates parameters that are not the model's; build it from model.parameters()"
            )

        loader = session.train_loader
        # Poisson batches per epoch follow from n; without Poisson sampling they are the loader's
        batches = len(loader) if not settings.poisson_sampling and isinstance(loader, Sized) else None
        schedule = plan_schedule(settings, session.plan, loader_batches=batches)
        self.schedule = schedule
        if schedule.delta_too_large:
            self._note(
                session,
                schedule.delta_warning()
                + ": a mechanism that publishes one whole record meets such a (epsilon, delta); "
                "choose delta well below 1/n",
            )
        self.budget = budget = calibrate(settings, schedule)
        self._note_budget_shortfall(session, budget, schedule)

        seed = self._seed(session)
        self.sampler_generator = torch.Generator().manual_seed(seed)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.noise_generator = torch.Generator(device=device).manual_seed(seed + 1)
        dataset = _map_style_dataset(loader)
        new_loader = self._wrap_loader(session, loader, dataset, schedule)

        example = _example(dataset)
        self.views = self._augmented_views(example, seed)
        order = VIEWS_ORDER if settings.augmult > 1 else AUTO_ORDER
        choice = select_engine(model, settings.grad_sample_mode, example, order=order)
        self.engine_choice = choice
        if not choice.verified:
            self._note(session, f"the {choice.name} engine could not be verified on this model (no example input)")
        wrapped = choice.engine.attach(model)

        self.plain_model, self.original_optimizer = model, optimizer
        self._session = session
        try:
            if settings.max_memory_mb is not None and isinstance(new_loader, PoissonBatches):
                self._fit_physical_batch(session, wrapped, choice.engine, dataset, new_loader, settings.max_memory_mb)
            self.optimizer = self.optimizer_class(
                optimizer,
                engine=choice.engine,
                noise_multiplier=budget.noise_multiplier,
                max_grad_norm=settings.max_grad_norm,
                expected_batch_size=schedule.expected_batch_size,
                generator=self.noise_generator,
                inspect=self._inspect,
                budget=self._budget_reason,
                on_release=self._on_release,
                canaries=self.gradient_canaries,
                views=settings.augmult,
            )
        except BaseException:
            choice.engine.detach()  # leave the user's model as it was
            raise
        if not budget.noise_multiplier:
            self.monitor.flag("no_noise", step=0)
        names = {id(p): n for n, p in model.named_parameters()}
        self._declared_passes = session.defenses.forward_passes_per_step
        self.monitor.watch(tap=engine_tap(choice.engine), loader=new_loader, params=self.optimizer.params, names=names)
        self.loader = new_loader
        if settings.ema_decay is not None:
            self.average = ParameterAverage(self.optimizer.params, settings.ema_decay)
        # the session types its optimizer as torch's; DPSGDOptimizer is a wrapper with the same interface
        session.model, session.optimizer, session.train_loader = (
            wrapped,
            cast(torch.optim.Optimizer, self.optimizer),
            new_loader,
        )
        log.info(
            "differential privacy: sigma=%.4g, C=%g, q=%.4g, delta=%g, engine=%s, budget steps=%s",
            budget.noise_multiplier,
            settings.max_grad_norm,
            schedule.sample_rate,
            schedule.delta,
            choice.name,
            budget.budget_steps,
        )

    def _augmented_views(
        self, example: torch.Tensor | dict[str, torch.Tensor] | None, seed: int
    ) -> AugmentedViews | None:
        """The views of augmentation multiplicity (``None``: neither ``augmult`` nor ``augment`` given)."""
        settings = self.settings
        if settings.augmult == 1 and settings.augment is None:
            return None
        if isinstance(example, Mapping):
            raise PrivacyError(
                "augmult augments tensor inputs, and this data set's inputs are keyword inputs "
                f"({', '.join(sorted(example))}); leave augmult and augment out"
            )
        name = settings.augment
        if name is None:
            if example is None:
                raise PrivacyError(
                    "augmult needs an augmentation, and the data's sample shape cannot be read to choose one "
                    "(no map-style data set); name one with augment="
                )
            name = default_augmentation(tuple(example.shape[1:]))
        augmentation = make_augmentation(name)
        if example is not None:
            augmentation.check(tuple(example.shape[1:]))
        self.augment_name = name
        self.augment_generator = torch.Generator().manual_seed(seed + 2)
        return AugmentedViews(settings.augmult, augmentation, self.augment_generator)

    def _fit_physical_batch(
        self,
        session: TrainingSession,
        wrapped: nn.Module,
        engine: Engine,
        dataset: Dataset[Any] | None,
        loader: PoissonBatches,
        max_memory_mb: float,
    ) -> None:
        """Measure a step's memory and give the loader the largest physical batch that fits the budget."""
        fit = measure_step_memory(wrapped, engine, dataset)
        chosen = fit.physical_batch(max_memory_mb, limit=self.dataset_size)
        self.memory_fit, self._fitted_physical_batch = fit, chosen
        loader.physical_batch_size = chosen
        self._note(
            session,
            f"physical batch {chosen} fits max_memory_mb {max_memory_mb:g} (a step measured at "
            f"{fit.fixed_mb:.3g} MB fixed + {fit.per_sample_mb:.3g} MB per sample)",
        )

    def _note_budget_shortfall(self, session: TrainingSession, budget: PrivacyBudget, schedule: Schedule) -> None:
        planned, fits = schedule.planned_steps, budget.budget_steps
        if planned and fits is not None and fits < planned:
            self._note(
                session,
                f"the privacy budget (epsilon {budget.cap}) allows {fits} of the {planned} planned "
                f"steps; training will stop after step {fits}",
            )

    def _wrap_loader(
        self, session: TrainingSession, loader: Iterable[Any], dataset: Dataset[Any] | None, schedule: Schedule
    ) -> PoissonBatches | CountingLoader:
        """Poisson batches over the loader's data set, or the loader itself (reported as not valid)."""
        if not self.settings.poisson_sampling:
            if self.settings.physical_batch_size:
                raise PrivacyError("physical_batch_size needs poisson_sampling=True")
            self.monitor.flag("non_poisson", _sampler_name(loader), step=0)
            return CountingLoader(loader)
        if dataset is None:
            raise PrivacyError(
                "Poisson sampling needs a DataLoader over a map-style dataset (one with __len__ and "
                "__getitem__); pass one, or poisson_sampling=False (the epsilon is then reported as not valid)"
            )
        replaced = _replaced_sampler(loader)
        if replaced is not None:
            self._note(
                session,
                f"the loader's {replaced} was replaced by Poisson sampling (each sample joins each "
                "batch with the same probability), which is what the privacy accounting assumes",
            )
        assert self.sampler_generator is not None and schedule.steps_per_epoch is not None
        return PoissonBatches(
            dataset,
            sample_rate=schedule.sample_rate,
            steps_per_epoch=schedule.steps_per_epoch,
            generator=self.sampler_generator,
            physical_batch_size=self.settings.physical_batch_size,
            collate_fn=loader.collate_fn if isinstance(loader, DataLoader) else None,
            on_batch=self._on_batch,
        )

    def _seed(self, session: TrainingSession) -> int:
        if self.settings.seed is not None:
            return self.settings.seed
        if session.generator is not None:
            return int(session.generator.initial_seed()) * 1_000_003 % (2**62) + 17
        return int(torch.randint(0, 2**62, (1,)).item())

    def _note(self, session: TrainingSession, message: str) -> None:
        self.notes.append(message)
        session.note(message)

    def insert_gradient_canaries(self, canaries: GradientCanaries | None) -> None:
        """Audits only: plant Dirac gradient canaries in the next run (:mod:`securetrain.training.canaries`)."""
        self.gradient_canaries = canaries

    # ------------------------------------------------------------------ during training

    def wrap_loss(self, loss_fn: LossFn) -> LossFn:
        """The loss below, after a check that the model is in training mode (see :data:`EVAL_MODE`).

        With ``augmult`` / ``augment``, while gradients are recorded, each sample's loss is the
        mean over its augmented views (:class:`~defenses.privacy.augmult.AugmentedViews`).
        """

        def private_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            plain = self.plain_model
            hooked = getattr(model, "hooks_enabled", True)
            if torch.is_grad_enabled() and hooked and not (model.training and (plain is None or plain.training)):
                self._in_eval_mode()
            views = self.views
            if views is not None and torch.is_grad_enabled():
                return views.loss(loss_fn, model, x, y)
            return loss_fn(model, x, y)

        return private_loss

    def _in_eval_mode(self) -> None:
        """The model is in eval mode at a private step: refuse (engines that need train mode) or warn once."""
        name = self.engine_name
        if name in EVAL_MODE_FAILS:
            raise PrivacyError(EVAL_MODE + f"; the {name} engine cannot compute per-sample gradients in eval mode")
        if not self._eval_warned:
            self._eval_warned = True
            warnings.warn(EVAL_MODE, UserWarning, stacklevel=4)
            if self._session is not None:
                self._note(self._session, EVAL_MODE)
            else:
                self.notes.append(EVAL_MODE)

    def _on_batch(self, last: bool) -> None:
        if self.optimizer is not None:
            self.optimizer.skip_next = not last

    def _inspect(self, psg: Any) -> None:
        self.monitor.allowed_forwards = max(self._declared_passes, int(self._session_passes))
        self.monitor.inspect(psg)

    def _on_release(self, opt: DPSGDOptimizer) -> None:
        self._budget().record(opt.last_groups)

    def _budget_reason(self, groups: int | None = None) -> str | None:
        """Why the next release must not happen: charged at ``groups`` (the step's own) or the worst case seen."""
        return self._budget().stop_reason(groups)

    def before_step(self, session: TrainingSession) -> bool:
        """Veto the next step when it would exceed the budget (the reason goes to the report)."""
        self._session_passes = session.forward_passes_per_step
        reason = self._budget_reason()
        if reason is None:
            return True
        if not self.stopped_by_budget:
            self.stopped_by_budget = True
            session.stop_reason = reason
            self._note(session, "privacy budget: " + reason)
        return False

    def after_step(self, session: TrainingSession) -> None:
        """Fold a released (noisy) step's parameters into the moving average, if one is kept."""
        if (
            self.average is not None
            and self.optimizer is not None
            and self.optimizer.logical_steps > self._averaged_steps
        ):
            self._averaged_steps = self.optimizer.logical_steps
            self.average.update(self.optimizer.params)

    def end_epoch(self, session: TrainingSession) -> None:
        """Record the epsilon spent so far (a point of the report's epsilon curve)."""
        self.epoch_points.append([self.steps_taken, self.epsilon_spent()])

    def epoch_metrics(self, session: TrainingSession) -> EpochMetrics:
        """The epsilon spent so far, for the epoch's history row."""
        eps = self.epoch_points[-1][1] if self.epoch_points else self.epsilon_spent()
        return {"epsilon": eps if math.isfinite(eps) else None}

    def distribute(self, session: TrainingSession, ctx: DistributedContext) -> DistributedRole | None:
        """Shard the Poisson sampler over the ranks and draw the noise on rank 0 only.

        Every rank keeps drawing the *global* logical batch (same generator state, copied
        from rank 0) and trains on its share; the clipped sums are summed across ranks and
        one noise draw is added, so the accountant's sample rate and steps are the global
        schedule's.
        """
        if self.optimizer is None or self.original_optimizer is None:
            raise PrivacyError("differential privacy must be set up before the session is distributed")
        optimizer = self.optimizer
        loader = self.loader
        if isinstance(loader, PoissonBatches):
            loader.shard(ctx.rank, ctx.world_size)
            generators: tuple[torch.Generator, ...] = (loader.generator,)
        else:
            generators = ()
        optimizer.draws_noise = ctx.is_main

        def undo() -> None:
            optimizer.draws_noise = True
            if isinstance(loader, PoissonBatches):
                loader.shard(0, 1)

        return DistributedRole(
            owner=self.name,
            step_optimizer=self.original_optimizer,
            data_sharded=isinstance(loader, PoissonBatches),
            gradient_sum=True,
            generators=generators,
            sampling="global Poisson sample at the global sample rate, split across ranks",
            reduction="sum of per-rank clipped sums, Gaussian noise added once per step on rank 0",
            undo=undo,
        )

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        """Accountant history, generators, validity findings: what a resumed run needs."""
        return {
            "history": self.budget.state_dict()["history"] if self.budget is not None else [],
            "epoch_points": [list(p) for p in self.epoch_points],
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "accountant": self.accountant,
            "sampler_rng": self.sampler_generator.get_state() if self.sampler_generator is not None else None,
            "noise_rng": self.noise_generator.get_state() if self.noise_generator is not None else None,
            **({"augment_rng": self.augment_generator.get_state()} if self.augment_generator is not None else {}),
            "monitor": self.monitor.state_dict(),
            "stopped_by_budget": self.stopped_by_budget,
            "logical_steps": self.optimizer.logical_steps if self.optimizer is not None else 0,
            **({"physical_batch_size": self._fitted_physical_batch} if self._fitted_physical_batch else {}),
            **({"average": self.average.state_dict()} if self.average is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; refuses a checkpoint made with other privacy settings."""
        for key, mine in (("noise_multiplier", self.noise_multiplier), ("sample_rate", self.sample_rate)):
            saved = state.get(key)
            if saved is not None and mine is not None and not math.isclose(float(saved), float(mine), rel_tol=1e-9):
                raise CheckpointError(
                    f"cannot resume: the checkpoint was trained with {key}={saved} but this run uses {mine}; "
                    "resume with the same privacy settings or start a new run directory"
                )
        if state.get("accountant", self.accountant) != self.accountant:
            raise CheckpointError(
                f"cannot resume: the checkpoint was accounted with {state['accountant']}, this run uses {self.accountant}"
            )
        if self.budget is not None:
            self.budget.load_state_dict({"history": state.get("history", [])})
        self.epoch_points = [[int(p[0]), float(p[1])] for p in state.get("epoch_points", [])]
        if state.get("sampler_rng") is not None and self.sampler_generator is not None:
            self.sampler_generator.set_state(state["sampler_rng"])
        if state.get("noise_rng") is not None and self.noise_generator is not None:
            self.noise_generator.set_state(state["noise_rng"])
        if state.get("augment_rng") is not None and self.augment_generator is not None:
            self.augment_generator.set_state(state["augment_rng"])
        self.monitor.load_state_dict(state.get("monitor", {}))
        self.stopped_by_budget = bool(state.get("stopped_by_budget", False))
        saved_physical = state.get("physical_batch_size")
        if saved_physical is not None and self._fitted_physical_batch is not None:
            # the physical batch of the interrupted run, not a new measurement's
            self._fitted_physical_batch = int(saved_physical)
            if isinstance(self.loader, PoissonBatches):
                self.loader.physical_batch_size = self._fitted_physical_batch
        if self.optimizer is not None:
            self.optimizer.logical_steps = int(state.get("logical_steps", self.steps_taken))
            self._averaged_steps = self.optimizer.logical_steps
        if self.average is not None:
            if "average" not in state:
                raise CheckpointError(
                    "cannot resume: the checkpoint has no parameter average but this run keeps one (ema_decay); "
                    "resume with the same privacy settings or start a new run directory"
                )
            self.average.load_state_dict(state["average"])

    # ------------------------------------------------------------------ end

    def teardown(self, session: TrainingSession) -> None:
        """Remove every hook; give the session back its plain model (with the average, if kept) and optimizer."""
        if self.average is not None and self.optimizer is not None:
            self.average.copy_to(self.optimizer.params)
            self.average = None  # applied once
        if self.engine_choice is not None and self.plain_model is not None:
            self.engine_choice.engine.detach()
            session.model = self.plain_model
            if self.original_optimizer is not None:
                session.optimizer = self.original_optimizer

    def config(self) -> dict[str, Any]:
        """The settings, as given (for ``config.json``); ``Defense.from_config`` rebuilds an equal defense."""
        return {"name": self.name, **self.settings.as_dict()}

    def report(self, session: TrainingSession) -> dict[str, Any]:
        """The ``privacy`` report section (schema keys plus history, target, engine, model changes)."""
        if self.schedule is None or self.budget is None:
            return {}
        section = privacy_section(
            self.settings,
            self.schedule,
            self.budget,
            self.monitor,
            epoch_points=self.epoch_points,
            stopped_by_budget=self.stopped_by_budget,
            engine_name=self.engine_name,
            model_changes=self.model_changes,
        )
        pretraining = session.plan.pretraining
        if pretraining is not None:
            section["pretraining"] = pretraining.to_dict()
        section["augmult"] = self.settings.augmult
        section["augment"] = self.augment_name if self.views is not None else None
        if self.settings.max_memory_mb is not None:
            section["physical_batch_size"] = self.physical_batch_size
            section["max_memory_mb"] = self.settings.max_memory_mb
            if self.memory_fit is not None:
                section["memory_fixed_mb"] = round(self.memory_fit.fixed_mb, 4)
                section["memory_per_sample_mb"] = round(self.memory_fit.per_sample_mb, 4)
        return {"privacy": section}


# ---------------------------------------------------------------------- the user's loader


def _map_style_dataset(loader: Iterable[Any]) -> Dataset[Any] | None:
    """The loader's data set if Poisson sampling can index it (a DataLoader over a map-style data set)."""
    if not isinstance(loader, DataLoader):
        return None
    dataset = loader.dataset
    if isinstance(dataset, IterableDataset) or not isinstance(dataset, (Dataset, Sequence)):
        return None
    return dataset


def _example(dataset: Dataset[Any] | None) -> torch.Tensor | dict[str, torch.Tensor] | None:
    """The first sample's input as a batch of one, to verify the engine on (``None``: none).

    A mapping input (keyword inputs such as ``input_ids``) gives a mapping of batches of one.
    """
    if dataset is None:
        return None
    try:
        item = dataset[0]
    except (IndexError, KeyError, TypeError, NotImplementedError):
        return None
    x = item[0] if isinstance(item, (tuple, list)) else item
    if isinstance(x, Mapping):
        batch = {str(k): v.unsqueeze(0) for k, v in x.items() if isinstance(v, torch.Tensor)}
        return batch or None
    return x.unsqueeze(0) if isinstance(x, torch.Tensor) else None


def _sampler_name(loader: Iterable[Any]) -> str:
    """How ``loader`` draws its batches, for the ``non_poisson`` finding."""
    if not isinstance(loader, DataLoader):
        return f"batches from a {type(loader).__name__}"
    sampler = loader.sampler
    if isinstance(sampler, RandomSampler):
        return "shuffled fixed-size batches (RandomSampler)"
    if isinstance(sampler, SequentialSampler):
        return "fixed-size batches in a fixed order (SequentialSampler)"
    return f"batches from a {type(sampler).__name__}"


def _replaced_sampler(loader: Iterable[Any]) -> str | None:
    """The name of a special sampler that Poisson sampling replaces (``None``: a plain random or fixed order)."""
    if not isinstance(loader, DataLoader):
        return None
    sampler = loader.sampler
    if isinstance(sampler, (RandomSampler, SequentialSampler)):
        return None
    return type(sampler).__name__


__all__ = ["DifferentialPrivacy"]
