"""The ``bk`` package's structure: its layer registry, its one mode chooser and its errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from opacus.layers.dp_rnn import RNNLinear
from torch import nn

import defenses.privacy.engines.base as engines_base
from defenses.privacy import engines
from defenses.privacy.engines.bk import (
    BK_LAYERS,
    BKEngine,
    Call,
    ConvBlock,
    ConvGeometry,
    ConvLayer,
    EmbeddingLayer,
    GroupNormLayer,
    Layer,
    LayerNormLayer,
    LinearLayer,
    MatmulBlock,
    NormCost,
    PerSampleBlock,
    choose_mode,
    layer_for,
    layer_key,
    register_layer,
)
from defenses.privacy.engines.bk.chooser import GHOST_SPEEDUP
from securetrain.errors import ConfigurationError, EngineUnsupported, ModelError
from securetrain.registry import Registry

FAMILIES = {
    nn.Linear: LinearLayer,
    nn.Conv1d: ConvLayer,
    nn.Conv2d: ConvLayer,
    nn.LayerNorm: LayerNormLayer,
    nn.GroupNorm: GroupNormLayer,
    nn.Embedding: EmbeddingLayer,
}


# --------------------------------------------------------------------------- registry


def test_every_layer_family_is_registered_by_qualified_name():
    from defenses.privacy.layers import WSConvLayer  # the zoo's own layer; registered by the privacy defense
    from securetrain.models.standardized import WSConv2d

    expected = {**FAMILIES, WSConv2d: WSConvLayer}
    assert isinstance(BK_LAYERS, Registry)
    assert BK_LAYERS.names() == sorted(f"{t.__module__}.{t.__qualname__}" for t in expected)
    for module_type, handler in expected.items():
        assert BK_LAYERS.get(layer_key(module_type)) is handler


def test_layer_for_walks_the_mro():
    assert layer_for(nn.Linear(2, 2)) is LinearLayer
    assert layer_for(RNNLinear(2, 2)) is LinearLayer  # Opacus's DPLSTM layers are nn.Linear subclasses
    assert layer_for(nn.PReLU()) is None


class Scale(nn.Module):
    """``y = s * x`` with one trained scalar ``s``."""

    def __init__(self) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.tensor([1.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.s * x


class ScaleLayer(Layer[Scale]):
    def block(self, calls, policy, max_bytes):
        s = self.param("s")
        assert s is not None
        return PerSampleBlock({s: sum((a * g).flatten(1).sum(1, keepdim=True) for a, g in calls)})


def test_a_registered_layer_is_used_and_registering_twice_needs_overwrite():
    model = nn.Sequential(nn.Linear(3, 4), Scale(), nn.Linear(4, 2))
    assert BKEngine.unsupported(model) == {"1": "Scale has no bk handler"}
    with BK_LAYERS.temporarily(layer_key(Scale), ScaleLayer):
        assert BKEngine.unsupported(model) == {}
        with pytest.raises(ConfigurationError, match="already registered"):
            register_layer(Scale)(ScaleLayer)
        register_layer(Scale, overwrite=True)(ScaleLayer)
        x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
        engine = BKEngine()
        w = engine.attach(model)
        F.cross_entropy(w(x), y).backward()
        got = engine.collect().materialize()[model[1].s]
        engine.detach()
    assert layer_key(Scale) not in BK_LAYERS
    for i in range(5):  # each sample alone
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        torch.testing.assert_close(got[i], model[1].s.grad, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- errors


def test_there_is_one_engine_unsupported():
    assert engines.EngineUnsupported is EngineUnsupported
    assert engines_base.EngineUnsupported is EngineUnsupported
    assert issubclass(EngineUnsupported, ModelError) and issubclass(EngineUnsupported, ValueError)


def test_an_unsupported_layer_raises_engine_unsupported_naming_it():
    model = nn.Sequential(nn.Linear(3, 4), nn.PReLU(), nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(
        EngineUnsupported,
        match=r"^bk cannot compute per-sample gradients of: 1 \(PReLU has no bk handler\); "
        r"2 \(Conv2d: groups=2 \(only groups=1 is supported by bk\)\)$",
    ) as info:
        BKEngine().attach(model)
    assert info.value.modules == ["1", "2"]


def test_an_unknown_policy_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="policy must be auto, ghost, materialize or ghost-only, got 'fast'"):
        BKEngine(policy="fast")


# --------------------------------------------------------------------------- chooser


def test_the_chooser_follows_its_documented_table():
    cheap_ghost = NormCost(mat_elems=100, ghost_elems=10, mat_flops=GHOST_SPEEDUP * 10 + 1, ghost_flops=10)
    slow_ghost = NormCost(mat_elems=100, ghost_elems=10, mat_flops=GHOST_SPEEDUP * 10, ghost_flops=10)
    big_ghost = NormCost(mat_elems=100, ghost_elems=200, mat_flops=1, ghost_flops=1000)
    no_ghost = NormCost(mat_elems=100, ghost_elems=10, mat_flops=1000, ghost_flops=1, ghost_possible=False)
    roomy, tight = 10**6, 399  # 100 four-byte numbers: 400 bytes
    # materialize / ghost-only: fixed, whatever the cost
    assert choose_mode(cheap_ghost, "materialize", roomy, 4) == "mat"
    assert choose_mode(big_ghost, "ghost-only", roomy, 4) == "ghost"
    # ghost: the one that holds fewer numbers
    assert choose_mode(slow_ghost, "ghost", roomy, 4) == "ghost"
    assert choose_mode(big_ghost, "ghost", roomy, 4) == "mat"
    # auto: speed within max_bytes (ghost only when GHOST_SPEEDUP times cheaper), memory above it
    assert choose_mode(cheap_ghost, "auto", roomy, 4) == "ghost"
    assert choose_mode(slow_ghost, "auto", roomy, 4) == "mat"
    assert choose_mode(slow_ghost, "auto", tight, 4) == "ghost"
    assert choose_mode(big_ghost, "auto", tight, 4) == "mat"
    # a block without ghost norms always materialises
    for policy in ("auto", "ghost", "materialize", "ghost-only"):
        assert choose_mode(no_ghost, policy, tight, 4) == "mat"


@pytest.mark.parametrize("policy", ["auto", "ghost", "materialize", "ghost-only"])
@pytest.mark.parametrize("max_bytes", [0, 2**12, 2**30])
def test_matmul_and_conv_blocks_take_their_mode_from_the_chooser(policy, max_bytes):
    torch.manual_seed(0)
    for K, O, L in ((3, 2, 5), (64, 64, 2), (4, 4, 64)):
        fc = nn.Linear(K, O)
        block = MatmulBlock(fc.weight, fc.bias, torch.randn(4, K, L), torch.randn(4, O, L), policy, max_bytes)
        assert block.mode == choose_mode(NormCost.matmul(4, O, K, L), policy, max_bytes, 4)
    for C, O, H in ((1, 8, 4), (16, 16, 8), (2, 3, 12)):
        conv = nn.Conv2d(C, O, 3, padding=1)
        geo = ConvGeometry.of(conv)
        calls = [Call(torch.randn(4, C, H, H), torch.randn(4, O, H, H))]
        block = ConvBlock(conv.weight, conv.bias, geo, calls, policy, max_bytes)
        cost = NormCost.conv(4, O, C, (3, 3), H * H, (H + 2) ** 2)
        assert block.mode == choose_mode(cost, policy, max_bytes, 4)
        twice = ConvBlock(conv.weight, conv.bias, geo, calls * 2, policy, max_bytes)
        assert twice.mode == "mat"  # ghost norms need a single call


def test_one_position_is_an_outer_product_whatever_the_policy():
    fc = nn.Linear(3, 2)
    for policy in ("auto", "ghost", "materialize", "ghost-only"):
        block = MatmulBlock(fc.weight, fc.bias, torch.randn(4, 3, 1), torch.randn(4, 2, 1), policy, 0)
        assert block.mode == "outer"


# --------------------------------------------------------------------------- conv1d


@pytest.mark.parametrize("policy", ["auto", "ghost", "materialize", "ghost-only"])
def test_conv1d_per_sample_gradients_match_each_sample_alone(policy):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(2, 3, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.Conv1d(3, 2, 2, stride=2),
        nn.Flatten(),
        nn.Linear(10, 3),
    )
    x, y = torch.randn(4, 2, 10), torch.randint(0, 3, (4,))
    rows: dict[nn.Parameter, list[torch.Tensor]] = {p: [] for p in model.parameters()}
    for i in range(4):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for p in model.parameters():
            rows[p].append(p.grad.detach().clone())
    model.zero_grad()
    engine = BKEngine(policy=policy)
    w = engine.attach(model)
    F.cross_entropy(w(x), y).backward()
    psg = engine.collect()
    got = psg.materialize()
    for p, ref in rows.items():
        torch.testing.assert_close(got[p], torch.stack(ref), rtol=1e-4, atol=1e-6)
    flat = torch.cat([torch.stack(ref).flatten(1) for ref in rows.values()], 1)
    torch.testing.assert_close(psg.sq_norms(), flat.pow(2).sum(1), rtol=1e-4, atol=1e-6)
    engine.detach()
