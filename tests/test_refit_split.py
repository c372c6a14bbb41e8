"""The final refit's split, ``train+validation``: what it holds, where it is refused, what DP accounts for."""

from __future__ import annotations

import json

import pytest
import torch

import securetrain
from securetrain import data
from securetrain.cli.main import main
from securetrain.data.sources import source_from_loader
from securetrain.errors import CheckpointError, ConfigurationError
from securetrain.training import TrainConfig


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x}


@pytest.mark.parametrize("name", ["digits", "breast_cancer"])
def test_train_and_validation_is_their_disjoint_union_in_a_fixed_order(name):
    (x_tr, y_tr), (x_va, y_va) = data.load(name, "train"), data.load(name, "validation")
    x, y = data.load(name, "train+validation")
    assert len(y) == len(y_tr) + len(y_va)
    assert torch.equal(x, torch.cat([x_tr, x_va])) and torch.equal(y, torch.cat([y_tr, y_va]))
    x_te, _ = data.load(name, "test")
    assert not _rows(x) & _rows(x_te)  # the refit never sees a test sample
    assert torch.equal(data.load(name, "train+validation")[0], x)  # the same every call
    source = securetrain.data.resolve_data(name)
    assert torch.equal(source.load("train+validation")[0], x)


def test_digits_refit_split_sizes():
    assert len(data.load("digits", "train+validation")[1]) == 1400
    assert len(data.load("digits", "test")[1]) == 397


def test_refused_where_there_is_no_validation_split(tmp_path, capsys):
    with pytest.raises(ConfigurationError, match=r"data set 'mnist' has no validation split.*train\+validation"):
        data.load("mnist", "train+validation")  # refused before any file is looked for

    def load(split):
        return torch.rand(8, 3), torch.arange(8) % 2

    with pytest.raises(ConfigurationError, match="has no validation split"):
        source_from_loader("mine", load).load("train+validation")
    with pytest.raises(ConfigurationError, match="never trained on test"):
        TrainConfig(train_split="test")
    assert main(["train", "--data", "mnist", "--train-split", "train+validation", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "has no validation split" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_a_private_refit_is_accounted_for_its_own_sample_count(tmp_path):
    from defenses.privacy import DifferentialPrivacy, calibrate_noise

    n = len(data.load("breast_cancer", "train+validation")[1])
    assert n == len(data.load("breast_cancer", "train")[1]) + 64
    cfg = TrainConfig(data="breast_cancer", epochs=1, batch_size=64, progress=False, train_split="train+validation")
    run = tmp_path / "run"
    result = securetrain.train(
        cfg, run, [DifferentialPrivacy(epsilon=3.0, delta=1e-5, accountant="rdp")], write_html=False
    )
    privacy = result.report.privacy
    assert privacy is not None
    assert privacy["sample_rate"] == pytest.approx(64 / n)  # one sample is still the privacy unit
    steps = int(privacy["steps"])
    sigma = calibrate_noise("rdp", target=3.0, delta=1e-5, sample_rate=64 / n, steps=steps)
    assert privacy["noise_multiplier"] == pytest.approx(sigma)
    assert sigma != pytest.approx(calibrate_noise("rdp", target=3.0, delta=1e-5, sample_rate=64 / 362, steps=steps))
    assert 2.9 < privacy["epsilon"] <= 3.0
    assert json.loads((run / "config.json").read_text())["train"]["train_split"] == "train+validation"
    # resuming with the other split would report an epsilon for a different data set: refused
    other = TrainConfig(data="breast_cancer", epochs=2, batch_size=64, progress=False)
    with pytest.raises(CheckpointError, match="train_split: 'train\\+validation' in the run, 'train' now"):
        dp = [DifferentialPrivacy(epsilon=3.0, delta=1e-5, accountant="rdp")]
        securetrain.train(other, run, dp, resume=True, write_html=False)


def test_cli_trains_on_the_refit_split(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--data", "breast_cancer", "--epochs", "1", "--train-split", "train+validation"]
    assert main([*argv, "--out", str(out), "--no-html", "--no-progress"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["train_split"] == "train+validation"
    assert main(["train", "--data", "breast_cancer", "--epochs", "1", "--out", str(tmp_path / "d"), "--no-html"]) == 0
    assert json.loads((tmp_path / "d" / "config.json").read_text())["train"]["train_split"] == "train"
