from __future__ import annotations

import json
import subprocess
import sys

import pytest

import securetrain
from securetrain.cli.main import main


def test_train_then_report_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "cnn", "--epochs", "1", "--out", str(out), "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "report.html" in printed
    for name in (
        "model.safetensors",
        "config.json",
        "checkpoint.safetensors",
        "report.json",
        "report.md",
        "report.html",
    ):
        assert (out / name).is_file(), name
    rep = json.loads((out / "report.json").read_text())
    for key in ("schema", "data", "model", "accuracy", "privacy", "robustness", "membership", "encrypted", "timing"):
        assert key in rep
    assert rep["privacy"] is None and rep["data"]["name"] == "digits" and rep["model"]["name"] == "cnn"
    model = securetrain.load_model(out)
    assert not model.training
    x, y = securetrain.data.load("digits", "test")
    acc = float((model(x).argmax(1) == y).float().mean())
    assert abs(acc - rep["accuracy"]) < 1e-6
    (out / "report.md").unlink()
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").is_file() and (out / "report.html").is_file()


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["train", "--data", "digits", "--model", "vgg", "--out", str(tmp_path)]) == 2
    assert "error: unknown model 'vgg'; choose one of:" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope")]) == 1  # not a usage error: exit status 1 (docs/cli.md)
    assert "no report at" in capsys.readouterr().err


def test_help_explains_every_option(capsys):
    # in this process (`python -m securetrain.cli.main` is run by the end-to-end tests of the
    # distributed launcher and the defense registry): the same parser, without a second interpreter
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for flag in ("--data", "--model", "--epochs", "--out", "--seed", "--resume", "--lr", "--batch-size"):
        assert flag in printed


def test_importing_the_package_is_cheap():
    code = "import sys, securetrain; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


@pytest.mark.slow
def test_demo_small_budget_writes_every_section(tmp_path, capsys):
    out = tmp_path / "demo"
    # one epoch per model (the sections, not the accuracy, are checked here)
    assert main(["--threads", "1", "demo", "--quick", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    assert "report:" in capsys.readouterr().out
    rep = json.loads((out / "report.json").read_text())
    assert rep["schema"] == "securetrain.report/1"
    # the top-level sections are one model's own (private+adversarial); no section comes from another model
    assert rep["model"]["variant"] == "private+adversarial"
    for key in ("privacy", "robustness", "membership"):
        assert rep[key] is not None, key
    assert rep["encrypted"] is None
    assert rep["privacy"]["valid"] is True and 0 < rep["privacy"]["epsilon"] <= 3.0
    assert len(rep["robustness"]["worst_case"]) == len(rep["robustness"]["epsilons"]) == 3
    names = [row["model"] for row in rep["comparison"]]
    assert names == ["plain", "private", "adversarial", "private+adversarial", "he (encrypted)"]
    assert [m["name"] for m in rep["models"]] == names
    for m in rep["models"]:
        sub = json.loads((out / m["run_dir"] / "report.json").read_text())
        assert {k: sub[k] for k in ("privacy", "robustness", "membership", "encrypted")} == {
            k: m[k] for k in ("privacy", "robustness", "membership", "encrypted")
        }, m["name"]
    assert rep["models"][-1]["encrypted"]["agreement"] >= 0.9
    for sub in ("plain", "private", "adversarial", "private_adversarial", "encrypted"):
        sub_rep = json.loads((out / sub / "report.json").read_text())
        assert (out / sub / "model.safetensors").is_file()
        assert sub_rep["robustness"] is not None or sub == "encrypted"
    assert json.loads((out / "private" / "report.json").read_text())["membership"] is not None
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
    assert html.index("<h2>Models side by side</h2>") < html.index("<h2>plain on digits</h2>")
    model = securetrain.load_model(out / "private_adversarial")
    assert not model.training and not any(hasattr(m, "_forward_hooks") and m._forward_hooks for m in model.modules())
    # the demo folder (report.json, no config.json) re-renders with `securetrain report`
    (out / "report.html").unlink()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").read_text().index("<h2>Models side by side</h2>") > 0


def test_threads_must_be_positive(capsys):
    assert main(["--threads", "0", "report", "nowhere"]) == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err
