"""``DifferentialPrivacy``: DP-SGD as a securetrain defense, accounted, enforced, resumable, checked.

Plugged into the training loop (``securetrain.runs.train(..., defenses=[...])``, the
``--dp`` flags of ``securetrain train``) or into a hand-written loop
(``securetrain.training.protect``), it

* makes the model compatible (BatchNorm -> GroupNorm, LSTM -> DPLSTM, ...; see
  :mod:`defenses.privacy.compat`) and picks a verified per-sample gradient engine
  (:mod:`defenses.privacy.modes`),
* replaces the loader by Poisson sampling at rate ``batch_size / n`` (the loader's batch
  size is the expected logical batch; ``physical_batch_size`` bounds memory),
* clips, noises and averages per-sample gradients (:mod:`defenses.privacy.optimizer`),
* calibrates the noise to a target ``epsilon`` for the planned number of steps, or uses a
  given ``noise_multiplier``, and never takes a step that would spend more than the target
  or ``max_epsilon``: training stops at the last step that fits and says so,
* saves the accountant history and both random generators with every checkpoint, so a
  resumed run continues the same epsilon,
* checks the accounting assumptions while training (:mod:`defenses.privacy.validity`) and
  reports the epsilon as ``valid: false`` with the reason when one breaks.

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
    >>> session = protect(model, opt, loader, [dp])
    >>> for x, y in session.train_loader:
    ...     if not session.can_step():
    ...         break
    ...     session.optimizer.zero_grad()
    ...     session.loss(x, y).backward()
    ...     session.step()
    >>> session.defenses.teardown(session)
    >>> privacy = dp.report(session)["privacy"]
    >>> privacy["epsilon"] <= 2.0, privacy["valid"], privacy["steps"]
    (True, True, 8)
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, SequentialSampler

from securetrain.distributed.context import DistributedContext
from securetrain.distributed.role import DistributedRole
from securetrain.errors import CheckpointError, PrivacyError
from securetrain.training import Defense, DefenseOption, EpochMetrics, TrainingSession

from defenses.privacy import accounting
from defenses.privacy.cli import OPTION as PRIVACY_OPTION
from defenses.privacy.compat import make_compatible, rebuild_optimizer
from defenses.privacy.engines import ENGINES
from defenses.privacy.engines.base import Engine
from defenses.privacy.modes import select_engine
from defenses.privacy.optimizer import DPSGDOptimizer
from defenses.privacy.sampling import CountingLoader, PoissonBatches
from defenses.privacy.validity import ValidityMonitor

log = logging.getLogger("securetrain")

HISTORY_POINTS = 12
"""At least this many ``[step, epsilon]`` points in the report's ``epsilon_history``."""


def _positive(name: str, value: float | None, hint: str) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PrivacyError(f"{name} must be a number, got {value!r}") from None
    if not v > 0 or math.isnan(v):
        raise PrivacyError(f"{name} must be positive, got {value}; {hint}")
    return v


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
        grad_sample_mode: ``"auto"`` or an engine name (``bk``, ``ghost``, ``hooks``,
            ``functorch``, ``ew``, ``vmap``).
        epochs / steps: the planned length, for hand-written loops (the training loop
            tells it); needed to calibrate the noise to a target epsilon.
        batch_size: expected logical batch size when the loader does not have one.
        seed: seed of the sampler and noise generators (default: from the loop's seed, or
            drawn from torch's global generator).
        fix_model: replace incompatible layers automatically (else refuse them).
    """

    name: ClassVar[str] = "privacy"
    order: ClassVar[int] = 0
    command_line: ClassVar[DefenseOption | None] = PRIVACY_OPTION

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
    ) -> None:
        self.target_epsilon = _positive("epsilon", epsilon, "a target epsilon is a positive number such as 1, 3 or 8")
        self.max_epsilon = _positive("max_epsilon", max_epsilon, "it is a hard cap on the epsilon spent")
        if delta is not None:
            try:
                d = float(delta)
            except (TypeError, ValueError):
                raise PrivacyError(f"delta must be a number in (0, 1), got {delta!r}") from None
            if not 0.0 < d < 1.0:
                raise PrivacyError(f"delta must be in (0, 1), got {delta}; choose one well below 1/n, e.g. 1e-5")
            delta = d
        self.delta_arg = delta
        c = _positive("max_grad_norm", max_grad_norm, "it is the per-sample clipping norm, e.g. 1.0")
        assert c is not None
        self.max_grad_norm = c
        if noise_multiplier is not None:
            s = float(noise_multiplier)
            if not s >= 0 or math.isinf(s):
                raise PrivacyError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier}")
            noise_multiplier = s
        self.noise_multiplier_arg = noise_multiplier
        if self.target_epsilon is None and noise_multiplier is None:
            raise PrivacyError("give a target epsilon (epsilon=...) or a noise_multiplier; differential privacy needs one of them")
        if noise_multiplier == 0 and (self.target_epsilon is not None or self.max_epsilon is not None):
            raise PrivacyError(
                "noise_multiplier=0 spends an infinite epsilon, so no epsilon budget can be met; use a positive noise_multiplier"
            )
        if self.max_epsilon is not None and self.target_epsilon is not None and noise_multiplier is None and self.max_epsilon < self.target_epsilon:
            raise PrivacyError(
                f"max_epsilon ({self.max_epsilon}) is below the target epsilon ({self.target_epsilon}); lower the target instead"
            )
        accounting.ACCOUNTANTS.get(accountant)
        self.accountant = accountant
        if grad_sample_mode != "auto":
            ENGINES.get(grad_sample_mode)
        self.grad_sample_mode = grad_sample_mode
        if physical_batch_size is not None and int(physical_batch_size) < 1:
            raise PrivacyError(f"physical_batch_size must be at least 1, got {physical_batch_size}")
        self.physical_batch_size = int(physical_batch_size) if physical_batch_size is not None else None
        for label, v in (("epochs", epochs), ("steps", steps), ("batch_size", batch_size)):
            if v is not None and int(v) < 1:
                raise PrivacyError(f"{label} must be at least 1, got {v}")
        self.epochs = int(epochs) if epochs is not None else None
        self.steps = int(steps) if steps is not None else None
        self.batch_size_arg = int(batch_size) if batch_size is not None else None
        self.poisson_sampling = bool(poisson_sampling)
        self.seed = seed
        self.fix_model = bool(fix_model)
        self._reset_state()

    def _reset_state(self) -> None:
        self.history: list[list[float]] = []
        # (history key, fits): whether one more step fits the budget, for a history that mixes
        # rates (several forward passes); the answer only changes when a step is released.
        self._next_step_fits: tuple[tuple[Any, ...], bool] | None = None
        self.epoch_points: list[list[float]] = []
        self.monitor = ValidityMonitor()
        self.notes: list[str] = []
        self.model_changes: list[str] = []
        self.engine: Engine | None = None
        self.engine_name: str | None = None
        self.engine_tried: dict[str, str] = {}
        self.optimizer: DPSGDOptimizer | None = None
        self.plain_model: nn.Module | None = None
        self.original_optimizer: torch.optim.Optimizer | None = None
        self.stopped_by_budget = False
        self.budget_steps: int | None = None
        self.planned_steps: int | None = None
        self.noise_multiplier: float | None = None
        self.sample_rate: float | None = None
        self.delta: float | None = None
        self.dataset_size: int | None = None
        self.expected_batch_size: int | None = None
        self.loader: Any = None
        self.sampler_generator: torch.Generator | None = None
        self.noise_generator: torch.Generator | None = None
        self._declared_passes = 1
        self._session_passes = 1

    # ------------------------------------------------------------------ setup

    def setup(self, session: TrainingSession) -> None:
        """Fix the model, choose the engine, calibrate the noise, wrap model, optimizer and loader."""
        self._reset_state()
        if isinstance(session.optimizer, DPSGDOptimizer) or hasattr(session.model, "hooks_enabled"):
            raise PrivacyError("the model or optimizer is already wrapped for differential privacy; apply DifferentialPrivacy once")
        model = session.model
        old_params = list(model.parameters())
        self.model_changes = make_compatible(model, fix=self.fix_model)
        optimizer = session.optimizer
        if self.model_changes:
            optimizer = rebuild_optimizer(optimizer, model, old_params)
            self._note(session, "layers replaced for differential privacy: " + "; ".join(self.model_changes))
        model_params = {id(p) for p in model.parameters()}
        if any(id(p) not in model_params for g in optimizer.param_groups for p in g["params"]):
            raise PrivacyError("the optimizer updates parameters that are not the model's; build it from model.parameters()")

        loader = session.train_loader
        dataset = loader.dataset if isinstance(loader, DataLoader) else None
        n = session.plan.dataset_size
        if not n:
            raise PrivacyError(
                "cannot tell the size of the training set; pass a DataLoader over a map-style dataset "
                "(or dataset_size= to protect())"
            )
        batch = self.batch_size_arg or session.plan.batch_size
        if not batch:
            raise PrivacyError("cannot tell the logical batch size from the loader; pass batch_size= to DifferentialPrivacy")
        batch = int(batch)
        if batch > n:
            raise PrivacyError(f"the batch size ({batch}) is larger than the training set ({n}); use a smaller batch")
        self.dataset_size, self.expected_batch_size = int(n), batch
        q = batch / n
        self.sample_rate = q
        steps_per_epoch = math.ceil(n / batch) if self.poisson_sampling else len(loader)  # type: ignore[arg-type]
        self.delta = self.delta_arg if self.delta_arg is not None else min(1e-5, 0.1 / n)
        if self.delta >= 1.0 / n:
            self._note(
                session,
                f"delta={self.delta:g} is not below 1/n={1.0 / n:.3g}: a mechanism that publishes one whole record "
                "meets such a (epsilon, delta); choose delta well below 1/n",
            )

        epochs = self.epochs or session.plan.epochs
        self.planned_steps = self.steps or (int(epochs) * steps_per_epoch if epochs else None)
        self._calibrate(session)

        seed = self._seed(session)
        self.sampler_generator = torch.Generator().manual_seed(seed)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.noise_generator = torch.Generator(device=device).manual_seed(seed + 1)
        new_loader = self._wrap_loader(session, loader, dataset, q, steps_per_epoch)

        choice = select_engine(model, self.grad_sample_mode, self._example(dataset))
        self.engine, self.engine_name, self.engine_tried = choice.engine, choice.name, choice.tried
        if not choice.verified:
            self._note(session, f"the {choice.name} engine could not be verified on this model (no example input)")
        wrapped = self.engine.attach(model)

        self.plain_model, self.original_optimizer = model, optimizer
        try:
            self.optimizer = DPSGDOptimizer(
                optimizer,
                engine=self.engine,
                noise_multiplier=float(self.noise_multiplier or 0.0),
                max_grad_norm=self.max_grad_norm,
                expected_batch_size=batch,
                generator=self.noise_generator,
                inspect=self._inspect,
                budget=self._budget_reason,
                on_release=self._on_release,
            )
        except BaseException:
            self.engine.detach()  # leave the user's model as it was
            raise
        if not self.noise_multiplier:
            self.monitor.flag("no_noise", step=0)
        names = {id(p): n for n, p in model.named_parameters()}
        self._declared_passes = session.defenses.forward_passes_per_step
        self.monitor.watch(tap=self.engine.tap, loader=new_loader, params=list(self.optimizer.params), names=names)  # type: ignore[attr-defined]
        self.loader = new_loader
        session.model, session.optimizer, session.train_loader = wrapped, self.optimizer, new_loader
        log.info(
            "differential privacy: sigma=%.4g, C=%g, q=%.4g, delta=%g, engine=%s, budget steps=%s",
            self.noise_multiplier, self.max_grad_norm, q, self.delta, self.engine_name, self.budget_steps,
        )

    def _wrap_loader(self, session: TrainingSession, loader: Any, dataset: Any, q: float, steps_per_epoch: int) -> Any:
        """Poisson batches over the loader's data set, or the loader itself (reported as not valid)."""
        if not self.poisson_sampling:
            if self.physical_batch_size:
                raise PrivacyError("physical_batch_size needs poisson_sampling=True")
            self.monitor.flag("non_poisson", self._sampler_name(loader), step=0)
            return CountingLoader(loader)
        if dataset is None or isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__"):
            raise PrivacyError(
                "Poisson sampling needs a DataLoader over a map-style dataset (one with __len__ and "
                "__getitem__); pass one, or poisson_sampling=False (the epsilon is then reported as not valid)"
            )
        self._describe_replaced_sampler(session, loader)
        assert self.sampler_generator is not None
        return PoissonBatches(
            dataset,
            sample_rate=q,
            steps_per_epoch=steps_per_epoch,
            generator=self.sampler_generator,
            physical_batch_size=self.physical_batch_size,
            collate_fn=loader.collate_fn if isinstance(loader, DataLoader) else None,
            on_batch=self._on_batch,
        )

    def _calibrate(self, session: TrainingSession) -> None:
        assert self.sample_rate is not None and self.delta is not None
        q, delta = self.sample_rate, self.delta
        if self.noise_multiplier_arg is not None:
            self.noise_multiplier = self.noise_multiplier_arg
        else:
            assert self.target_epsilon is not None
            if not self.planned_steps:
                raise PrivacyError(
                    "to calibrate the noise to a target epsilon, say how long you will train: pass epochs= or steps= "
                    "to DifferentialPrivacy (or give a noise_multiplier)"
                )
            self.noise_multiplier = accounting.calibrate_noise(
                self.accountant, target=self.target_epsilon, delta=delta, sample_rate=q, steps=self.planned_steps
            )
        cap = self.budget_cap
        if cap is None or not self.noise_multiplier:
            self.budget_steps = None
            return
        self.budget_steps = _max_steps_cached(self.accountant, self.noise_multiplier, q, delta, cap, self.planned_steps or 0)
        if self.budget_steps == 0:
            one = accounting.epsilon(self.accountant, [(self.noise_multiplier, q, 1)], delta)
            raise PrivacyError(
                f"target epsilon {cap} is unreachable for this schedule: with noise multiplier "
                f"{self.noise_multiplier:.4g} and sample rate {q:.4g} a single step already spends epsilon "
                f"{one:.4g}; raise the noise multiplier or the epsilon, or use a smaller batch"
            )
        if self.planned_steps and self.budget_steps < self.planned_steps:
            self._note(
                session,
                f"the privacy budget (epsilon {cap}) allows {self.budget_steps} of the {self.planned_steps} planned "
                f"steps; training will stop after step {self.budget_steps}",
            )

    @property
    def budget_cap(self) -> float | None:
        """The epsilon no step may exceed: the smaller of the target and ``max_epsilon``."""
        caps = [e for e in (self.target_epsilon, self.max_epsilon) if e is not None]
        return min(caps) if caps else None

    def _example(self, dataset: Any) -> Any:
        if dataset is None or isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__"):
            return None
        try:
            item = dataset[0]
        except (IndexError, KeyError, TypeError):
            return None
        x = item[0] if isinstance(item, (tuple, list)) else item
        return x.unsqueeze(0) if isinstance(x, torch.Tensor) else None

    def _seed(self, session: TrainingSession) -> int:
        if self.seed is not None:
            return int(self.seed)
        if session.generator is not None:
            return int(session.generator.initial_seed()) * 1_000_003 % (2**62) + 17
        return int(torch.randint(0, 2**62, (1,)).item())

    @staticmethod
    def _sampler_name(loader: Any) -> str:
        sampler = getattr(loader, "sampler", None)
        batch_sampler = getattr(loader, "batch_sampler", None)
        if isinstance(sampler, RandomSampler):
            return "shuffled fixed-size batches (RandomSampler)"
        if isinstance(sampler, SequentialSampler):
            return "fixed-size batches in a fixed order (SequentialSampler)"
        if sampler is not None:
            return f"batches from a {type(sampler).__name__}"
        if batch_sampler is not None:
            return f"batches from a {type(batch_sampler).__name__}"
        return f"batches from a {type(loader).__name__}"

    def _describe_replaced_sampler(self, session: TrainingSession, loader: Any) -> None:
        sampler = getattr(loader, "sampler", None)
        if sampler is not None and not isinstance(sampler, (RandomSampler, SequentialSampler)):
            self._note(
                session,
                f"the loader's {type(sampler).__name__} was replaced by Poisson sampling (each sample joins each "
                "batch with the same probability), which is what the privacy accounting assumes",
            )

    def _note(self, session: TrainingSession, message: str) -> None:
        self.notes.append(message)
        session.note(message)

    # ------------------------------------------------------------------ during training

    def _on_batch(self, last: bool) -> None:
        if self.optimizer is not None:
            self.optimizer.skip_next = not last

    def _inspect(self, psg: Any) -> None:
        self.monitor.allowed_forwards = max(self._declared_passes, int(self._session_passes))
        self.monitor.inspect(psg)

    def _on_release(self, opt: DPSGDOptimizer) -> None:
        assert self.noise_multiplier is not None and self.sample_rate is not None
        q = self.sample_rate * max(1, opt.last_groups)
        entry = [float(self.noise_multiplier), float(q), 1]
        if self.history and self.history[-1][0] == entry[0] and self.history[-1][1] == entry[1]:
            self.history[-1][2] = int(self.history[-1][2]) + 1
        else:
            self.history.append(entry)

    @property
    def steps_taken(self) -> int:
        """Noisy (logical) steps taken so far."""
        return int(sum(int(h[2]) for h in self.history))

    def epsilon_spent(self) -> float:
        """Epsilon spent so far (``inf`` without noise)."""
        assert self.delta is not None
        return accounting.epsilon(self._report_accountant(), [tuple(h) for h in self.history], self.delta)  # type: ignore[misc]

    def _report_accountant(self) -> str:
        if self.accountant == "gdp" and len({(h[0], h[1]) for h in self.history}) > 1:
            return "rdp"
        return self.accountant

    def _budget_reason(self) -> str | None:
        cap = self.budget_cap
        if cap is None or not self.noise_multiplier:
            return None
        assert self.sample_rate is not None and self.delta is not None
        homogeneous = all(h[0] == self.noise_multiplier and h[1] == self.sample_rate for h in self.history)
        if homogeneous:
            if self.budget_steps is not None and self.steps_taken < self.budget_steps:
                return None
        else:
            key = (len(self.history), tuple(self.history[-1]), cap, self.noise_multiplier, self.sample_rate)
            if self._next_step_fits is None or self._next_step_fits[0] != key:
                nxt = [tuple(h) for h in self.history] + [(self.noise_multiplier, self.sample_rate, 1)]
                fits = accounting.epsilon(self._report_accountant(), nxt, self.delta) <= cap  # type: ignore[arg-type]
                self._next_step_fits = (key, fits)
            if self._next_step_fits[1]:
                return None
        which = "target epsilon" if self.target_epsilon is not None and cap == self.target_epsilon else "max_epsilon"
        return (
            f"stopped after {self.steps_taken} steps: one more step would spend more than the {which} {cap:g} "
            f"(spent so far: epsilon {self.epsilon_spent():.4g} at delta {self.delta:g})"
        )

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

    def end_epoch(self, session: TrainingSession) -> None:
        """Record the epsilon spent so far (a point of the report's epsilon curve)."""
        eps = self.epsilon_spent()
        self.epoch_points.append([self.steps_taken, eps])

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
        if isinstance(self.loader, PoissonBatches):
            self.loader.shard(ctx.rank, ctx.world_size)
            generators: tuple[torch.Generator, ...] = (self.loader.generator,)
        else:
            generators = ()
        optimizer.draws_noise = ctx.is_main
        loader = self.loader

        def undo() -> None:
            optimizer.draws_noise = True
            if isinstance(loader, PoissonBatches):
                loader.shard(0, 1)

        return DistributedRole(
            owner=self.name,
            step_optimizer=self.original_optimizer,
            data_sharded=isinstance(self.loader, PoissonBatches),
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
            "history": [list(h) for h in self.history],
            "epoch_points": [list(p) for p in self.epoch_points],
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "accountant": self.accountant,
            "sampler_rng": self.sampler_generator.get_state() if self.sampler_generator is not None else None,
            "noise_rng": self.noise_generator.get_state() if self.noise_generator is not None else None,
            "monitor": self.monitor.state_dict(),
            "stopped_by_budget": self.stopped_by_budget,
            "logical_steps": self.optimizer.logical_steps if self.optimizer is not None else 0,
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
        self.history = [[float(h[0]), float(h[1]), int(h[2])] for h in state.get("history", [])]
        self._next_step_fits = None
        self.epoch_points = [[int(p[0]), float(p[1])] for p in state.get("epoch_points", [])]
        if state.get("sampler_rng") is not None and self.sampler_generator is not None:
            self.sampler_generator.set_state(state["sampler_rng"])
        if state.get("noise_rng") is not None and self.noise_generator is not None:
            self.noise_generator.set_state(state["noise_rng"])
        self.monitor.load_state_dict(state.get("monitor", {}))
        self.stopped_by_budget = bool(state.get("stopped_by_budget", False))
        if self.optimizer is not None:
            self.optimizer.logical_steps = int(state.get("logical_steps", self.steps_taken))

    # ------------------------------------------------------------------ end

    def teardown(self, session: TrainingSession) -> None:
        """Remove every hook; give the session back its plain model and optimizer."""
        if self.engine is not None and self.plain_model is not None:
            self.engine.detach()
            session.model = self.plain_model
            if self.original_optimizer is not None:
                session.optimizer = self.original_optimizer

    def config(self) -> dict[str, Any]:
        """The settings, as given (for ``config.json``)."""
        return {
            "name": self.name,
            "epsilon": self.target_epsilon,
            "delta": self.delta_arg,
            "max_grad_norm": self.max_grad_norm,
            "noise_multiplier": self.noise_multiplier_arg,
            "accountant": self.accountant,
            "max_epsilon": self.max_epsilon,
            "poisson_sampling": self.poisson_sampling,
            "physical_batch_size": self.physical_batch_size,
            "grad_sample_mode": self.grad_sample_mode,
            "epochs": self.epochs,
            "steps": self.steps,
            "batch_size": self.batch_size_arg,
            "seed": self.seed,
            "fix_model": self.fix_model,
        }

    def report(self, session: TrainingSession) -> dict[str, Any]:
        """The ``privacy`` report section (schema keys plus history, target, engine, model changes)."""
        if self.delta is None:
            return {}
        eps = self.epsilon_spent()
        warnings_ = self.monitor.warnings()
        caveat = accounting.CAVEATS.get(self._report_accountant())
        if caveat:
            warnings_.append(caveat)
        if self.delta >= 1.0 / float(self.dataset_size or 1):
            warnings_.append(f"delta={self.delta:g} is not below 1/n={1.0 / float(self.dataset_size or 1):.3g}")
        return {
            "privacy": {
                "epsilon": eps if math.isfinite(eps) else None,
                "delta": self.delta,
                "accountant": self._report_accountant(),
                "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": self.max_grad_norm,
                "sample_rate": self.sample_rate,
                "steps": self.steps_taken,
                "poisson_sampling": self.poisson_sampling,
                "valid": self.monitor.valid,
                "warnings": warnings_,
                "epsilon_history": self._history_points(eps),
                "target_epsilon": self.target_epsilon,
                "max_epsilon": self.max_epsilon,
                "budget_steps": self.budget_steps,
                "planned_steps": self.planned_steps,
                "stopped_by_budget": self.stopped_by_budget,
                "expected_batch_size": self.expected_batch_size,
                "physical_batch_size": self.physical_batch_size,
                "dataset_size": self.dataset_size,
                "grad_sample_mode": self.engine_name,
                "grad_sample_mode_requested": self.grad_sample_mode,
                "model_changes": list(self.model_changes),
                "validity_checks": self.monitor.codes(),
                "noise_rng": "torch.Generator (not a cryptographically secure source; secure_mode is not available)",
            }
        }

    def _history_points(self, eps_spent: float) -> list[list[float]]:
        """Epsilon after each epoch, at 0 and at the last step (``eps_spent``), filled out to a curve."""
        assert self.delta is not None
        total = self.steps_taken
        points = {int(p[0]): float(p[1]) for p in self.epoch_points}
        points[0] = 0.0
        if total and total not in points:
            points[total] = eps_spent
        if len(points) < HISTORY_POINTS and total:
            curve = accounting.epsilon_curve(
                self._report_accountant(), [tuple(h) for h in self.history], self.delta, HISTORY_POINTS - len(points) + 2  # type: ignore[misc]
            )
            for step, eps in curve:
                points.setdefault(int(step), float(eps))
        return [[s, e if math.isfinite(e) else None] for s, e in sorted(points.items())]  # type: ignore[misc]


_MAX_STEPS_CACHE: dict[tuple[Any, ...], int] = {}


def _max_steps_cached(name: str, sigma: float, q: float, delta: float, cap: float, hint: int) -> int:
    key = (name, sigma, q, delta, cap)
    if key not in _MAX_STEPS_CACHE:
        _MAX_STEPS_CACHE[key] = accounting.max_steps(
            name, noise_multiplier=sigma, sample_rate=q, delta=delta, target=cap, hint=hint or None
        )
    return _MAX_STEPS_CACHE[key]
