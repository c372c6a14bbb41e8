"""Your own model and data: import-path specs, .npz files, plugins, rebuilding runs, devices."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import securetrain
from securetrain.cli.main import main
from securetrain.data import DATASET_PLUGINS, declare_data, resolve_data
from securetrain.data.npz import read_npz
from securetrain.errors import ConfigurationError, DataError, DataNotFoundError, ModelError, SpecError
from securetrain.models import MODELS, build_model
from securetrain.rundir import RunDir
from securetrain.training import TrainConfig, fit

HERE = __name__


# ---- what a user's package would define -------------------------------------------------------


class TinyNet(nn.Module):
    """A model that takes only its own options (no input_shape / num_classes)."""

    def __init__(self, features: int = 6, classes: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(x)
        return out


def shaped_net(input_shape: tuple[int, ...], num_classes: int, width: int = 4) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(int(np.prod(input_shape)), width), nn.ReLU(), nn.Linear(width, num_classes)
    )


def needs_a_width(width: int) -> nn.Module:
    return nn.Linear(width, 2)


def not_a_model() -> str:
    return "a string"


NOT_CALLABLE = 3


def _blobs(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    y = torch.arange(60 if split == "train" else 30) % 3
    x = (torch.rand(y.shape[0], 6, generator=g) * 0.5 + y[:, None] * 0.25).clamp(0, 1)
    return x, y


def load_blobs(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _blobs(split)


@declare_data(bounds=(0.0, 1.0), num_classes=5, kind="tabular")
def load_declared(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _blobs(split)


class BlobDataset(Dataset):  # type: ignore[type-arg]
    def __init__(self, split: str) -> None:
        self.x, self.y = _blobs(split)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def load_two_args(split: str, root: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _blobs(split)


def load_a_string(split: str) -> str:
    return "nope"


def load_nan(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _blobs(split)
    x[3, 2] = float("nan")
    return x, y


def load_float_inputs_bool(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _blobs(split)
    return x > 0.5, y


def load_shapes_differ(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _blobs(split)
    return (x if split == "train" else x[:, :5]), y


def load_raises(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    raise FileNotFoundError("/data/mine.csv")


# ---- model specs ---------------------------------------------------------------------------------


def test_a_model_is_built_from_an_import_path_with_its_own_options() -> None:
    model = build_model(f"{HERE}:TinyNet", (6,), 3, features=6, classes=3)
    assert isinstance(model, TinyNet) and model.fc.in_features == 6
    # input_shape and num_classes go only to factories that name them
    shaped = build_model(f"{HERE}:shaped_net", (2, 3), 4, width=5)
    assert shaped(torch.zeros(2, 2, 3)).shape == (2, 4)


@pytest.mark.parametrize(
    ("spec", "kwargs", "error", "match"),
    [
        ("no_such_pkg_q.models:Net", {}, SpecError, r"model spec 'no_such_pkg_q.models:Net': cannot import module"),
        (f"{HERE}:Missing", {}, SpecError, rf"model spec '{HERE}:Missing': module '{HERE}' has no attribute 'Missing'"),
        (f"{HERE}:NOT_CALLABLE", {}, SpecError, r"'NOT_CALLABLE' is a int, not a callable"),
        ("a:b:c", {}, SpecError, r"model spec 'a:b:c' is not of the form package.module:name"),
        (
            f"{HERE}:needs_a_width",
            {},
            SpecError,
            r"expected a factory called with keyword options only, but it takes \(width\)",
        ),
        (
            f"{HERE}:TinyNet",
            {"depth": 2},
            ConfigurationError,
            r"has no option 'depth'; its options are: features, classes",
        ),
        (f"{HERE}:not_a_model", {}, ModelError, r"returned a str; expected a torch.nn.Module"),
    ],
)
def test_bad_model_specs_get_typed_errors_naming_the_spec(spec: str, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build_model(spec, (6,), 3, **kwargs)


def test_a_model_that_does_not_fit_the_data_is_refused_naming_the_spec_and_shapes(tmp_path: Path) -> None:
    x, y = _blobs("train")
    with pytest.raises(ModelError, match=r"does not accept inputs of shape \(6,\)"):
        fit(TinyNet(features=4), (x, y), None, TrainConfig(epochs=1, progress=False))
    wrong_classes = TrainConfig(
        data=f"{HERE}:load_blobs", model=f"{HERE}:TinyNet", model_kwargs={"classes": 2}, progress=False
    )
    with pytest.raises(ModelError, match=rf"model '{HERE}:TinyNet' on data '{HERE}:load_blobs': .*shape \(batch, 3\)"):
        securetrain.train(wrong_classes, tmp_path / "r", write_html=False)
    assert not (tmp_path / "r" / "config.json").exists()


# ---- data specs ------------------------------------------------------------------------------------


def test_data_from_a_loader_is_inferred_and_a_declaration_wins() -> None:
    inferred = resolve_data(f"{HERE}:load_blobs")
    info = inferred.info()
    assert (info.input_shape, info.num_classes, info.kind, info.default_model) == ((6,), 3, "tabular", "mlp")
    x_tr, _ = _blobs("train")
    x_te, _ = _blobs("test")
    assert info.bounds == (min(float(x_tr.min()), float(x_te.min())), max(float(x_tr.max()), float(x_te.max())))
    assert inferred.inferred() == ["bounds", "num_classes", "kind", "default_model"]
    declared = resolve_data(f"{HERE}:load_declared")
    assert (declared.info().bounds, declared.info().num_classes) == ((0.0, 1.0), 5)
    assert declared.inferred() == ["default_model"]
    from_dataset = resolve_data(f"{HERE}:BlobDataset")  # a Dataset class: BlobDataset(split)
    x, y = from_dataset.load("train")
    assert torch.equal(x, x_tr) and y.dtype == torch.int64


@pytest.mark.parametrize(
    ("loader", "error", "match"),
    [
        (
            "load_two_args",
            SpecError,
            r"expected load\(split\) called with 'train' or 'test', but it takes \(split, root\)",
        ),
        (
            "load_a_string",
            DataError,
            r"load\('train'\) returned a str; expected \(x, y\) tensors or arrays, or a map-style",
        ),
        ("load_nan", DataError, r"1 input\(s\) contain NaN or infinite values"),
        ("load_float_inputs_bool", DataError, r"inputs have dtype torch.bool; expected real numbers"),
        ("load_shapes_differ", DataError, r"train inputs are shaped \(6,\) but test inputs \(5,\)"),
        ("load_raises", DataError, r"load\('train'\) raised FileNotFoundError: /data/mine.csv"),
    ],
)
def test_bad_loaders_get_typed_errors_naming_the_spec(loader: str, error: type, match: str) -> None:
    spec = f"{HERE}:{loader}"
    with pytest.raises(error, match=match) as info:
        resolve_data(spec).info()
    assert spec in str(info.value)


def _write_npz(path: Path, **overrides: object) -> Path:
    x_tr, y_tr = _blobs("train")
    x_te, y_te = _blobs("test")
    arrays: dict[str, object] = {
        "x_train": x_tr.numpy(),
        "y_train": y_tr.numpy(),
        "x_test": x_te.numpy(),
        "y_test": y_te.numpy(),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})  # type: ignore[arg-type]
    return path


def test_an_npz_file_is_read_and_checked(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / "ok.npz", bounds=np.array([0.0, 1.0]), num_classes=np.array(4))
    d = read_npz(path)
    assert (d.bounds, d.num_classes) == ((0.0, 1.0), 4)
    source = resolve_data(f"npz:{path}")
    assert source.info().num_classes == 4 and source.config_section()["sha256"] == d.sha256


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"y_test": None}, r"missing array\(s\) y_test"),
        ({"x_train": np.array([object(), 1], dtype=object)}, r"cannot be read as an .npz data file without unpickling"),
        ({"y_train": np.arange(60) * 0.5}, r"y_train has dtype float64; labels must be integer class indices"),
        ({"x_test": np.full((30, 6), np.nan)}, r"x_test has 30 sample\(s\) with NaN or infinite values"),
        ({"x_test": np.zeros((30, 5))}, r"x_train samples are shaped \(6,\) but x_test samples \(5,\)"),
        ({"y_train": np.arange(59)}, r"y_train has 59 labels for 60 inputs"),
        ({"y_train": -np.ones(60, dtype=np.int64)}, r"y_train has negative labels"),
        ({"num_classes": np.array(2)}, r"y_train has label 2, outside \[0, 1\] for the declared num_classes=2"),
        ({"bounds": np.array([0.0, 0.5])}, r"x_train lies in \[.*\], outside the declared bounds \[0.0, 0.5\]"),
        ({"x_train": np.ones((60, 6), dtype=bool)}, r"x_train has dtype bool; inputs must be real numbers"),
    ],
)
def test_bad_npz_files_are_refused(tmp_path: Path, overrides: dict, match: str) -> None:
    path = _write_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(DataError, match=match):
        read_npz(path)


def test_npz_that_is_missing_or_not_an_npz(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"no such file"):
        resolve_data(f"npz:{tmp_path / 'nothing.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match=r"junk.npz: "):
        resolve_data(f"npz:{tmp_path / 'junk.npz'}")


# ---- run directories rebuild what they were given -------------------------------------------------


@pytest.fixture(scope="module")
def spec_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("spec-run")
    cfg = TrainConfig(
        data=f"{HERE}:load_declared", model=f"{HERE}:shaped_net", model_kwargs={"width": 8}, epochs=2, progress=False
    )
    securetrain.train(cfg, out, write_html=False)
    return out


def test_a_run_records_specs_and_rebuilds_them_only_when_given_again(spec_run: Path) -> None:
    config = json.loads((spec_run / "config.json").read_text())
    assert config["model"]["source"] == "import" and config["data"]["source"] == "import"
    assert (config["data"]["bounds"], config["data"]["num_classes"]) == ([0.0, 1.0], 5)
    assert config["data"]["inferred"] == ["default_model"]
    with pytest.raises(SpecError, match=rf"trained with the model '{HERE}:shaped_net', named by import path"):
        securetrain.load_model(spec_run)
    with pytest.raises(SpecError, match=r"\(--data tests.test_specs:load_declared on the command line"):
        RunDir.open(spec_run).load_data("test")
    with pytest.raises(ConfigurationError, match=r"--model 'tests.test_specs:TinyNet' is not the model"):
        RunDir.open(spec_run, model=f"{HERE}:TinyNet")
    model = securetrain.load_model(spec_run, model=f"{HERE}:shaped_net")
    run = RunDir.open(spec_run, model=f"{HERE}:shaped_net", data=f"{HERE}:load_declared")
    x, y = run.load_data("test")
    assert torch.equal(x, _blobs("test")[0])
    assert not model.training and model(x).shape == (30, 5)


def test_a_changed_npz_file_is_refused(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / "d.npz")
    securetrain.train(TrainConfig(data=f"npz:{path}", epochs=1, progress=False), tmp_path / "run", write_html=False)
    run = RunDir.open(tmp_path / "run")
    assert run.load_data("train")[0].shape == (60, 6)  # no spec needed: an .npz file runs no code
    _write_npz(path, x_train=np.zeros((60, 6), dtype=np.float32))
    with pytest.raises(DataError, match=r"d.npz has changed since .* was trained on it \(SHA-256 differs\)"):
        run.load_data("train")


def test_entry_point_plugins_are_found_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed package declares a model and a data set in the entry-point groups."""
    pkg = tmp_path / "st_plugin_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            def make(input_shape, num_classes, width=3):
                return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], width), nn.Linear(width, num_classes))

            def load(split):
                n = 20 if split == "train" else 10
                return torch.rand(n, 4), torch.arange(n) % 2
            """
        )
    )
    dist = tmp_path / "st_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: st-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[securetrain.models]\nplugnet = st_plugin_demo:make\n\n[securetrain.datasets]\nplugdata = st_plugin_demo:load\n"
    )
    assert MODELS.entry_point_group == "securetrain.models"
    assert DATASET_PLUGINS.entry_point_group == "securetrain.datasets"
    monkeypatch.syspath_prepend(str(tmp_path))  # as if the package were installed
    try:
        MODELS.reload_entry_points()
        DATASET_PLUGINS.reload_entry_points()
        source = resolve_data("plugdata")
        info = source.info()
        model = build_model("plugnet", info.input_shape, info.num_classes, width=5)
        assert (source.origin, info.input_shape, info.num_classes, model[1].out_features) == ("plugin", (4,), 2, 5)
        assert "plugnet" in MODELS.names() and "plugdata" in DATASET_PLUGINS.names()
    finally:
        for registry, name in ((MODELS, "plugnet"), (DATASET_PLUGINS, "plugdata")):
            if name in registry:
                registry.remove(name)
        sys.modules.pop("st_plugin_demo", None)


# ---- devices ---------------------------------------------------------------------------------------


def test_devices_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown device 'gpu'; choose one of: cpu, cuda, cuda:N, auto"):
        TrainConfig(device="gpu")
    x, y = _blobs("train")
    result = fit(TinyNet(), (x, y), None, TrainConfig(epochs=1, progress=False, device="auto"))
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(result.model.parameters()).device.type == expected
    assert main(["train", "--data", "breast_cancer", "--device", "tpu", "--out", "unused", "--no-progress"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_a_typed_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, y = _blobs("train")
    with pytest.raises(ConfigurationError, match=r"device 'cuda' was requested but torch sees no CUDA GPU"):
        fit(TinyNet(), (x, y), None, TrainConfig(epochs=1, progress=False, device="cuda"))
    args = ["train", "--data", "breast_cancer", "--device", "cuda", "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(args) == 2
    assert "torch sees no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "r" / "config.json").exists()


def test_a_tampered_config_cannot_make_a_run_import_code(spec_run: Path, tmp_path: Path) -> None:
    """Gating goes by the name's form, not by the 'source' the config claims."""
    import shutil

    run = tmp_path / "tampered"
    shutil.copytree(spec_run, run)
    config = json.loads((run / "config.json").read_text())
    config["model"].update(name="antigravity:geohash", source="registry", zoo=True)
    config["data"].update(name="this:s", source="registry")
    (run / "config.json").write_text(json.dumps(config))
    modules_before = set(sys.modules)
    with pytest.raises(SpecError, match=r"trained with the model 'antigravity:geohash', named by import path"):
        RunDir.open(run).load_model()
    with pytest.raises(SpecError, match=r"trained with the data 'this:s', named by import path"):
        RunDir.open(run).load_data("train")
    assert "antigravity" not in set(sys.modules) - modules_before and "this" not in set(sys.modules) - modules_before


def test_a_broken_plugin_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from securetrain.registry import Registry

    dist = tmp_path / "st_broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: st-broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[securetrain.test_broken]\nbroken = st_no_such_module_zz:make\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry[object] = Registry("model", entry_point_group="securetrain.test_broken")
    registry.add("kept", 1)
    assert registry.get("kept") == 1  # a registered name needs no plugin
    for _ in range(2):  # refused on every lookup that needs the group, not only the first
        with pytest.raises(
            ConfigurationError, match=r"the installed model plugin 'broken' \(st_no_such_module_zz:make"
        ):
            registry.get("other")
