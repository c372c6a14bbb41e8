"""A run directory, opened for reading: its configuration, its model, its data.

:class:`RunDir` is the one way audit, membership, encrypt, serve and
:func:`securetrain.load_model` open a run directory. It sits below the training loop:
opening a run and loading its model imports neither :mod:`securetrain.training` nor
:mod:`securetrain.distributed`, so a server that only evaluates a trained model stays small.

A run directory holds ``model.safetensors`` (weights, never unpickled), ``config.json``,
``checkpoint.safetensors`` (to resume) and ``report.json`` / ``report.md`` / ``report.html``.

A run trained on your own model or data names them in ``config.json`` by import path
(``mypkg.models:SmallNet``, ``mypkg.data:load``) or file (``npz:/abs/path.npz``, with its
SHA-256). Importing a spec runs code, so opening a run never imports one by itself: pass the
same spec to :meth:`RunDir.open` (``model=``, ``data=``; on the command line ``--model`` /
``--data``) to rebuild the model or reload the data. Registered names (the zoo, installed
``securetrain.models`` / ``securetrain.datasets`` plugins) and ``.npz`` files need nothing
passed; a changed ``.npz`` file is refused.

Example:
    >>> import tempfile
    >>> import securetrain
    >>> from securetrain.rundir import RunDir
    >>> from securetrain.training import TrainConfig
    >>> d = tempfile.mkdtemp()
    >>> _ = securetrain.train(TrainConfig(data="breast_cancer", epochs=1, progress=False), d)
    >>> run = RunDir.open(d)
    >>> run.data.name, run.model_spec.name, run.load_model().training
    ('breast_cancer', 'mlp', False)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from securetrain.errors import (
    CheckpointError,
    ConfigurationError,
    DataError,
    ModelError,
    SpecError,
    UnknownNameError,
)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CHECKPOINT_NAME = "checkpoint.safetensors"
REPORT_NAME = "report.json"
MAX_CONFIG_BYTES = 16 * 2**20
"""A ``config.json`` larger than this is refused (a run's config is a few kB)."""


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class RunData:
    """The data section of ``config.json``: which data set, its shape, classes and bounds."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    bounds: tuple[float, float]
    kind: str = ""
    root: str | None = None
    source: str = "registry"
    """``registry`` (a registered name), ``plugin``, ``import`` (an import-path spec) or ``npz``."""
    sha256: str | None = None
    """SHA-256 of an ``.npz`` data file when the run was trained."""


@dataclass(frozen=True)
class RunModel:
    """The model section of ``config.json``: a name (registered or an import-path spec) and its options."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    zoo: bool = True
    source: str = "registry"
    """``registry`` (zoo, registered, plugin), ``import`` (an import-path spec) or ``object``
    (a module passed to :func:`securetrain.train`, not rebuildable)."""


def _section(cfg: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = cfg.get(key)
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is not a valid run config: its {key!r} section is missing or not an object")
    return value


def _parse_data(cfg: dict[str, Any], path: Path) -> RunData:
    d = _section(cfg, "data", path)
    try:
        shape = tuple(int(s) for s in d["input_shape"])
        bounds = (float(d["bounds"][0]), float(d["bounds"][1]))
        return RunData(
            name=str(d["name"]),
            input_shape=shape,
            num_classes=int(d["num_classes"]),
            bounds=bounds,
            kind=str(d.get("kind") or ""),
            root=str(d["root"]) if d.get("root") is not None else None,
            source=str(d.get("source") or "registry"),
            sha256=str(d["sha256"]) if d.get("sha256") is not None else None,
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(
            f"{path} is not a valid run config: bad 'data' section ({type(exc).__name__}: {exc})"
        ) from None


def _parse_model(cfg: dict[str, Any], path: Path) -> RunModel:
    m = _section(cfg, "model", path)
    name, kwargs = m.get("name"), m.get("kwargs") or {}
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        raise CheckpointError(
            f"{path} is not a valid run config: bad 'model' section (name {name!r}, kwargs {kwargs!r})"
        )
    zoo = bool(m.get("zoo", True))
    source = str(m.get("source") or "registry")
    if not zoo and source != "import":
        source = "object"  # a module passed to train(): not rebuildable whatever else the config says
    return RunModel(name=name, kwargs=dict(kwargs), zoo=zoo, source=source)


def _names_code(name: str) -> bool:
    """Whether a recorded model or data name would be imported (anything with a colon but an ``npz:`` file)."""
    return ":" in name and not name.startswith("npz:")


def _same_data_name(given: str, recorded: str) -> bool:
    """Whether a ``--data`` given now names the run's data (``npz:`` paths compared resolved)."""
    from securetrain.data.npz import npz_path

    given_path, recorded_path = npz_path(given), npz_path(recorded)
    if given_path is not None and recorded_path is not None:
        return given_path.resolve() == recorded_path.resolve()
    return given == recorded


@dataclass(frozen=True)
class RunDir:
    """A run directory opened for reading (use :meth:`open`)."""

    path: Path
    config: dict[str, Any]
    data: RunData
    model_spec: RunModel

    given_specs: frozenset[str] = frozenset()
    """The import-path specs the caller passed (and so allows to be imported)."""

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, model: str | None = None, data: str | None = None) -> RunDir:
        """Read and check ``config.json`` of the run directory at ``path``.

        ``model`` / ``data``: the import-path specs the run was trained with, passed again to
        allow importing them (see the module docstring); each must name the run's own model or
        data (:class:`~securetrain.errors.ConfigurationError` otherwise). Raises
        :class:`~securetrain.errors.CheckpointError` when ``path`` is not a run directory or its
        config is corrupted.
        """
        root = Path(path)
        p = root / CONFIG_NAME
        if not p.is_file():
            raise CheckpointError(f"{path} is not a securetrain run directory (no {CONFIG_NAME})")
        try:
            if p.stat().st_size > MAX_CONFIG_BYTES:
                raise CheckpointError(f"{p} is too large for a run config ({p.stat().st_size} bytes)")
            cfg = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise CheckpointError(f"{p} is corrupted ({type(exc).__name__}: {exc})") from None
        if not isinstance(cfg, dict):
            raise CheckpointError(f"{p} is corrupted (a run config is a JSON object, got {type(cfg).__name__})")
        run_data, run_model = _parse_data(cfg, p), _parse_model(cfg, p)
        given: set[str] = set()
        if model is not None:
            if model != run_model.name:
                raise ConfigurationError(
                    f"--model {model!r} is not the model {path} was trained with ({run_model.name!r}); "
                    "pass the run's own model spec (or leave --model out)"
                )
            given.add(model)
        if data is not None:
            if not _same_data_name(data, run_data.name):
                raise ConfigurationError(
                    f"--data {data!r} is not the data {path} was trained on ({run_data.name!r}); "
                    "pass the run's own data spec (or leave --data out)"
                )
            given.add(run_data.name)
        return cls(path=root, config=cfg, data=run_data, model_spec=run_model, given_specs=frozenset(given))

    def _require_given(self, spec: str, what: str) -> None:
        if spec not in self.given_specs:
            raise SpecError(
                f"{self.path} was trained with the {what} {spec!r}, named by import path; importing it runs code, "
                f"so securetrain does not import it because a run directory names it: pass it again to confirm "
                f"(--{what} {spec} on the command line, {what}={spec!r} in Python)"
            )

    def check_specs_given(self, *, model: bool = True, data: bool = True) -> None:
        """Raise :class:`~securetrain.errors.SpecError` unless the run's import-path specs (of the
        model and/or the data) were passed to :meth:`open`."""
        if model and _names_code(self.model_spec.name):
            self._require_given(self.model_spec.name, "model")
        if data and _names_code(self.data.name):
            self._require_given(self.data.name, "data")

    @property
    def weights_path(self) -> Path:
        """Where the trained weights are (safetensors)."""
        return self.path / WEIGHTS_NAME

    @property
    def checkpoint_path(self) -> Path:
        """Where the resume checkpoint is (safetensors)."""
        return self.path / CHECKPOINT_NAME

    @property
    def report_path(self) -> Path:
        """Where ``report.json`` is."""
        return self.path / REPORT_NAME

    @property
    def defense_configs(self) -> list[dict[str, Any]]:
        """The ``config()`` of every defense the run trained with."""
        defenses = self.config.get("defenses") or []
        if not isinstance(defenses, list) or not all(isinstance(d, dict) for d in defenses):
            raise CheckpointError(
                f"{self.path / CONFIG_NAME} is not a valid run config: 'defenses' must be a list of objects"
            )
        return [dict(d) for d in defenses]

    @property
    def train_settings(self) -> dict[str, Any]:
        """The ``train`` section (a :class:`~securetrain.training.TrainConfig` as a dict)."""
        return _section(self.config, "train", self.path / CONFIG_NAME)

    def build_model(self) -> nn.Module:
        """A freshly initialised model of the run's architecture (no weights loaded).

        A model named by import path is imported only when it was passed to :meth:`open`.
        """
        from securetrain.models import build_model

        spec = self.model_spec
        if spec.source == "object":
            raise CheckpointError(
                f"{self.path} was trained with a custom model ({spec.name}); build it yourself and load the weights "
                f"with securetrain.checkpoint.load_weights('{self.weights_path}', model), or train with the model "
                "named by import path (--model package.module:Factory) so that it can be rebuilt"
            )
        if _names_code(spec.name):  # by its form, whatever the config says its source is
            self._require_given(spec.name, "model")
        try:
            return build_model(spec.name, self.data.input_shape, self.data.num_classes, **spec.kwargs)
        except SpecError:
            raise
        except (UnknownNameError, ModelError, ConfigurationError) as exc:
            raise CheckpointError(
                f"{self.path / CONFIG_NAME} names a model that cannot be built ({exc}); the file was changed or "
                "comes from another securetrain: retrain, or restore the run's own config.json"
            ) from None

    def load_model(self) -> nn.Module:
        """The trained model: a plain ``nn.Module`` in eval mode (weights from safetensors, nothing unpickled).

        When ``report.json`` names the weights it describes (``model.weights_sha256``), weights that
        do not match are refused: the run was interrupted between its last two writes, or a file was
        replaced, and its report would describe another model.
        """
        from securetrain.checkpoint import load_weights

        model = self.build_model()
        load_weights(self.weights_path, model)
        expected = self._reported_weights_digest()
        if expected is not None and expected != file_sha256(self.weights_path):
            raise CheckpointError(
                f"{self.weights_path} is not the model that {self.report_path} describes: the run was interrupted "
                "while writing its results, or a file was replaced; finish it with `securetrain train ... --resume` "
                "(same settings) or train it again"
            )
        return model.eval()

    def _reported_weights_digest(self) -> str | None:
        path = self.report_path
        try:
            if not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:
                return None
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return None  # a damaged report is the report reader's to refuse, not the weights'
        model = report.get("model") if isinstance(report, dict) else None
        digest = model.get("weights_sha256") if isinstance(model, dict) else None
        return digest if isinstance(digest, str) else None

    def load_data(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A split (``"train"`` or ``"test"``) of the run's data set.

        Data named by import path is imported only when it was passed to :meth:`open`; an
        ``.npz`` file must be the one the run was trained on (same SHA-256). Data that is not
        registered is checked against the recorded shape, classes and bounds.
        """
        from securetrain.data.sources import resolve_data
        from securetrain.data.validate import validate_batch

        d = self.data
        if _names_code(d.name):  # by its form, whatever the config says its source is
            self._require_given(d.name, "data")
        try:
            source = resolve_data(d.name, d.root)
        except SpecError:
            raise
        except (UnknownNameError, ConfigurationError) as exc:
            raise CheckpointError(
                f"{self.path / CONFIG_NAME} names data that cannot be loaded ({exc}); the file was changed or "
                "comes from another securetrain: retrain, or restore the run's own config.json"
            ) from None
        if d.source == "npz" and d.sha256 is not None and source.record.get("sha256") != d.sha256:
            raise DataError(
                f"{d.name.removeprefix('npz:')} has changed since {self.path} was trained on it (SHA-256 differs); "
                "restore the original file, or train a new run on this one"
            )
        x, y = source.load(split)
        if source.origin != "registry":
            if tuple(x.shape[1:]) != d.input_shape:
                raise DataError(
                    f"data {d.name!r} ({split}) is shaped {tuple(x.shape[1:])} per sample, but {self.path} was trained "
                    f"on {d.input_shape}; the data changed since training"
                )
            validate_batch(x, y, d.num_classes, d.bounds, what=f"data {d.name!r} ({split}) of run {self.path}")
        return x, y


__all__ = ["CHECKPOINT_NAME", "CONFIG_NAME", "WEIGHTS_NAME", "RunData", "RunDir", "RunModel", "file_sha256"]
