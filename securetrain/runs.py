"""Run directories: train into one, load a model from one.

A run directory holds ``model.safetensors`` (weights, never unpickled), ``config.json``,
``checkpoint.safetensors`` (to resume, defense state such as the privacy accountant
included) and ``report.json`` / ``report.md`` / ``report.html``.

In a distributed job (every rank calls :func:`train` with the same arguments under
``torchrun``) only rank 0 writes the run directory; the other ranks train and return
the same result. See :mod:`securetrain.distributed`.

Example:
    >>> import tempfile
    >>> import securetrain
    >>> from securetrain.training import TrainConfig
    >>> d = tempfile.mkdtemp()
    >>> result = securetrain.train(TrainConfig(data="breast_cancer", epochs=1, progress=False), d)
    >>> model = securetrain.load_model(d)
    >>> model.training
    False
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from securetrain.checkpoint import save_weights
from securetrain.data.base import DatasetInfo
from securetrain.data.sources import resolve_data
from securetrain.data.validate import check_model_fits
from securetrain.devices import resolve_device
from securetrain.distributed.context import barrier as _barrier
from securetrain.distributed.context import resolve_context
from securetrain.errors import ModelError
from securetrain.io import atomic_write_json, remove_stale_temporaries
from securetrain.models import build_model
from securetrain.report import SECTIONS, Report, Section
from securetrain.rundir import CONFIG_NAME, WEIGHTS_NAME, RunDir, file_sha256
from securetrain.runlock import LOCK_NAME, RunLock
from securetrain.runwrite import (
    check_may_write,
    check_out_dir,
    check_same_run,
    copy_for_update,
    recover_interrupted_swap,
    remove_leftovers,
    staging_dir,
    swap_in,
)
from securetrain.specs import is_import_spec
from securetrain.training import CHECKPOINT_NAME, Callback, Defense, TrainConfig, TrainResult, fit
from securetrain.training.loop import evaluate_across_ranks
from securetrain.training.pretrain import check_pretraining

_WRITTEN = (CONFIG_NAME, WEIGHTS_NAME, CHECKPOINT_NAME, "report.json", "report.md", "report.html")


@dataclass
class RunResult:
    """A finished run: its directory, report and the plain trained model."""

    run_dir: Path
    report: Report
    model: nn.Module
    train_result: TrainResult


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    defenses: Sequence[Defense] = (),
    *,
    model: nn.Module | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
    write_html: bool = True,
    distributed: bool | None = None,
    recipe: Mapping[str, Any] | None = None,
) -> RunResult:
    """Train a model on ``config.data`` with ``defenses`` and write a complete run directory.

    A directory that already holds a run is continued with ``resume=True`` (only with the
    run's own settings: anything else is refused, naming the difference) or replaced with
    ``overwrite=True`` (trained beside it and swapped in atomically at the end); otherwise it is
    refused. The directory is locked for the whole call (see :mod:`securetrain.runlock`):
    a second writer is refused. See :mod:`securetrain.runwrite` for the guarantees.

    ``model`` may be any ``nn.Module`` for the data set's input shape; by default the zoo
    model ``config.model`` (or the data set's default) is built.

    ``recipe``: a record of the recommended recipe the settings started from (``securetrain
    train --dp``), written to ``config.json`` under ``"recipe"``.

    ``distributed`` is passed to :func:`securetrain.training.fit`: by default a run inside
    a ``torch.distributed`` process group of several ranks trains across them (with
    ``config.batch_size`` as the global batch) and only rank 0 writes ``out_dir``.
    """
    ctx = resolve_context(distributed)
    out = check_out_dir(out_dir)
    if ctx.is_main:
        recover_interrupted_swap(out)  # a fallback swap killed half-way: the old run is put back first
    previous = check_may_write(out, resume=resume, overwrite=overwrite)  # cheap refusals first
    # everything that can be refused is checked before anything is written
    if config.device is not None and not ctx.active:
        resolve_device(config.device)  # e.g. cuda asked for on a machine without a GPU
    source = resolve_data(config.data, config.data_root)  # a spec is imported here (the user gave it)
    info = source.info()
    train_xy = source.load(config.train_split)
    test_xy = source.load("test")
    torch.manual_seed(config.seed)
    model_name = (config.model or info.default_model) if model is None else type(model).__name__
    if model is None:
        model_source = "import" if is_import_spec(model_name) else "registry"
        model = build_model(model_name, info.input_shape, info.num_classes, **config.model_kwargs)
        try:
            check_model_fits(model, info.input_shape, info.num_classes)
        except ModelError as exc:  # name the model (a spec of the user's) in the message
            raise ModelError(f"model {model_name!r} on data {info.name!r}: {exc}") from None
    else:
        model_source = "object"  # the caller's own module: not rebuildable from the run directory
    check_pretraining(model, config, info, train_xy[0], info.num_classes)  # before anything is written
    if ctx.device.type != "cpu":
        model = model.to(ctx.device)
    run_config = {
        "securetrain_version": _version(),
        "data": source.config_section(config.data_root),
        "model": {
            "name": model_name,
            "kwargs": config.model_kwargs,
            "zoo": model_source == "registry",
            "source": model_source,
        },
        "train": config.to_dict(),
        "defenses": [d.config() for d in defenses],
    }
    if recipe is not None:
        run_config["recipe"] = dict(recipe)
    if ctx.active:
        run_config["distributed"] = ctx.describe()
    if previous is not None and resume:
        check_same_run(previous, run_config)
    if ctx.active:
        _barrier()  # every rank has checked before rank 0 writes anything
    lock = RunLock(out, command="train")
    created, had_lock = not out.exists(), (out / LOCK_NAME).exists()
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    unstarted = False
    try:
        return _train_locked(
            config,
            out,
            defenses,
            model,
            model_name,
            info,
            train_xy,
            test_xy,
            run_config,
            staged=previous is not None and overwrite,
            resume=resume,
            callbacks=callbacks,
            write_html=write_html,
            distributed=distributed,
        )
    except BaseException:
        # refused or stopped before the first checkpoint (e.g. a privacy setting refused when training
        # starts): nothing was trained, so the new run's files go and the directory is as it was
        unstarted = ctx.is_main and previous is None and not (out / CHECKPOINT_NAME).exists()
        raise
    finally:
        lock.release()
        if unstarted:
            discard_unstarted_run(out, created=created, lock_file=not had_lock)


def _train_locked(
    config: TrainConfig,
    out: Path,
    defenses: Sequence[Defense],
    model: nn.Module,
    model_name: str,
    info: DatasetInfo,
    train_xy: tuple[torch.Tensor, torch.Tensor],
    test_xy: tuple[torch.Tensor, torch.Tensor],
    run_config: dict[str, Any],
    *,
    staged: bool,
    resume: bool,
    callbacks: Sequence[Callback],
    write_html: bool,
    distributed: bool | None,
) -> RunResult:
    """Train into ``out`` (or, to replace a run, into a staging directory swapped in at the end)."""
    ctx = resolve_context(distributed)
    final = out
    if ctx.is_main:
        remove_leftovers(out)
        for name in _WRITTEN:
            remove_stale_temporaries(out / name)
        if staged:
            out = staging_dir(final)
    # other ranks never read or write the run directory (rank 0 writes; a staged run is never resumed)
    # a resumed complete run keeps its config.json until its new results are swapped in with it
    resuming_complete = resume and ctx.is_main and (out / WEIGHTS_NAME).exists()
    if ctx.is_main and not resuming_complete:
        atomic_write_json(out / CONFIG_NAME, run_config)

    result = fit(
        model,
        train_xy,
        test_xy,
        config,
        defenses,
        num_classes=info.num_classes,
        bounds=info.bounds,
        data_info=info,
        checkpoint_path=out / CHECKPOINT_NAME,
        resume=resume,
        callbacks=callbacks,
        distributed=distributed,
    )
    plain = result.model
    weights_digest = None
    finish_staged = resuming_complete
    if finish_staged:
        # a resumed run's results replace the previous ones all at once: its checkpoints went to the
        # run directory as it trained; the final files are written beside it and swapped in together
        out = copy_for_update(final)
        atomic_write_json(out / CONFIG_NAME, run_config)
    if ctx.is_main:
        save_weights(out / WEIGHTS_NAME, plain)
        # report.json, written last, names the weights it describes: a run interrupted between the
        # two writes is detected on load instead of pairing new weights with an old report
        weights_digest = file_sha256(out / WEIGHTS_NAME)
    metrics = evaluate_across_ranks(plain, *test_xy, config.eval_batch_size, ctx)
    before = result.session.plan.pretraining
    report = Report(
        data={
            "name": info.name,
            "kind": info.kind,
            "n_train": int(train_xy[0].shape[0]),
            "n_test": int(test_xy[0].shape[0]),
            "input_shape": list(info.input_shape),
            "num_classes": info.num_classes,
            "bounds": list(info.bounds),
        },
        model={
            "name": model_name,
            "parameters": int(sum(p.numel() for p in plain.parameters())),
            "kwargs": config.model_kwargs,
            **({"weights_sha256": weights_digest} if weights_digest is not None else {}),
            **({"pretraining": before.describe()} if before is not None else {}),
        },
        accuracy=metrics["accuracy"],
        timing={
            "train_s": round(result.train_time_s, 3),
            "epochs": len(result.history),
            "steps": result.session.step_count,
            "resumed_from_epoch": result.resumed_from_epoch,
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": str(next((p.device for p in plain.parameters()), torch.device("cpu"))),
        },
        extra={
            "training": {
                "history": result.history,
                "config": config.to_dict(),
                "defenses": [d.config() for d in defenses],
            },
            "notes": list(result.session.notes),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    if ctx.active:
        report.timing["world_size"] = ctx.world_size
        report.extra["distributed"] = result.distributed or ctx.describe()
    for key, section in result.sections.items():
        if isinstance(section, Section):
            report.add(section)
        elif key in SECTIONS:
            report.add(SECTIONS.get(key).from_dict(section))  # a defense that reports the JSON form
        else:
            report.extra[key] = section
    if ctx.is_main:
        report.save(out, html=write_html)
        if staged or finish_staged:
            swap_in(out, final)  # one atomic exchange: the old run or the new one, never a mix
    if ctx.active:
        _barrier()  # every rank returns once rank 0's files are in place
    return RunResult(run_dir=final, report=report, model=plain, train_result=result)


def discard_unstarted_run(out: Path, *, created: bool, lock_file: bool) -> None:
    """Remove what :func:`train` wrote into ``out`` for a run that never reached its first checkpoint:
    its ``config.json``, the lock file when ``lock_file`` (this call made it), the directory when
    ``created`` (this call made it, and it is empty again)."""
    (out / CONFIG_NAME).unlink(missing_ok=True)
    if lock_file:
        (out / LOCK_NAME).unlink(missing_ok=True)
    if created:
        try:
            out.rmdir()
        except OSError:
            pass  # something else was put there meanwhile: left as it is


def check_pretraining_settings(config: TrainConfig) -> None:
    """Refuse ``config``'s ``pretrain`` / ``trainable`` settings as :func:`train` would, writing nothing
    (for commands that write several runs into one folder, such as a sweep)."""
    if config.pretrain is None and config.trainable is None:
        return
    source = resolve_data(config.data, config.data_root)
    info = source.info()
    model = build_model(config.model or info.default_model, info.input_shape, info.num_classes, **config.model_kwargs)
    check_pretraining(model, config, info, source.load(config.train_split)[0], info.num_classes)


def read_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config.json`` of a run directory (checked by :class:`~securetrain.rundir.RunDir`)."""
    return RunDir.open(run_dir).config


def load_model(run_dir: str | os.PathLike[str], *, model: str | None = None) -> nn.Module:
    """The trained model of a run directory: a plain ``nn.Module`` in eval mode, no DP hooks.

    Weights are read from safetensors; nothing is unpickled. A run trained with a model named
    by import path needs that spec passed again as ``model`` (importing it runs its code;
    a run directory alone never makes securetrain import anything).
    """
    return RunDir.open(run_dir, model=model).load_model()


def _version() -> str:
    from securetrain import __version__

    return __version__
