"""Per-sample gradient engines against an independent reference: each sample run alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from defenses.privacy.engines import ENGINES, EngineUnsupported, make_engine
from defenses.privacy.engines.bk import BKEngine
from defenses.privacy.modes import select_engine, verify_engine
from securetrain.errors import ModelError
from securetrain.models import TransformerClassifier, build_model


class UnbatchedPositions(TransformerClassifier):
    """A transformer whose position embedding is indexed without the batch dimension
    (broadcast over the batch): per-sample-gradient engines that read a layer's input
    batch-first cannot see it; only ``vmap`` can."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.pos(self.positions[: x.shape[1]]).unsqueeze(0)
        return self.head(self.norm(self.blocks(self.embed(x) + pos)).flatten(1))


ZOO = {
    "mlp": (30,),
    "cnn": (1, 8, 8),
    "resnet": (1, 8, 8),
    "lstm": (16, 4),
    "transformer": (16, 4),
    "he": (1, 8, 8),
    "he-cnn": (1, 8, 8),
}
ALL_ENGINES = ["bk", "ghost", "hooks", "functorch", "ew", "vmap"]


def reference_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample gradients by running each sample alone through the plain model."""
    rows: dict[str, list[torch.Tensor]] = {}
    for i in range(x.shape[0]):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for n, p in model.named_parameters():
            if p.requires_grad:
                rows.setdefault(n, []).append(p.grad.detach().clone())
    model.zero_grad()
    return {n: torch.stack(v) for n, v in rows.items()}


def _case(name: str, batch: int = 5, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    if name == "unbatched-transformer":
        model = UnbatchedPositions(ZOO["transformer"], 4)
        x = torch.rand(batch, *ZOO["transformer"])
        return model, x, torch.randint(0, 4, (batch,))
    model = build_model(name, ZOO[name], 4)
    x = torch.rand(batch, *ZOO[name])
    y = torch.randint(0, 4, (batch,))
    return model, x, y


def _run(engine_name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    engine = select_engine(model, engine_name, x[:1]).engine  # the verified variant (bk on an LSTM keeps batch grads)
    wrapped = engine.attach(model)
    wrapped.train()
    F.cross_entropy(wrapped(x), y).backward()
    psg = engine.collect()
    return engine, psg


# Opacus's functorch path warns about CPU autocast dtypes on the transformer's attention;
# auto never picks it there (bk is verified first).
SUPPORTED = [(m, e) for m in ZOO for e in ALL_ENGINES if (m, e) != ("transformer", "functorch")]
SUPPORTED += [("unbatched-transformer", "vmap")]


@pytest.mark.parametrize("model_name,engine_name", SUPPORTED)
def test_per_sample_gradients_match_each_sample_alone(model_name, engine_name):
    model, x, y = _case(model_name)
    ref = reference_grads(model, x, y)
    engine, psg = _run(engine_name, model, x, y)
    try:
        got = psg.materialize()
        names = {id(p): n for n, p in model.named_parameters()}
        for p, g in got.items():
            torch.testing.assert_close(g, ref[names[id(p)]], rtol=1e-4, atol=1e-6)
        flat_ref = torch.cat([r.flatten(1) for r in ref.values()], 1)
        torch.testing.assert_close(psg.sq_norms().sqrt(), flat_ref.norm(dim=1), rtol=1e-4, atol=1e-6)
        w = torch.rand(x.shape[0])
        out = {p: torch.zeros_like(p) for p in got}
        psg.add_weighted(w, out)
        for p, o in out.items():
            torch.testing.assert_close(o, torch.einsum("b,b...->...", w, ref[names[id(p)]]), rtol=1e-4, atol=1e-6)
    finally:
        engine.detach()


@pytest.mark.parametrize(
    "engine_name,options",
    [
        ("bk", {"skip_param_grads": False}),
        ("ghost", {"skip_param_grads": False}),
        ("bk", {}),
        ("hooks", {}),
        ("ew", {}),
        ("vmap", {}),
    ],
)
def test_implied_gradient_equals_autograd_gradient(engine_name, options):
    """What autograd puts in p.grad for a loss on the per-sample path: the batch gradient, or
    nothing at all where the engine keeps autograd from computing it (bk, ExpandedWeights)."""
    model, x, y = _case("cnn")
    engine = make_engine(engine_name, **options)
    wrapped = engine.attach(model)
    F.cross_entropy(wrapped(x), y).backward()
    psg = engine.collect()
    try:
        implied = psg.implied_grads()
        for p in model.parameters():
            got = p.grad if p.grad is not None else torch.zeros_like(p)
            torch.testing.assert_close(implied[p], got, rtol=1e-4, atol=1e-7)
        skips = engine_name in ("bk", "ew") and not options
        assert all((p.grad is None) == skips for p in model.parameters())
    finally:
        engine.detach()


def test_bk_without_batch_gradients_handles_layers_not_fed_by_the_input():
    """A layer fed by a buffer (and one fed by integer indices) gets its per-sample gradients
    with skip_param_grads too: its output is made to start the backward pass."""

    class FromBuffer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("code", torch.ones(1, 3))
            self.side = nn.Linear(3, 2)
            self.main = nn.Linear(4, 2)

        def forward(self, x):
            return torch.relu_(self.main(x) + self.side(self.code.expand(x.shape[0], -1)))

    model = FromBuffer()
    x, y = torch.rand(5, 4), torch.randint(0, 2, (5,))
    choice = select_engine(model, "bk", x[:1])
    assert choice.name == "bk" and choice.options == {}
    ref = reference_grads(model, x, y)
    engine = choice.engine
    w = engine.attach(model)
    F.cross_entropy(w(x), y).backward()
    assert all(p.grad is None for p in model.parameters())  # autograd computed no batch gradient
    got = engine.collect().materialize()
    torch.testing.assert_close(got[model.side.weight], ref["side.weight"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[model.main.weight], ref["main.weight"], rtol=1e-4, atol=1e-6)
    engine.detach()


def test_ghost_and_materialized_norms_agree_on_a_sequence_linear():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Flatten(), nn.Linear(35, 3))
    x = torch.randn(4, 7, 6)
    y = torch.randint(0, 3, (4,))
    norms = {}
    for policy in ("ghost-only", "materialize", "auto", "ghost"):
        m = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Flatten(), nn.Linear(35, 3))
        m.load_state_dict(model.state_dict())
        engine = BKEngine(policy=policy)
        w = engine.attach(m)
        F.cross_entropy(w(x), y).backward()
        norms[policy] = engine.collect().sq_norms()
        engine.detach()
    for policy in ("ghost-only", "auto", "ghost"):
        torch.testing.assert_close(norms[policy], norms["materialize"], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("model_name", ["cnn", "resnet", "he-cnn", "lstm"])
def test_ghost_only_norms_match_each_sample_alone(model_name):
    model, x, y = _case(model_name)
    ref = reference_grads(model, x, y)
    engine = BKEngine(policy="ghost-only", skip_param_grads=model_name != "lstm")
    w = engine.attach(model)
    F.cross_entropy(w(x), y).backward()
    psg = engine.collect()
    flat_ref = torch.cat([r.flatten(1) for r in ref.values()], 1)
    torch.testing.assert_close(psg.sq_norms().sqrt(), flat_ref.norm(dim=1), rtol=1e-4, atol=1e-6)
    wts = torch.rand(x.shape[0])
    out = {p: torch.zeros_like(p) for p in model.parameters()}
    psg.add_weighted(wts, out)
    names = {id(p): n for n, p in model.named_parameters()}
    for p, o in out.items():
        torch.testing.assert_close(o, torch.einsum("b,b...->...", wts, ref[names[id(p)]]), rtol=1e-4, atol=1e-6)
    engine.detach()


def test_bk_handles_embedding_with_padding_and_layernorm():
    torch.manual_seed(2)

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(11, 4, padding_idx=0)
            self.norm = nn.LayerNorm(4)
            self.head = nn.Linear(4 * 6, 3)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.head(self.norm(self.emb(t)).flatten(1))

    model = Tokens()
    x = torch.randint(0, 11, (5, 6))
    x[0, :2] = 0
    x[1] = 3  # repeated tokens: the ghost norm's cross terms matter
    y = torch.randint(0, 3, (5,))
    ref = reference_grads(model, x, y)
    engine, psg = _run("bk", model, x, y)
    names = {id(p): n for n, p in model.named_parameters()}
    for p, g in psg.materialize().items():
        torch.testing.assert_close(g, ref[names[id(p)]], rtol=1e-4, atol=1e-6)
    flat_ref = torch.cat([r.flatten(1) for r in ref.values()], 1)
    torch.testing.assert_close(psg.sq_norms().sqrt(), flat_ref.norm(dim=1), rtol=1e-4, atol=1e-6)
    engine.detach()


def test_two_forward_passes_of_the_same_samples_sum_per_sample():
    """TRADES-like: clean and perturbed pass of the same samples in one loss."""
    model, x, y = _case("cnn")
    x2 = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    rows: dict[str, list[torch.Tensor]] = {}
    for i in range(x.shape[0]):
        model.zero_grad()
        (
            F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]) + F.cross_entropy(model(x2[i : i + 1]), y[i : i + 1])
        ).backward()
        for n, p in model.named_parameters():
            rows.setdefault(n, []).append(p.grad.clone())
    model.zero_grad()
    for engine_name in ("bk", "hooks", "vmap"):
        engine = make_engine(engine_name)
        w = engine.attach(model)
        (F.cross_entropy(w(x), y) + F.cross_entropy(w(x2), y)).backward()
        psg = engine.collect()
        assert engine.tap.contributing == 2 and not engine.tap.accumulated
        names = {id(p): n for n, p in model.named_parameters()}
        for p, g in psg.materialize().items():
            torch.testing.assert_close(g, torch.stack(rows[names[id(p)]]), rtol=1e-4, atol=1e-6)
        engine.detach()
        model.zero_grad()


def test_accumulated_backward_passes_are_separate_samples():
    model, x, y = _case("mlp", batch=6)
    ref = reference_grads(model, x, y)
    engine = make_engine("bk")
    w = engine.attach(model)
    F.cross_entropy(w(x[:4]), y[:4]).backward()
    F.cross_entropy(w(x[4:]), y[4:]).backward()
    psg = engine.collect()
    assert engine.tap.accumulated and psg.groups == 2 and psg.batch_size == 6
    names = {id(p): n for n, p in model.named_parameters()}
    for p, g in psg.materialize().items():
        torch.testing.assert_close(g, ref[names[id(p)]], rtol=1e-4, atol=1e-6)
    engine.detach()


@pytest.mark.parametrize("engine_name", ["bk", "hooks", "ew", "vmap"])
def test_an_empty_batch_gives_no_per_sample_gradient(engine_name):
    model, x, y = _case("cnn")
    engine = make_engine(engine_name)
    w = engine.attach(model)
    out = w(x[:0])
    F.cross_entropy(out, y[:0], reduction="sum").backward()
    psg = engine.collect()
    assert psg.batch_size == 0 and psg.sq_norms().numel() == 0
    engine.detach()


def test_hooks_are_off_when_disabled_and_removed_on_detach():
    model, x, y = _case("cnn")
    engine = make_engine("bk")
    w = engine.attach(model)
    w.disable_hooks()
    F.cross_entropy(w(x), y).backward()
    assert engine.collect().batch_size == 0
    w.enable_hooks()
    plain = engine.detach()
    assert plain is model
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_bk_refuses_an_unbatched_layer_with_the_fix():
    model, x, y = _case("unbatched-transformer")
    engine = make_engine("bk")
    w = engine.attach(model)
    F.cross_entropy(w(x), y).backward()
    with pytest.raises(EngineUnsupported, match=r"pos got input of shape \(16,\).*batched tensor"):
        engine.collect()
    engine.detach()


def test_bk_lists_layers_it_cannot_handle():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.PReLU())
    bad = BKEngine.unsupported(model)
    assert set(bad) == {"0", "2"}
    assert "groups=2" in bad["0"] and "PReLU has no bk handler" in bad["2"]


def test_auto_picks_bk_when_it_is_right_and_vmap_for_an_unbatched_layer():
    for name in ("cnn", "transformer"):
        model, x, _ = _case(name)
        assert select_engine(model, "auto", x[:1]).name == "bk"
    model, x, _ = _case("unbatched-transformer")
    choice = select_engine(model, "auto", x[:1])
    assert choice.name == "vmap"
    assert "pos" in choice.tried["bk"] and "hooks" in choice.tried


def test_an_explicit_mode_that_cannot_handle_the_model_is_refused():
    model, x, _ = _case("unbatched-transformer")
    with pytest.raises(ModelError, match=r"grad_sample_mode 'hooks' cannot compute this model's per-sample gradients"):
        select_engine(model, "hooks", x[:1])


def test_a_model_that_mixes_samples_is_refused():
    class Centered(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x - x.mean(0, keepdim=True))  # batch statistics

    with pytest.raises(ModelError, match="the model mixes the samples of a batch"):
        select_engine(Centered(), "auto", torch.rand(1, 4))


def test_verification_uses_no_global_randomness_and_restores_the_model():
    model, x, _ = _case("cnn")
    model.eval()
    probe = torch.rand(3, 1, 8, 8)
    state = torch.get_rng_state()
    assert verify_engine("bk", model, probe) is None
    assert torch.equal(state, torch.get_rng_state())
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_the_registry_names_every_engine():
    assert sorted(ENGINES.names()) == sorted(ALL_ENGINES)


def test_bk_switches_to_ghost_norms_when_per_sample_gradients_would_be_large():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(16, 16), nn.Flatten(), nn.Linear(16 * 8, 2))
    x, y = torch.randn(4, 8, 16), torch.randint(0, 2, (4,))
    small = BKEngine(max_bytes=4 * 16 * 16 * 4 - 1)  # one byte less than 4 samples x 16 x 16 floats
    w = small.attach(model)
    F.cross_entropy(w(x), y).backward()
    psg = small.collect()
    modes = [blk.mode for blk in psg._groups[0].blocks]
    assert modes[0] == "ghost"  # the (batch, 8, 16) layer: ghost norms instead of 4 x 16 x 16 per-sample numbers
    ref = reference_grads(model, x, y)
    flat_ref = torch.cat([r.flatten(1) for r in ref.values()], 1)
    torch.testing.assert_close(psg.sq_norms().sqrt(), flat_ref.norm(dim=1), rtol=1e-4, atol=1e-6)
    small.detach()


class _LoraLinear(nn.Module):
    """peft's LoRA layout: a frozen base layer and trained ``lora_A``/``lora_B`` children."""

    def __init__(self, d_in: int, d_out: int, rank: int = 2) -> None:
        super().__init__()
        self.base_layer = nn.Linear(d_in, d_out).requires_grad_(False)
        self.lora_A = nn.Linear(d_in, rank, bias=False)
        self.lora_B = nn.Linear(rank, d_out, bias=False)
        nn.init.normal_(self.lora_B.weight)  # peft starts B at zero; non-zero makes the check bite

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.lora_B(self.lora_A(x))


class _TinyLoraTransformer(nn.Module):
    """Frozen token embedding, trained positions, LayerNorm, LoRA projections, a GroupNorm'd conv."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(13, 8).requires_grad_(False)
        self.pos = nn.Embedding(6, 8)
        self.norm = nn.LayerNorm(8)
        self.q = _LoraLinear(8, 8)
        self.conv = nn.Conv1d(8, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.gn = nn.GroupNorm(2, 4)
        self.head = nn.Linear(4 * 6, 3)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(t.shape[1]).expand(t.shape[0], -1)
        h = self.q(self.norm(self.tok(t) + self.pos(positions)))
        h = self.gn(self.act(self.conv(h.transpose(1, 2))))
        return self.head(h.flatten(1))


@pytest.mark.parametrize("options", [{}, {"skip_param_grads": False}, {"policy": "ghost-only"}])
def test_bk_handles_frozen_layers_lora_children_embeddings_and_norms(options):
    torch.manual_seed(4)
    model = _TinyLoraTransformer()
    x, y = torch.randint(0, 13, (5, 6)), torch.randint(0, 3, (5,))
    x[2] = 7  # repeated tokens
    ref = reference_grads(model, x, y)
    assert "tok.weight" not in ref and "q.base_layer.weight" not in ref  # frozen: no per-sample gradient asked
    assert verify_engine("bk", model, x[:3], **options) is None
    engine = BKEngine(**options)
    wrapped = engine.attach(model)
    F.cross_entropy(wrapped(x), y).backward()
    psg = engine.collect()
    try:
        names = {id(p): n for n, p in model.named_parameters()}
        got = psg.materialize()
        assert sorted(names[id(p)] for p in got) == sorted(ref)
        for p, g in got.items():
            torch.testing.assert_close(g, ref[names[id(p)]], rtol=1e-4, atol=1e-6)
        flat_ref = torch.cat([r.flatten(1) for r in ref.values()], 1)
        torch.testing.assert_close(psg.sq_norms().sqrt(), flat_ref.norm(dim=1), rtol=1e-4, atol=1e-6)
        trained = [p for p in model.parameters() if p.requires_grad]
        assert all((p.grad is None) == ("skip_param_grads" not in options) for p in trained)
    finally:
        engine.detach()
    assert select_engine(model, "auto", x[:1]).name == "bk"


def test_bk_mixes_calls_formed_during_backward_and_calls_kept_for_ghost_norms():
    """A convolution called at two resolutions: under a tight memory bound the large call's
    per-sample gradients are formed as its gradient arrives, the small call is kept for ghost
    norms; the layer's per-sample gradients are their sum."""

    class TwoScales(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 64, 3, padding=1)
            self.head = nn.Linear(64 * 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            big = self.conv(x).mean((2, 3))
            small = self.conv(F.avg_pool2d(x, 8)).mean((2, 3))
            return self.head(torch.cat([big, small], 1))

    from defenses.privacy.engines.bk.capture import calls_by_group

    torch.manual_seed(0)
    model = TwoScales()
    x, y = torch.rand(4, 2, 16, 16), torch.tensor([0, 1, 2, 0])
    ref = reference_grads(model, x, y)
    engine = BKEngine(max_bytes=1)
    w = engine.attach(model)
    F.cross_entropy(w(x), y).backward()
    rec = calls_by_group(engine._captures)[0][engine._layers[0]]
    assert len(rec.reduced) == 1 and len(rec.calls) == 1
    psg = engine.collect()
    got = psg.materialize()
    torch.testing.assert_close(got[model.conv.weight], ref["conv.weight"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got[model.conv.bias], ref["conv.bias"], rtol=1e-4, atol=1e-6)
    flat_ref = torch.cat([r.flatten(1) for r in ref.values()], 1)
    torch.testing.assert_close(psg.sq_norms().sqrt(), flat_ref.norm(dim=1), rtol=1e-4, atol=1e-6)
    engine.detach()


@pytest.mark.parametrize("chunk_elements", [1, 2 * 4 * 36, 2**18])
def test_bk_group_norm_statistics_in_chunks_of_samples_match_each_sample_alone(monkeypatch, chunk_elements):
    """GroupNorm's per-group statistics are computed on chunks of samples (one sample, two of
    five, all): every chunking gives each sample's own gradients, on 4-d and 2-d inputs."""
    from defenses.privacy.engines.bk import norm

    monkeypatch.setattr(norm, "STATS_CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 6), nn.GroupNorm(3, 6)
    )
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[5].bias.uniform_(-1, 1)
    model.double()  # float64: the comparison is not about float32 rounding
    x, y = torch.rand(5, 1, 8, 8, dtype=torch.float64) * 3 + 1, torch.randint(0, 6, (5,))
    ref = reference_grads(model, x, y)
    engine = BKEngine()
    wrapped = engine.attach(model)
    F.cross_entropy(wrapped(x), y).backward()
    try:
        got = engine.collect().materialize()
        names = {id(p): n for n, p in model.named_parameters()}
        assert {"1.weight", "1.bias", "5.weight", "5.bias"} <= {names[id(p)] for p in got}
        for p, g in got.items():
            torch.testing.assert_close(g, ref[names[id(p)]], rtol=1e-4, atol=1e-6)
    finally:
        engine.detach()


def test_bk_drops_the_input_of_a_layer_formed_during_backward():
    """Conv and norm inputs are freed once their per-sample gradients are formed; a second
    backward pass through a retained graph adds to them while the graph still holds the input
    (GroupNorm saves it) and is refused, naming the layer, where nothing does (the conv)."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 4), nn.GroupNorm(2, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
    ref = reference_grads(model, x, y)
    engine = BKEngine()
    wrapped = engine.attach(model)
    loss = F.cross_entropy(wrapped(x), y)
    loss.backward(retain_graph=True)
    assert all(cap.activation is None for cap in engine._captures if cap.reduced is not None)
    assert any(cap.reduced is not None for cap in engine._captures)
    loss.backward()
    try:
        got = engine.collect().materialize()
        for p in (model[1].weight, model[1].bias):
            torch.testing.assert_close(got[p], 2 * ref["1." + ("weight" if p is model[1].weight else "bias")])
    finally:
        engine.detach()

    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 36, 3))
    engine = BKEngine()
    wrapped = engine.attach(conv)
    loss = F.cross_entropy(wrapped(torch.rand(4, 1, 8, 8)), torch.tensor([0, 1, 2, 0]))
    loss.backward(retain_graph=True)
    try:
        with pytest.raises(EngineUnsupported, match=r"0 when the first backward pass.*retain_graph=True"):
            loss.backward()
    finally:
        engine.detach()
