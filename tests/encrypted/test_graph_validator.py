"""The HE validator sees the whole forward (torch.fx): functional calls found, converted or refused by node."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from securetrain.encrypted import EncryptedModel, compile_model, make_he_friendly, validate
from securetrain.encrypted.graph import find_calls, modularize, trace
from securetrain.errors import EncryptionError, ModelError
from securetrain.models.he import Square


class FunctionalCNN(nn.Module):
    """A user's CNN with every non-module call the compiler cannot see through module hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc1 = nn.Linear(3 * 4 * 4, 8)
        self.fc2 = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.conv(x)), 2)
        h = torch.flatten(h, 1)
        h = torch.relu(self.fc1(h)).relu()
        return F.softmax(self.fc2(h), dim=1)


def test_every_functional_call_is_found_with_its_node_name() -> None:
    calls = [(c.node, c.target, c.kind) for c in find_calls(FunctionalCNN())]
    assert calls == [
        ("relu", "torch.nn.functional.relu", "activation"),
        ("max_pool2d", "torch.nn.functional.max_pool2d", "maxpool"),
        ("flatten", "torch.flatten", "reshape"),
        ("relu_1", "torch.relu", "activation"),
        ("relu_2", "Tensor.relu", "activation"),
        ("softmax", "torch.nn.functional.softmax", "softmax"),
    ]
    issues = validate(FunctionalCNN())
    assert [(i.module_name, i.module_type) for i in issues] == [
        ("relu", "torch.nn.functional.relu"),
        ("max_pool2d", "torch.nn.functional.max_pool2d"),
        ("relu_1", "torch.relu"),
        ("relu_2", "Tensor.relu"),
        ("softmax", "torch.nn.functional.softmax"),
    ]  # the flatten is exact under CKKS: found, converted, not an issue
    assert "not a polynomial" in issues[0].problem and "max-pooling" in issues[1].problem


def test_make_he_friendly_converts_functional_calls_and_the_result_compiles() -> None:
    torch.manual_seed(0)
    model = FunctionalCNN().eval()
    converted = make_he_friendly(model, input_shape=(1, 8, 8))
    assert validate(converted) == [] and find_calls(converted) == []
    kinds = [type(m).__name__ for m in converted.modules()]
    assert kinds.count("Square") == 3 and "AvgPool2d" in kinds and "Flatten" in kinds
    assert "MaxPool2d" not in kinds and "ReLU" not in kinds and "Softmax" not in kinds
    assert validate(model) != []  # the original is untouched
    x = torch.rand(4, 1, 8, 8)
    pooled = F.avg_pool2d(model.conv(x).square(), 2).flatten(1)
    expected = model.fc2(model.fc1(pooled).square().square())
    torch.testing.assert_close(converted(x), expected)  # same weights, the same computation
    compiled = compile_model(converted, (1, 8, 8))
    torch.testing.assert_close(
        torch.from_numpy(compiled.forward(x.double())).float(), expected.detach(), rtol=1e-4, atol=1e-5
    )


def test_the_compiler_refuses_the_unconverted_functional_model() -> None:
    with pytest.raises(EncryptionError, match=r"relu \(torch.nn.functional.relu\)"):
        compile_model(FunctionalCNN(), (1, 8, 8))


def test_calls_without_a_module_equivalent_are_refused_naming_the_node() -> None:
    class Exp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.exp(x))

    class Indices(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = F.max_pool2d(x, 2, return_indices=True)
            return out.flatten(1)

    issues = validate(Exp())
    assert [(i.module_name, i.module_type) for i in issues] == [("exp", "torch.exp")]
    assert issues[0].fix.startswith("no automatic fix")
    with pytest.raises(ModelError, match=r"node 'exp' \(torch.exp\): it has no polynomial or linear equivalent"):
        make_he_friendly(Exp(), input_shape=(4,))
    with pytest.raises(ModelError, match=r"node 'max_pool2d_with_indices' \(.*\): it returns indices"):
        modularize(Indices())


def test_module_models_are_left_as_they_are_and_untraceable_ones_are_not_flagged() -> None:
    plain = nn.Sequential(nn.Linear(4, 3), Square(), nn.Linear(3, 2))
    assert find_calls(plain) == [] and modularize(plain) is plain

    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if float(x.sum()) > 0 else -x  # control flow on values: fx cannot trace it

    assert trace(Branchy()) is None and find_calls(Branchy()) == []


def test_encrypted_model_build_reads_the_input_shape_from_the_calibration_batch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), Square(), nn.Linear(4, 3))  # no input_shape attribute
    calib = torch.rand(6, 3, 4)
    em = EncryptedModel.build(model, calibration=calib)
    assert em.compiled.input_shape == (3, 4)
    with pytest.raises(EncryptionError, match=r"input_shape \(2, 6\) does not match the calibration data's samples"):
        EncryptedModel.build(model, calibration=calib, input_shape=(2, 6))
    with pytest.raises(EncryptionError, match="compile_model needs the shape of one input sample"):
        EncryptedModel.build(model)
