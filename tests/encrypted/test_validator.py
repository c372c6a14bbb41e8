"""The validator's list and fixes, and make_he_friendly's conversions."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from securetrain.data import load
from securetrain.encrypted import (
    FineTune,
    Issue,
    PolyActivation,
    compile_model,
    fit_polynomial,
    is_he_friendly,
    make_he_friendly,
    validate,
)
from securetrain.encrypted.layers import ChannelAffine
from securetrain.errors import ModelError, UnknownNameError
from securetrain.models import build_model
from securetrain.models.he import Square


def relu_pool_bn_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 10),
    )


def test_validator_lists_each_problem_with_its_fix() -> None:
    issues = validate(relu_pool_bn_cnn())
    assert issues == [
        Issue(
            "1",
            "BatchNorm2d",
            "batch normalisation at inference is a separate affine map that costs a multiplicative level of its own",
            "fold it into the preceding linear or convolution layer (make_he_friendly does this)",
        ),
        Issue(
            "2",
            "ReLU",
            "ReLU is not a polynomial; CKKS evaluates only additions and multiplications",
            "replace it by Square() or a fitted degree-2 polynomial (make_he_friendly(model, activation='square' or 'poly'))",
        ),
        Issue(
            "3",
            "MaxPool2d",
            "max-pooling needs comparisons, which CKKS cannot evaluate",
            "replace it by AvgPool2d(kernel_size=2, stride=2, padding=0) (make_he_friendly does this)",
        ),
    ]


def test_he_zoo_models_are_friendly_from_the_start() -> None:
    assert validate(build_model("he", (1, 8, 8), 10)) == []
    assert validate(build_model("he-cnn", (1, 8, 8), 10)) == []
    assert not is_he_friendly(build_model("cnn", (1, 8, 8), 10))


def test_unsupported_layers_and_softmax_are_reported() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Softmax(dim=1))
    issues = validate(model)
    assert [(i.module_name, i.module_type) for i in issues] == [("1", "LayerNorm"), ("2", "Softmax")]
    assert issues[0].fix.startswith("no automatic fix")
    assert "argmax of the logits is unchanged" in issues[1].fix
    with pytest.raises(ModelError, match=r"make_he_friendly cannot fix every layer:\n- 1 \(LayerNorm\)"):
        make_he_friendly(model, input_shape=(4,))


def test_make_he_friendly_converts_a_copy_and_folds_batchnorm_exactly() -> None:
    torch.manual_seed(0)
    model = relu_pool_bn_cnn()
    bn = model[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    before = copy.deepcopy(model.state_dict())
    converted = make_he_friendly(model, input_shape=(1, 8, 8))
    assert validate(converted) == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    kinds = [type(m).__name__ for m in converted]
    assert kinds == ["Conv2d", "Identity", "Square", "AvgPool2d", "Flatten", "Linear"]
    # folding is exact: conv+BN of the original equals the folded conv
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(converted[0](x), model[1](model[0](x)), atol=1e-5)


def test_batchnorm_without_a_linear_layer_before_it_becomes_a_channel_affine() -> None:
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2)).eval()
    model[0].running_mean.fill_(1.0)
    model[0].running_var.fill_(4.0)
    converted = make_he_friendly(model, input_shape=(4,))
    assert isinstance(converted[0], ChannelAffine)
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.allclose(converted(x), model(x), atol=1e-5)


def test_poly_activation_is_fitted_and_compiles_to_one_square() -> None:
    coeffs = fit_polynomial(torch.relu, interval=(-2.0, 2.0))
    assert coeffs[2] > 0 and abs(coeffs[1] - 0.5) < 1e-6  # relu's odd part is x/2 exactly
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    converted = make_he_friendly(model, activation="poly", poly_interval=(-2.0, 2.0))
    assert isinstance(converted[1], PolyActivation)
    cm = compile_model(converted, (4,))
    assert [op.kind for op in cm.ops] == ["affine", "square", "affine"]
    x = torch.randn(7, 4)
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(cm.forward(x)).float(), converted(x), atol=1e-5)


def test_poly_activation_refuses_high_degree() -> None:
    with pytest.raises(ModelError, match="PolyActivation takes 1 to 3 coefficients"):
        PolyActivation([0.0, 1.0, 0.5, 0.1])


def test_unknown_activation_replacement_lists_choices() -> None:
    with pytest.raises(UnknownNameError, match="choose one of: poly, square"):
        make_he_friendly(nn.Sequential(nn.Linear(2, 2)), activation="cube")


@pytest.mark.slow
def test_fine_tuning_recovers_accuracy_after_conversion() -> None:
    torch.manual_seed(0)
    x, y = load("digits", "train")
    xt, yt = load("digits", "test")
    model = relu_pool_bn_cnn()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    for _ in range(3):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            F.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
            opt.step()
    model.eval()

    def acc(m: nn.Module) -> float:
        with torch.no_grad():
            return float((m(xt).argmax(1) == yt).float().mean())

    raw = make_he_friendly(model, activation="square", input_shape=(1, 8, 8))
    tuned = make_he_friendly(model, activation="square", fine_tune=FineTune(x, y, epochs=3, lr=3e-3))
    assert acc(model) > 0.85
    assert acc(tuned) > 0.85
    assert acc(tuned) > acc(raw)
    assert not tuned.training
    assert any(isinstance(m, Square) for m in tuned.modules())
