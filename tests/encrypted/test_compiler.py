"""Compiling models into chains of affine maps and squares."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from securetrain.encrypted import HECNN2, compile_model, register_layer
from securetrain.encrypted.layers import CKKS_LAYERS
from securetrain.errors import EncryptionError
from securetrain.models import build_model
from securetrain.models.he import Square


@pytest.mark.parametrize(
    ("model", "kinds"),
    [
        (build_model("he", (1, 8, 8), 10), ["affine", "square", "affine"]),
        (build_model("he-cnn", (1, 8, 8), 10), ["affine", "square", "affine"]),
        (HECNN2((1, 8, 8), 10), ["affine", "square", "affine", "square", "affine"]),
    ],
    ids=["he", "he-cnn", "two-conv"],
)
def test_compiled_chain_matches_the_module(model: nn.Module, kinds: list[str]) -> None:
    cm = compile_model(model, (1, 8, 8))
    assert [op.kind for op in cm.ops] == kinds
    assert cm.depth == len(kinds)
    x = torch.rand(9, 1, 8, 8)
    with torch.no_grad():
        ref = model.double()(x.double()).numpy()
    np.testing.assert_allclose(cm.forward(x), ref, rtol=1e-9, atol=1e-9)


def test_convolution_becomes_a_sparse_affine_map() -> None:
    cm = compile_model(build_model("he-cnn", (1, 8, 8), 10), (1, 8, 8))
    conv = cm.ops[0]
    assert (conv.in_features, conv.out_features) == (64, 64)
    # 3x3 kernel, stride 2, padding 1 on 8x8 -> 4x4 per channel: the corner output reads 4 inputs,
    # the other 6 border outputs 6, the 9 interior ones 9; zero weights are not stored
    assert conv.weight.nnz == 4 * (1 * 4 + 6 * 6 + 9 * 9)
    assert sorted(set(np.diff(conv.weight.indptr).tolist())) == [4, 6, 9]


def test_average_pooling_fuses_with_the_next_convolution() -> None:
    cm = compile_model(HECNN2((1, 8, 8), 10), (1, 8, 8))
    assert cm.n_affine == 3 and cm.n_square == 2  # conv | avgpool+conv | linear
    assert "features.2+features.3" in cm.ops[2].source


def test_a_residual_connection_is_refused() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x) + x)

    with pytest.raises(
        EncryptionError, match=r"layer 'b' \(Linear\) does not receive the output of the layer before it"
    ):
        compile_model(Residual(), (4,))


def test_a_functional_activation_in_forward_is_refused() -> None:
    class Hidden(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.a(x))

    # found before compiling, by tracing forward() with torch.fx, and named by its graph node
    with pytest.raises(EncryptionError, match=r"- relu \(torch.relu\): torch.relu called in forward\(\) is not a poly"):
        compile_model(Hidden(), (4,))


def test_a_model_that_is_not_he_friendly_is_refused_with_the_fixes() -> None:
    with pytest.raises(EncryptionError, match=r"cannot run under CKKS as it is:\n- features.1 \(ReLU\)"):
        compile_model(build_model("cnn", (1, 8, 8), 10), (1, 8, 8))


def test_the_input_shape_is_required() -> None:
    with pytest.raises(EncryptionError, match="compile_model needs the shape of one input sample"):
        compile_model(nn.Sequential(nn.Linear(3, 2)))


def test_registered_layers_are_checked_for_linearity() -> None:
    class Double(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2.0 * x

    class Cube(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x**3

    register_layer(Double, "linear")
    register_layer(Cube, "linear")
    try:
        cm = compile_model(nn.Sequential(nn.Linear(3, 3), Double(), Square(), nn.Linear(3, 2)), (3,))
        assert [op.kind for op in cm.ops] == ["affine", "square", "affine"]  # Double fused into the Linear
        with pytest.raises(
            EncryptionError, match=r"layer '1' \(Cube\) is registered as linear but does not compute an affine map"
        ):
            compile_model(nn.Sequential(nn.Linear(3, 3), Cube()), (3,))
    finally:
        for cls in (Double, Cube):
            CKKS_LAYERS.remove(f"{cls.__module__}.{cls.__qualname__}")


def test_calibration_bounds_every_intermediate_value() -> None:
    torch.manual_seed(0)
    model = build_model("he", (1, 8, 8), 10)
    x = torch.rand(32, 1, 8, 8)
    cm = compile_model(model, (1, 8, 8), calibration=x)
    cal = cm.calibration
    assert cal is not None and cal.samples == 32
    with torch.no_grad():
        hidden = model.net[1](model.net[0](x))
        logits = model(x)
    assert cal.op_max[0] == pytest.approx(float(hidden.abs().max()), rel=1e-5)
    assert cal.op_max[1] == pytest.approx(float((hidden**2).max()), rel=1e-5)
    assert cal.op_max[2] == pytest.approx(float(logits.abs().max()), rel=1e-5)
    assert cal.value_bound >= max(cal.op_max)
