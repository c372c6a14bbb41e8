"""Writing a run directory safely: where it may go, when it may be replaced, how it is swapped in.

The guarantees (each tested):

* ``--out`` must name a directory: an empty path, an existing file, or a path under a file is
  refused before anything is written.
* A directory that already holds a run (it has a ``config.json``) is never silently
  overwritten: training into it needs ``resume`` (continue it) or ``overwrite`` (replace it).
* ``resume`` continues only the same run: a different data set, model, model settings,
  training settings or defense stack (privacy regime included) is refused, naming the
  difference, before anything is written.
* ``overwrite`` trains the new run in a staging directory beside the old one and swaps it in
  at the end with one atomic exchange of the two directories (Linux ``renameat2`` with
  ``RENAME_EXCHANGE``; elsewhere two renames with recovery), so whatever is killed at any
  moment, the path holds either the complete old run or the complete new one.

Example:
    >>> import tempfile, pathlib
    >>> from securetrain.runwrite import check_out_dir
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> check_out_dir(d / "new") == d / "new"
    True
    >>> check_out_dir("")
    Traceback (most recent call last):
    ...
    securetrain.errors.ConfigurationError: the output directory is empty; give a path such as --out runs/cnn
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from securetrain.errors import CheckpointError, ConfigurationError
from securetrain.rundir import CONFIG_NAME, RunDir
from securetrain.training.config import TrainConfig
from securetrain.training.pretrain import ignored_on_resume

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_STAGING = ".{name}.staging-"
_RETIRED = ".{name}.retired-"

RESUME_TRAIN_KEYS = ("batch_size", "optimizer", "lr", "momentum", "weight_decay", "seed")
"""Training settings that must not change on resume (``epochs`` may grow: that is what resuming is for)."""

_LATER_TRAIN_KEYS = ("train_split", "pretrain", "pretrain_epochs", "pretrain_lr", "trainable")
"""Training settings added after the first runs were written; a run without one had its default."""


def check_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """``out_dir`` as a path that can hold a run directory; :class:`ConfigurationError` otherwise."""
    if not str(os.fspath(out_dir)).strip():
        raise ConfigurationError("the output directory is empty; give a path such as --out runs/cnn")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"--out {out} is a file, not a directory; choose a directory path")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigurationError(f"--out {out} lies under {parent}, which is a file; choose a directory path")
            break
    return out


def existing_run(out: Path) -> RunDir | None:
    """The run already in ``out`` (``None`` if there is none); a corrupted one raises CheckpointError."""
    if not (out / CONFIG_NAME).exists():
        return None
    return RunDir.open(out)


def check_may_write(out: Path, *, resume: bool, overwrite: bool) -> RunDir | None:
    """Refuse an existing run in ``out`` unless ``resume`` or ``overwrite``; return that run (or None)."""
    if resume and overwrite:
        raise ConfigurationError("--resume continues the run in --out and --overwrite replaces it; give one of them")
    previous = existing_run(out)
    if previous is not None and not (resume or overwrite):
        raise ConfigurationError(
            f"{out} already holds a run; continue it with --resume (resume=True), replace it with --overwrite "
            "(overwrite=True), or choose another --out"
        )
    return previous


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], keys: tuple[str, ...], what: str) -> list[str]:
    out = []
    for key in keys:
        if old.get(key) != new.get(key):
            out.append(f"{what} {key}: {old.get(key)!r} in the run, {new.get(key)!r} now")
    return out


def _defense_summary(configs: list[dict[str, Any]]) -> str:
    if not configs:
        return "no defense"
    return ", ".join(str(c.get("name")) for c in configs)


def check_same_run(existing: RunDir, new_config: Mapping[str, Any]) -> None:
    """Refuse to resume ``existing`` with settings that would make a different run.

    Raises :class:`CheckpointError` listing every difference (data, model, training settings,
    defense stack). The privacy regime is part of the defense stack: resuming a non-private run
    with differential privacy (or the reverse) would report an epsilon for a model whose first
    epochs were trained otherwise.
    """
    old = existing.config
    diffs: list[str] = []
    old_data, new_data = old.get("data") or {}, new_config.get("data") or {}
    diffs += _differences(old_data, new_data, ("name", "root", "sha256"), "data")
    old_model, new_model = old.get("model") or {}, new_config.get("model") or {}
    diffs += _differences(old_model, new_model, ("name", "kwargs"), "model")
    old_train, new_train = old.get("train") or {}, new_config.get("train") or {}
    diffs += _differences(old_train, new_train, RESUME_TRAIN_KEYS, "training")
    # runs written before these settings existed had their defaults
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    ignored = ignored_on_resume(old_train, new_train)
    for key in _LATER_TRAIN_KEYS:
        if key in ignored:
            continue
        old_value, new_value = old_train.get(key, defaults[key]), new_train.get(key, defaults[key])
        if old_value != new_value:
            diffs.append(f"training {key}: {old_value!r} in the run, {new_value!r} now")
    old_defenses = list(old.get("defenses") or [])
    new_defenses = list(new_config.get("defenses") or [])
    if old_defenses != new_defenses:
        old_names = _defense_summary(old_defenses)
        new_names = _defense_summary(new_defenses)
        if old_names != new_names:
            diffs.append(f"defenses: {old_names} in the run, {new_names} now")
        else:
            for o, n in zip(old_defenses, new_defenses):
                for key in sorted(set(o) | set(n)):
                    if o.get(key) != n.get(key):
                        diffs.append(f"{o.get('name')} {key}: {o.get(key)!r} in the run, {n.get(key)!r} now")
    if diffs:
        raise CheckpointError(
            f"cannot resume {existing.path}: it was trained with different settings ({'; '.join(diffs)}); "
            "resume with the run's own settings, or train a new run (another --out, or --overwrite)"
        )


def staging_dir(out: Path) -> Path:
    """A fresh, empty directory beside ``out`` to train a replacement run in."""
    path = out.parent / (_STAGING.format(name=out.name) + uuid.uuid4().hex[:12])
    path.mkdir(parents=True)
    return path


def copy_for_update(out: Path) -> Path:
    """A staging copy of the run in ``out`` (its lock files left out), to finish an update in and swap in."""
    staging = staging_dir(out)
    for item in out.iterdir():
        if item.name.startswith(".securetrain.lock") or item.name.endswith(".tmp"):
            continue
        if item.is_dir():
            shutil.copytree(item, staging / item.name)
        else:
            shutil.copy2(item, staging / item.name)
    return staging


def _renameat2() -> Any | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a: Path, b: Path) -> bool:
    """Atomically exchange the directories ``a`` and ``b``; False where the system cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(rc == 0)


def swap_in(staging: Path, out: Path) -> None:
    """Replace the run in ``out`` by the complete run in ``staging``; the old one is deleted."""
    if exchange(staging, out):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the old run
        return
    retired = out.parent / (_RETIRED.format(name=out.name) + uuid.uuid4().hex[:12])
    os.rename(out, retired)  # a kill here: recover_interrupted_swap puts it back
    os.rename(staging, out)
    shutil.rmtree(retired, ignore_errors=True)


def recover_interrupted_swap(out: Path) -> None:
    """After a kill between the two renames of the fallback swap, put the old run back."""
    if out.exists():
        return
    retired = sorted(out.parent.glob(_RETIRED.format(name=out.name) + "*"))
    if retired:
        os.rename(retired[-1], out)


def remove_leftovers(out: Path) -> None:
    """Delete staging and retired directories of ``out`` left by killed runs (call under the run's lock)."""
    for pattern in (_STAGING, _RETIRED):
        for path in out.parent.glob(pattern.format(name=out.name) + "*"):
            shutil.rmtree(path, ignore_errors=True)


__all__ = [
    "RESUME_TRAIN_KEYS",
    "check_may_write",
    "check_out_dir",
    "check_same_run",
    "copy_for_update",
    "exchange",
    "existing_run",
    "recover_interrupted_swap",
    "remove_leftovers",
    "staging_dir",
    "swap_in",
]
