"""Engine verification on keyword (mapping) inputs and on models that apply dropout functionally."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from defenses.privacy.engines import make_engine
from defenses.privacy.modes import on_model_device, probe_inputs, select_engine, verify_engine


class FunctionalDropout(nn.Module):
    """Reads its dropout module's rate under its own training flag, as transformers attention does."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.dropout(torch.tanh(self.fc1(x)), p=self.drop.p, training=self.training))


class Keywords(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Linear(5, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, features: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.out(torch.tanh(self.emb(features)) * scale[:, None])}


def test_verification_turns_functional_dropout_off_and_restores_the_rate() -> None:
    model = FunctionalDropout().train()
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    assert verify_engine("bk", model, x, skip_param_grads=False) is None
    assert model.drop.p == 0.5 and model.training and model.drop.training


def test_engines_are_verified_and_chosen_on_mapping_inputs() -> None:
    model = Keywords()
    example = {"features": torch.randn(1, 5), "scale": torch.tensor([2.0])}
    probe = probe_inputs(example)
    assert set(probe) == {"features", "scale"} and probe["features"].shape == (3, 5)
    choice = select_engine(model, "auto", example)
    assert choice.name == "bk" and choice.verified


def test_vmap_does_not_claim_the_batch_gradient_while_dropout_is_active() -> None:
    model = FunctionalDropout()
    engine = make_engine("vmap")
    wrapped = engine.attach(model)
    x = torch.randn(4, 6)
    try:
        wrapped.train()
        wrapped(x).sum().backward()
        assert all(v is None for v in engine.collect().implied_grads().values())
        engine.clear()
        model.drop.p = 0.0  # no randomness: the sums must match autograd again
        wrapped(x).sum().backward()
        implied = engine.collect().implied_grads()
        assert all(implied[p] is not None for p in model.parameters())
    finally:
        engine.detach()


def test_the_probe_batch_follows_the_model_device() -> None:
    # a data set on the CPU and a model elsewhere (a GPU in training; the meta device here): the
    # verification's probe batch is moved to the model, tensors and mappings of tensors alike
    model = nn.Linear(3, 2).to("meta")
    assert on_model_device(torch.zeros(4, 3), model).device.type == "meta"
    moved = on_model_device({"a": torch.zeros(4, 3), "b": torch.ones(4)}, model)
    assert {k: v.device.type for k, v in moved.items()} == {"a": "meta", "b": "meta"}
    assert on_model_device(torch.zeros(2), nn.ReLU()).device.type == "cpu"  # no parameters: left where it is
