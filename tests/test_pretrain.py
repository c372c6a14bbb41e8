"""Public-data pretraining and frozen parameters: the public set, the refusals, and what DP accounts for."""

from __future__ import annotations

import json
import math

import pytest
import torch

import securetrain
from defenses.privacy import DifferentialPrivacy, recommended
from securetrain import data
from securetrain.cli.main import main
from securetrain.data.mnist8x8 import to_digits_format
from securetrain.errors import CheckpointError, ConfigurationError, SecureTrainError
from securetrain.models import build_model
from securetrain.training import TrainConfig, fit
from securetrain.training.pretrain import trainable_parameters

_SHAPE, _CLASSES = (1, 8, 8), 10


def _cnn(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", _SHAPE, _CLASSES, activation="tanh")


def _config(**kw) -> TrainConfig:
    base = {"data": "digits", "model": "cnn", "epochs": 1, "batch_size": 256, "lr": 0.02, "progress": False}
    return TrainConfig(**{**base, **kw})


def _dp() -> DifferentialPrivacy:
    return DifferentialPrivacy(epsilon=3.0, delta=1e-5, max_grad_norm=0.1, accountant="prv")


def test_the_public_set_is_mnist_drawn_like_digits():
    info = data.get_info("mnist-5k-8x8")
    assert (info.input_shape, info.num_classes, info.splits) == (_SHAPE, _CLASSES, ("train", "validation", "test"))
    assert (
        info.lineage()[-1] == data.get_info("mnist-5k").lineage()[-1] == data.get_info("mnist").lineage()[-1] == "mnist"
    )
    x, y = data.load("mnist-5k-8x8", "train")
    assert x.shape == (4000, 1, 8, 8) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(x * 16, (x * 16).round())  # counts of ON pixels in 4x4 blocks, as in digits
    assert torch.equal(y, data.load("mnist-5k", "train")[1])  # mnist-5k's split, redrawn
    # a vertical stroke lands in the middle columns; an empty image stays empty
    img = torch.zeros(2, 1, 28, 28)
    img[0, 0, 4:24, 12:16] = 1.0
    out = to_digits_format(img)
    assert float(out[1].abs().sum()) == 0
    cols = out[0, 0].sum(0)
    assert float(cols[3:5].sum()) == float(cols.sum()) > 0
    with pytest.raises(SecureTrainError, match="grey images"):
        to_digits_format(torch.zeros(2, 3, 28, 28))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pretrain": "digits"}, "names the training data itself"),
        ({"pretrain": ""}, "data set name"),
        ({"pretrain_epochs": 0}, "pretrain_epochs must be at least 1"),
        ({"pretrain_lr": math.nan}, "pretrain_lr must be a finite positive"),
        ({"trainable": "head."}, "list of parameter-name prefixes"),
        ({"trainable": []}, "list of parameter-name prefixes"),
        ({"trainable": ["head.", ""]}, "list of parameter-name prefixes"),
    ],
)
def test_bad_settings_are_refused_by_the_config(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        _config(**kwargs)


def test_public_data_of_the_same_origin_or_another_shape_is_refused():
    x, y = data.load("mnist-5k", "validation")
    same_origin = TrainConfig(data="mnist-5k", pretrain="mnist-5k-8x8", progress=False)
    with pytest.raises(ConfigurationError, match="training data 'mnist-5k' both come from 'mnist-5k'"):
        fit(build_model("cnn", (1, 28, 28), 10), (x, y), None, same_origin, num_classes=10)
    xb, yb = data.load("breast_cancer", "validation")
    other_shape = TrainConfig(data="breast_cancer", pretrain="digits", progress=False)
    with pytest.raises(ConfigurationError, match="has inputs \\[1, 8, 8\\].*the same model must fit both"):
        fit(build_model("mlp", (30,), 2), (xb, yb), None, other_shape, num_classes=2)
    with pytest.raises(SecureTrainError, match="no-such-set"):
        fit(_cnn(), data.load("digits", "validation"), None, _config(pretrain="no-such-set"), num_classes=10)


def test_trainable_prefixes_freeze_the_rest_and_restore_it():
    model = _cnn()
    with trainable_parameters(model, ["head.3"]) as (trained, total):
        assert (trained, total) == (650, sum(p.numel() for p in model.parameters()))
        assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.3.weight", "head.3.bias"]
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ConfigurationError, match="'body.' name no parameter"), trainable_parameters(model, ["body."]):
        pass
    model.head.requires_grad_(False)  # the user's own freezing is kept, and counted
    with (
        pytest.raises(ConfigurationError, match="leaves no parameter of the model to train"),
        trainable_parameters(model, ["head."]),
    ):
        pass
    assert not any(p.requires_grad for p in model.head.parameters())
    assert all(p.requires_grad for p in model.features.parameters())


def test_private_training_after_public_pretraining(monkeypatch):
    """Epsilon is what it would be without pretraining; pretraining never reads the private data;
    frozen parameters keep the pretrained values; the report says what was public."""
    private = data.load("digits", "train")
    plain = fit(_cnn(), private, None, _config(), [_dp()], num_classes=10)
    cfg = _config(pretrain="mnist-5k-8x8", pretrain_epochs=1, trainable=["head."])
    model = _cnn()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, private, None, cfg, [_dp()], num_classes=10)
    p0, p1 = plain.sections["privacy"], result.sections["privacy"]
    for key in ("epsilon", "noise_multiplier", "sample_rate", "steps"):
        assert p1[key] == p0[key], key
    assert p1["valid"] is True
    assert p1["pretraining"] == {
        "data": "mnist-5k-8x8",
        "samples": 4000,
        "epochs": 1,
        "trainable": ["head."],
        "trained_parameters": 8906,
        "total_parameters": 13706,
    }
    assert any("public data set mnist-5k-8x8" in s for s in p1.explain())
    assert all(p.requires_grad for p in model.parameters())  # restored after the run
    # the features were pretrained, then frozen: the same values whatever the private data (labels shuffled
    # here), so pretraining read none of it; the head was trained on it
    shuffled = (private[0], private[1][torch.randperm(len(private[1]), generator=torch.Generator().manual_seed(1))])
    other = fit(_cnn(), shuffled, None, cfg, [_dp()], num_classes=10).model
    for name, value in result.model.state_dict().items():
        if name.startswith("features."):
            assert not torch.equal(value, init[name]) and torch.equal(value, other.state_dict()[name]), name
        else:
            assert not torch.equal(value, other.state_dict()[name]), name


def test_a_run_records_pretraining_and_refuses_to_resume_with_other_settings(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = _config(pretrain="mnist-5k-8x8", pretrain_epochs=1, trainable=["head."])
    result = securetrain.train(cfg, run, [_dp()], write_html=False)
    assert json.loads((run / "config.json").read_text())["train"]["pretrain"] == "mnist-5k-8x8"
    assert result.report.privacy is not None and result.report.privacy["pretraining"]["data"] == "mnist-5k-8x8"
    assert "pretrained without privacy on the public data set mnist-5k-8x8" in (run / "report.md").read_text()
    for change, what in [({"trainable": None}, "trainable"), ({"pretrain": None}, "pretrain: 'mnist-5k-8x8'")]:
        other = _config(**{**{"pretrain": "mnist-5k-8x8", "pretrain_epochs": 1, "trainable": ["head."]}, **change})
        with pytest.raises(CheckpointError, match=f"training {what}"):
            securetrain.train(other, run, [_dp()], resume=True, write_html=False)
    # refused before anything is written: a prefix that names no parameter, public data that is the private set
    assert main(["train", "--model", "cnn", "--trainable", "body.", "--out", str(tmp_path / "a")]) == 2
    assert main(["train", "--model", "cnn", "--pretrain", "digits", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "name no parameter" in err[0] and "names the training data itself" in err[1]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_digits_cnn_recipe_pretrains_and_flags_override_it(tmp_path, capsys):
    rec = recommended("digits", "cnn")
    assert (rec.train["pretrain"], rec.train["trainable"]) == ("mnist-5k-8x8", ["head."])
    base = ["train", "--data", "digits", "--model", "cnn", "--dp", "--epochs", "1", "--pretrain-epochs", "1"]
    assert main([*base, "--out", str(tmp_path / "r"), "--no-html"]) == 0
    assert "pretrain=mnist-5k-8x8 (1 epochs, public), trainable=head." in capsys.readouterr().err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["privacy"]["pretraining"]["data"] == "mnist-5k-8x8"
    plain = [*base[:-2], "--pretrain", "none", "--trainable", "all"]  # --pretrain-epochs would be refused here
    assert main([*plain, "--out", str(tmp_path / "s"), "--no-html"]) == 0
    assert "pretrain=" not in capsys.readouterr().err
    config = json.loads((tmp_path / "s" / "config.json").read_text())["train"]
    assert (config["pretrain"], config["trainable"]) == (None, None)
    assert "pretraining" not in json.loads((tmp_path / "s" / "report.json").read_text())["privacy"]


@pytest.mark.parametrize("engine", ["bk", "ghost", "vmap", "hooks"])
def test_every_engine_trains_exactly_the_trainable_parameters(engine):
    x, y = data.load("digits", "validation")
    model = _cnn()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    dp = DifferentialPrivacy(epsilon=3.0, delta=1e-5, max_grad_norm=1.0, grad_sample_mode=engine)
    cfg = TrainConfig(epochs=1, batch_size=64, progress=False, trainable=["features.3.", "head.3."])
    result = fit(model, (x, y), None, cfg, [dp], num_classes=10)
    after = result.model.state_dict()
    changed = sorted({k.rsplit(".", 1)[0] for k in after if not torch.equal(after[k], init[k])})
    assert changed == ["features.3", "head.3"]  # a frozen layer between trained ones is back-propagated through
    assert result.sections["privacy"]["valid"] is True and result.sections["privacy"]["pretraining"]["data"] is None


def test_public_data_that_shares_samples_or_an_origin_chain_is_refused(tmp_path, capsys):
    from securetrain.data.base import DATASETS, DatasetInfo, register_dataset
    from securetrain.training.pretrain import public_data

    # mnist-5k is a sample of MNIST: neither is public data for the other, whatever the files hold
    assert data.get_info("mnist-5k-8x8").lineage() == ("mnist-5k-8x8", "mnist-5k", "mnist")
    x28 = torch.zeros(2, 1, 28, 28)
    with pytest.raises(ConfigurationError, match="both come from 'mnist'"):
        public_data(TrainConfig(data="mnist", pretrain="mnist-5k", progress=False), data.get_info("mnist"), x28, 10)
    # a user's data set declared as derived from mnist-5k-8x8 is followed through the chain, both ways
    derived = DatasetInfo("mnist-5k-8x8-mine", "image", _SHAPE, 10, (0.0, 1.0), "cnn", origin="mnist-5k-8x8")
    register_dataset(derived, lambda split, root: data.load("mnist-5k-8x8", split), overwrite=True)
    try:
        for private, public in [("mnist-5k-8x8-mine", "mnist-5k"), ("mnist-5k", "mnist-5k-8x8-mine")]:
            cfg = TrainConfig(data=private, pretrain=public, progress=False)
            with pytest.raises(ConfigurationError, match="both come from 'mnist-5k"):
                public_data(cfg, data.get_info(private), torch.zeros(2, *data.get_info(private).input_shape), 10)
    finally:
        DATASETS.remove("mnist-5k-8x8-mine")
    # the tensors trained on are compared, not names: the public set itself passed to fit under digits' name
    public_x, public_y = data.load("mnist-5k-8x8", "train")
    with pytest.raises(ConfigurationError, match="4000 of the 4000 inputs of pretrain data 'mnist-5k-8x8' are also"):
        fit(_cnn(), (public_x, public_y), None, _config(pretrain="mnist-5k-8x8"), [_dp()], num_classes=10)
    # a copy of the private data under another name: refused on the command line, nothing written
    import numpy as np

    (x, y), (xt, yt) = data.load("digits", "train"), data.load("digits", "test")
    np.savez(tmp_path / "copy.npz", x_train=x.numpy(), y_train=y.numpy(), x_test=xt.numpy(), y_test=yt.numpy())
    out = tmp_path / "r"
    assert main(["train", "--model", "cnn", "--pretrain", f"npz:{tmp_path / 'copy.npz'}", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1200 of the 1200 inputs" in err[0] and not out.exists()


def test_a_layer_replaced_for_privacy_stays_frozen():
    class WithBatchNorm(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
            self.head = torch.nn.Linear(4 * 36, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x))

    torch.manual_seed(0)
    model = WithBatchNorm()
    cfg = _config(trainable=["head."], batch_size=64)
    result = fit(model, data.load("digits", "validation"), None, cfg, [_dp()], num_classes=10)
    norm = result.model.features[1]
    assert type(norm).__name__ == "GroupNorm"  # replaced for DP, and not trained: it was frozen
    assert torch.equal(norm.weight, torch.ones(4)) and torch.equal(norm.bias, torch.zeros(4))
    assert result.sections["privacy"]["pretraining"]["trained_parameters"] == 4 * 36 * 10 + 10
    assert all(p.requires_grad for p in result.model.parameters())  # restored, the new layer's too


def test_sweep_and_reports_say_what_was_pretrained(tmp_path, capsys):
    # a sweep refuses bad pretraining settings before making its folder
    out = tmp_path / "sweep"
    assert main(["sweep", "--model", "cnn", "--trainable", "body.", "--epsilons", "1", "--out", str(out)]) == 2
    assert "name no parameter" in capsys.readouterr().err and not out.exists()
    # --pretrain-epochs without public data is refused; a plain run's report names its pretraining
    assert main(["train", "--model", "cnn", "--pretrain-epochs", "2", "--out", str(tmp_path / "x")]) == 2
    assert "--pretrain-epochs needs public data" in capsys.readouterr().err
    run = tmp_path / "plain"
    args = ["train", "--model", "cnn", "--epochs", "1", "--pretrain", "mnist-5k-8x8", "--pretrain-epochs", "1"]
    assert main([*args, "--trainable", "head.", "--out", str(run), "--no-html"]) == 0
    said = "pretrained without privacy on public data mnist-5k-8x8 (4000 samples, 1 epochs); trained here: head.*"
    assert said in capsys.readouterr().out and said in (run / "report.md").read_text()
