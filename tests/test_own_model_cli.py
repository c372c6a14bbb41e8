"""A user's own model (defined here, passed by import path) on data from an ``.npz`` file, through
the command line only: train, audit (evasion and membership), encrypt, serve."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from securetrain.cli.main import main
from securetrain.models import Square

REPO = Path(__file__).resolve().parents[1]
SPEC = f"{__name__}:SmallNet"


class SmallNet(nn.Module):
    """The user's model: flatten -> linear -> square -> linear (runs under CKKS as it is)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int = 16) -> None:
        super().__init__()
        features = int(np.prod(input_shape))
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), Square(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out


@pytest.fixture(scope="module")
def npz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real data in a file: 300 train / 100 test digits, 8x8 images in [0, 1], no bounds declared."""
    from securetrain import data

    (x_tr, y_tr), (x_te, y_te) = data.load("digits", "train"), data.load("digits", "test")
    path = tmp_path_factory.mktemp("npz") / "digits.npz"
    np.savez(
        path,
        x_train=x_tr[:300].numpy(),
        y_train=y_tr[:300].numpy(),
        x_test=x_te[:100].numpy(),
        y_test=y_te[:100].numpy(),
    )
    return path


def _cli(*args: str) -> int:
    return main(["--threads", "1", *args])


@pytest.mark.slow
def test_train_audit_encrypt_and_serve_a_model_given_by_import_path(
    npz_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    train = ["train", "--data", f"npz:{npz_file}", "--model", SPEC, "--model-kwargs", '{"hidden": 8}']
    assert _cli(*train, "--epochs", "4", "--lr", "0.05", "--out", str(run), "--no-progress", "--no-html") == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == {"name": SPEC, "kwargs": {"hidden": 8}, "zoo": False, "source": "import"}
    assert config["data"]["name"] == f"npz:{npz_file.resolve()}" and config["data"]["source"] == "npz"
    assert config["data"]["input_shape"] == [1, 8, 8] and config["data"]["num_classes"] == 10
    assert config["data"]["bounds"] == [0.0, 1.0]  # inferred from the data, and recorded as such
    assert {"bounds", "num_classes"} <= set(config["data"]["inferred"])
    report = json.loads((run / "report.json").read_text())
    assert report["accuracy"] > 0.5  # it learned something: the data and model really went through
    assert report["timing"]["device"] == "cpu"  # the default device, recorded

    # the run names the spec, but a run directory alone never makes securetrain import it
    capsys.readouterr()
    assert _cli("audit", str(run), "--attacks", "fgsm", "--samples", "20", "--no-progress") == 2
    assert f"pass it again to confirm (--model {SPEC}" in capsys.readouterr().err

    audit = ["audit", str(run), "--model", SPEC, "--attacks", "fgsm", "--eps", "0,0.1", "--samples", "40"]
    membership = ["--membership", "--shadow-models", "2", "--no-checks", "--no-progress", "--no-html"]
    assert _cli(*audit, *membership) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["robustness"]["attacks"]["fgsm"][1] < report["robustness"]["attacks"]["fgsm"][0]
    assert report["membership"]["shadow_models"] == 2 and report["membership"]["members"] == 300
    assert report["membership"]["canary"]["canaries"] == 100  # capped at the 100 test images

    assert _cli("encrypt", str(run), "--model", SPEC, "--samples", "16", "--no-html") == 0
    encrypted = json.loads((run / "report.json").read_text())["encrypted"]
    assert encrypted["samples"] == 16 and encrypted["agreement"] == 1.0

    command = [sys.executable, "-m", "securetrain.cli.main", "--threads", "1", "serve", str(run)]
    command += ["--model", SPEC, "--port", "0", "--mode", "throughput"]
    proc = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=REPO,
    )
    try:
        from securetrain.encrypted import RemoteClient

        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert match, f"unexpected first line from serve: {line!r}"
        x = torch.from_numpy(np.load(npz_file)["x_test"][:4])
        logits = RemoteClient(match.group(1)).predict(x)
        from securetrain.runs import load_model

        with torch.no_grad():
            plain = load_model(run, model=SPEC)(x).numpy()
        assert np.array_equal(logits.argmax(1), plain.argmax(1)) and np.abs(logits - plain).max() < 1e-3
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
