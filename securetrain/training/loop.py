"""The training loop: defenses plug in, a progress bar, per-epoch evaluation, checkpoints, resume.

Under ``torchrun`` (a process group with more than one rank) the same loop trains one
replica per process: every rank draws the same global batches and trains on its share,
gradients are combined before every step (see :mod:`securetrain.distributed`), training
loss and test metrics are summed over ranks, and only rank 0 writes checkpoints. A
checkpoint does not depend on the number of processes, so a run resumes on any number.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset
from tqdm.auto import tqdm

from securetrain.checkpoint import save_state
from securetrain.data.base import DATASETS, DatasetInfo, get_info
from securetrain.data.validate import check_model_fits, validate_batch
from securetrain.devices import resolve_device
from securetrain.distributed.context import DistributedContext, resolve_context
from securetrain.distributed.io import load_state_everywhere
from securetrain.distributed.sampling import ShardedBatchSampler, collate_or_empty
from securetrain.distributed.session import DistributedTraining
from securetrain.distributed.sync import all_reduce_sum
from securetrain.errors import CheckpointError, ConfigurationError, TrainingDiverged
from securetrain.modes import unwrap
from securetrain.training.config import TrainConfig
from securetrain.training.defense import Defense, DefenseStack
from securetrain.training.evaluate import evaluate, predict_logits
from securetrain.training.plan import Pretraining, RunPlan
from securetrain.training.pretrain import ignored_on_resume, pretrain, public_data, trainable_parameters
from securetrain.training.session import Callback, TrainingSession

log = logging.getLogger("securetrain")

CHECKPOINT_NAME = "checkpoint.safetensors"
_RESUME_KEYS = (
    "data",
    "model",
    "model_kwargs",
    "batch_size",
    "optimizer",
    "lr",
    "seed",
    "pretrain",
    "pretrain_epochs",
    "pretrain_lr",
    "trainable",
)


@dataclass
class TrainResult:
    """What :func:`fit` returns: the plain trained model and everything measured on the way."""

    model: nn.Module
    session: TrainingSession
    history: list[dict[str, float]]
    sections: dict[str, Any] = field(default_factory=dict)
    train_time_s: float = 0.0
    resumed_from_epoch: int = 0
    world_size: int = 1
    distributed: dict[str, Any] | None = None
    """How a multi-process run split data and combined gradients (``None`` for one process)."""


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor] | None,
    config: TrainConfig,
    defenses: Sequence[Defense] = (),
    *,
    num_classes: int | None = None,
    bounds: tuple[float, float] | None = None,
    data_info: DatasetInfo | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    distributed: bool | None = None,
) -> TrainResult:
    """Train ``model`` on ``train`` with ``defenses``; evaluate on ``test`` after each epoch.

    Any ``nn.Module`` mapping a batch of inputs to logits works. A checkpoint is written
    atomically after each epoch when ``checkpoint_path`` is given; with ``resume=True`` the
    run continues from it (model, optimizer, RNG and defense state, e.g. the privacy
    accountant) and ends exactly where an uninterrupted run would.

    ``distributed``: ``None`` (default) trains across the processes of the
    ``torch.distributed`` process group if one is initialised with more than one rank
    (each rank calls ``fit`` with the same arguments), ``False`` trains in this process
    only, ``True`` requires a process group. ``config.batch_size`` is then the *global*
    batch size; callbacks run on every rank.

    ``config.device`` (``cpu``, ``cuda``, ``auto``; single process only) moves ``model`` there
    first; batches follow the model's device.

    Example:
        >>> import torch
        >>> from securetrain.training import TrainConfig, fit
        >>> x, y = torch.rand(64, 4), torch.randint(0, 2, (64,))
        >>> r = fit(torch.nn.Linear(4, 2), (x, y), None, TrainConfig(epochs=1, progress=False))
        >>> r.history[0]["epoch"], r.session.step_count
        (1, 1)
    """
    ctx = resolve_context(distributed)
    if config.device is not None:
        if ctx.active:
            raise ConfigurationError(
                f"device {config.device!r} is for single-process training; in a multi-process run each rank's "
                "device follows the backend (nccl: its local GPU, gloo: the CPU): leave the device out"
            )
        model.to(resolve_device(config.device))
    x_tr, y_tr = train
    n_classes = num_classes if num_classes is not None else int(y_tr.max()) + 1
    validate_batch(x_tr, y_tr, n_classes, bounds, what="training data")
    if test is not None:
        validate_batch(test[0], test[1], n_classes, bounds, what="test data")
    check_model_fits(model, tuple(x_tr.shape[1:]), n_classes)
    if data_info is None and config.data in DATASETS:
        data_info = get_info(config.data)  # the configured data set describes the tensors
    public = public_data(config, data_info, x_tr, n_classes) if config.pretrain is not None else None
    if public is not None:
        pretrain(model, config, public)  # before anything is seeded below
    with trainable_parameters(model, config.trainable) as (trained, total):
        described = None
        if public is not None or config.trainable is not None:
            described = Pretraining(
                data=public.info.name if public is not None else None,
                samples=len(public.y) if public is not None else 0,
                epochs=int(config.pretrain_epochs) if public is not None else 0,
                trainable=tuple(config.trainable) if config.trainable is not None else None,
                trained_parameters=trained,
                total_parameters=total,
            )
        return _fit(
            model,
            (x_tr, y_tr),
            test,
            config,
            defenses,
            n_classes=n_classes,
            bounds=bounds,
            data_info=data_info,
            pretraining=described,
            checkpoint_path=checkpoint_path,
            resume=resume,
            callbacks=callbacks,
            ctx=ctx,
        )


def _fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor] | None,
    config: TrainConfig,
    defenses: Sequence[Defense],
    *,
    n_classes: int,
    bounds: tuple[float, float] | None,
    data_info: DatasetInfo | None,
    pretraining: Pretraining | None,
    checkpoint_path: str | Path | None,
    resume: bool,
    callbacks: Sequence[Callback],
    ctx: DistributedContext,
) -> TrainResult:
    """:func:`fit` once the data is checked and the model pretrained and partly frozen."""
    x_tr, y_tr = train
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    dataset = TensorDataset(x_tr, y_tr)
    if ctx.active:
        # every rank draws the global batches with the same generator and keeps its share
        global_batches = BatchSampler(RandomSampler(dataset, generator=generator), config.batch_size, drop_last=False)
        loader = DataLoader(
            dataset,
            batch_sampler=ShardedBatchSampler(global_batches, ctx.rank, ctx.world_size),
            collate_fn=collate_or_empty(dataset),
            generator=generator,  # the loader draws from it too, as in the single-process loader
        )
    else:
        loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, generator=generator)
    optimizer = config.make_optimizer(model.parameters())
    stack = DefenseStack(list(defenses))
    plan = RunPlan(
        epochs=int(config.epochs),
        # tuple() keeps a caller's list working; RunPlan checks it is a (lower, upper) pair
        bounds=cast(tuple[float, float], tuple(bounds))
        if bounds is not None
        else (data_info.bounds if data_info is not None else None),
        data=data_info,
        seed=int(config.seed),
        dataset_size=int(x_tr.shape[0]),
        batch_size=int(config.batch_size),
        pretraining=pretraining,
    )
    session = TrainingSession(
        model=model, optimizer=optimizer, train_loader=loader, defenses=stack, plan=plan, generator=generator
    )
    try:
        stack.setup(session)
    except BaseException:
        session.teardown()
        raise
    session.loss_fn = stack.loss_fn()
    scale_out = DistributedTraining(session, ctx, generators=(generator,))

    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    start_epoch = 0
    try:
        scale_out.attach()
        if resume and ckpt is not None:
            state = load_state_everywhere(ckpt, ctx)  # None when there is no checkpoint yet
            if state is not None:
                start_epoch = _restore(ckpt, session, config, state)
                log.info("resumed from %s after epoch %d", ckpt, start_epoch)
        t0 = time.perf_counter()
        _run_epochs(session, config, start_epoch, test, ckpt, callbacks, ctx)
        scale_out.finish()
    finally:
        try:
            scale_out.detach()
        finally:
            session.teardown()
    elapsed = time.perf_counter() - t0
    sections = stack.report(session)
    return TrainResult(
        model=unwrap(session.model),
        session=session,
        history=session.history,
        sections=sections,
        train_time_s=elapsed,
        resumed_from_epoch=start_epoch,
        world_size=ctx.world_size,
        distributed=scale_out.described if ctx.active else None,
    )


def _run_epochs(
    session: TrainingSession,
    config: TrainConfig,
    start_epoch: int,
    test: tuple[torch.Tensor, torch.Tensor] | None,
    ckpt: Path | None,
    callbacks: Sequence[Callback],
    ctx: DistributedContext,
) -> None:
    total = None
    try:
        total = (config.epochs - start_epoch) * len(session.train_loader)  # type: ignore[arg-type]
    except TypeError:
        pass
    bar = tqdm(total=total, disable=not (config.progress and ctx.is_main), desc="train", unit="step", leave=False)
    try:
        for epoch in range(start_epoch, config.epochs):
            if session.stop_reason is not None:
                break
            session.epoch = epoch
            if ctx.active:
                # dropout masks and attack starts: a different stream on every rank, reproducible on resume
                torch.manual_seed(rank_seed(config.seed, epoch, ctx.rank))
            t_epoch = time.perf_counter()
            seen: float  # a count; the cross-rank sum below comes back as a float
            loss_sum, seen = _train_one_epoch(session, bar)
            _check_finite_weights(session)  # before anything of this epoch is recorded or saved
            if ctx.active:
                loss_sum, seen = all_reduce_sum([loss_sum, seen], ctx, "summing the training loss")
            defense_metrics = session.collect_epoch_metrics()
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "steps": session.step_count,
                "train_loss": loss_sum / max(seen, 1),
                "time_s": time.perf_counter() - t_epoch,
            }
            if ctx.active:
                record["world_size"] = ctx.world_size
            if test is not None:
                metrics = evaluate_across_ranks(session.model, test[0], test[1], config.eval_batch_size, ctx)
                record["test_accuracy"] = metrics["accuracy"]
                record["test_loss"] = metrics["loss"]
            record.update(defense_metrics)
            session.history.append(record)
            bar.set_postfix(
                {
                    k: round(v, 4)
                    for k, v in record.items()
                    if k in ("train_loss", "test_accuracy", "epsilon") and isinstance(v, (int, float))
                }
            )
            log.info("epoch %d: %s", epoch + 1, record)
            session.epoch = epoch + 1
            if ckpt is not None and ctx.is_main:
                _save(ckpt, session, config)
            for cb in callbacks:
                cb.on_epoch_end(session)
    finally:
        bar.close()


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the global torch generator for ``rank`` in ``epoch`` of a distributed run.

    Example:
        >>> rank_seed(0, 1, 0) != rank_seed(0, 1, 1)
        True
    """
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + int(rank) * 104_729 + 12_345) % (2**62)


def evaluate_across_ranks(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, ctx: DistributedContext
) -> dict[str, float]:
    """:func:`evaluate` with the test set split over the ranks and the counts summed.

    The accuracy is exactly the single-process figure; the loss agrees up to float rounding.

    Example:
        >>> import torch
        >>> from securetrain.distributed import get_context
        >>> m, x, y = torch.nn.Linear(2, 2), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
        >>> evaluate_across_ranks(m, x, y, 8, get_context()) == evaluate(m, x, y, 8)
        True
    """
    if not ctx.active:
        return evaluate(model, x, y, batch_size)
    xs, ys = x[ctx.rank :: ctx.world_size], y[ctx.rank :: ctx.world_size]
    correct = loss_sum = 0.0
    if xs.shape[0]:
        logits = predict_logits(model, xs, batch_size)
        correct = float((logits.argmax(1) == ys).sum())
        loss_sum = float(F.cross_entropy(logits, ys, reduction="sum"))
    correct, loss_sum, n = all_reduce_sum([correct, loss_sum, float(xs.shape[0])], ctx, "evaluating")
    n = max(n, 1.0)
    return {"accuracy": correct / n, "loss": loss_sum / n}


def _train_one_epoch(session: TrainingSession, bar: tqdm) -> tuple[float, int]:
    model = session.model
    model.train()  # a wrapped model must be in train mode before every epoch (Opacus needs it)
    loss_sum, seen = 0.0, 0
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for x, y in session.train_loader:
        if not session.can_step():
            break
        x, y = x.to(device), y.to(device)
        session.optimizer.zero_grad(set_to_none=True)
        loss = session.loss(x, y)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"the training loss became {value} at step {session.step_count + 1} (epoch {session.epoch + 1}); "
                "training stopped and this model is not kept. Lower the learning rate (or clip gradients) and "
                "train again"
            )
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        session.step()
        loss_sum += value * int(x.shape[0])
        seen += int(x.shape[0])
        bar.update(1)
    return loss_sum, seen


def _check_finite_weights(session: TrainingSession) -> None:
    """Raise :class:`TrainingDiverged` when a parameter of the model holds a NaN or an infinity."""
    for name, p in unwrap(session.model).named_parameters():
        if not bool(torch.isfinite(p.detach()).all()):
            raise TrainingDiverged(
                f"the weights of {name} became non-finite after epoch {session.epoch + 1} (step {session.step_count}); "
                "training stopped and this model is not kept. Lower the learning rate and train again"
            )


def _save(path: Path, session: TrainingSession, config: TrainConfig) -> None:
    state = {
        "epoch": session.epoch,
        "step_count": session.step_count,
        "history": session.history,
        "notes": session.notes,
        "stop_reason": session.stop_reason,
        "config": {k: config.to_dict()[k] for k in _RESUME_KEYS},
        "model": unwrap(session.model).state_dict(),
        "optimizer": session.optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "loader_rng": session.generator.get_state() if session.generator is not None else None,
        "defenses": session.defenses.state_dict(),
    }
    save_state(path, state)


def _restore(path: Path, session: TrainingSession, config: TrainConfig, state: dict[str, Any]) -> int:
    saved_cfg = state.get("config", {})
    current = config.to_dict()
    ignored = ignored_on_resume(saved_cfg, current)
    diffs = [k for k in _RESUME_KEYS if k in saved_cfg and k not in ignored and saved_cfg[k] != current[k]]
    if diffs:
        raise CheckpointError(
            f"cannot resume from {path}: the checkpoint was made with different settings for "
            f"{', '.join(diffs)}; use the same settings or a new output directory"
        )
    saved_defenses = state.get("defenses", {})
    saved_names = sorted(saved_defenses) if isinstance(saved_defenses, dict) else []
    current_names = sorted(d.name for d in session.defenses)
    if saved_names != current_names:
        # e.g. a non-private checkpoint resumed with differential privacy: the epsilon would not cover
        # the epochs already trained
        raise CheckpointError(
            f"cannot resume from {path}: the checkpoint was trained with defenses "
            f"[{', '.join(saved_names) or 'none'}], this run has [{', '.join(current_names) or 'none'}]; "
            "resume with the same defenses or start a new run"
        )
    try:
        unwrap(session.model).load_state_dict(state["model"])
        session.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"cannot resume from {path}: {exc}") from exc
    torch.set_rng_state(state["torch_rng"])
    if session.generator is not None and state.get("loader_rng") is not None:
        session.generator.set_state(state["loader_rng"])
    session.defenses.load_state_dict(state.get("defenses", {}))
    session.history = list(state.get("history", []))
    session.notes = list(state.get("notes", []))
    session.step_count = int(state.get("step_count", 0))
    session.stop_reason = state.get("stop_reason")
    session.epoch = int(state["epoch"])
    return session.epoch
