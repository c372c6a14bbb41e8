from __future__ import annotations

import pytest
import torch
from torch import nn

from securetrain import data
from securetrain.errors import ModelError, UnknownNameError
from securetrain.models import MODELS, build_model, find_batchnorm, register_model

ZOO_DATA = {
    "mlp": "digits",
    "cnn": "digits",
    "resnet": "digits",
    "lstm": "sequences",
    "transformer": "sequences",
    "he": "digits",
    "he-cnn": "digits",
    "he-mnist": "digits",
    "scatter": "digits",
}


def test_zoo_is_registered():
    assert set(ZOO_DATA) <= set(MODELS.names())


@pytest.mark.parametrize("name", sorted(ZOO_DATA))
def test_zoo_model_forward_train_step_and_no_batchnorm(name):
    ds = ZOO_DATA[name]
    info = data.get_info(ds)
    x, y = data.load(ds, "train")
    x, y = x[:16], y[:16]
    torch.manual_seed(0)
    model = build_model(name, info.input_shape, info.num_classes)
    assert model(x).shape == (16, info.num_classes)
    assert find_batchnorm(model) == []
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    changed = [not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters())]
    assert all(changed), f"{name}: some parameters received no update"


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_image_models_take_any_size_and_channels(name, shape):
    model = build_model(name, shape, 10)
    assert model(torch.rand(2, *shape)).shape == (2, 10)


def test_unknown_model_lists_choices():
    with pytest.raises(
        UnknownNameError, match=r"unknown model 'vgg'; choose one of: cnn, he, he-cnn, he-mnist, lstm, mlp"
    ):
        build_model("vgg", (1, 8, 8), 10)


def test_wrong_input_rank_is_a_model_error():
    with pytest.raises(ModelError, match=r"model 'lstm' needs sequence inputs shaped \(seq_len, features\)"):
        build_model("lstm", (1, 8, 8), 10)


def test_register_custom_model_and_refuse_silent_overwrite():
    class Tiny(nn.Module):
        def __init__(self, input_shape, num_classes):
            super().__init__()
            self.fc = nn.Linear(int(torch.tensor(input_shape).prod()), num_classes)

        def forward(self, x):
            return self.fc(x.flatten(1))

    register_model("tiny-test", Tiny)
    try:
        assert build_model("tiny-test", (1, 8, 8), 10)(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
        with pytest.raises(ValueError, match="already registered"):
            register_model("tiny-test", Tiny)
    finally:
        MODELS.remove("tiny-test")
