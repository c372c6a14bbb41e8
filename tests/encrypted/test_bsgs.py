"""The latency packing's im2col / baby-step giant-step program: exact results, the planner's choice by
estimated cost, and Galois keys for exactly the rotations the program performs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import tenseal as ts
import torch
from torch import nn

from securetrain.encrypted import EncryptedModel, EncryptionClient, InferenceServer, compile_model, get_packing, plan
from securetrain.encrypted.bsgs import BSGSProgram, bsgs_structure, pack_gathered
from securetrain.encrypted.costmodel import relative_seconds
from securetrain.encrypted.keys import public_context_bytes
from securetrain.encrypted.packing import Group
from securetrain.models.he import Square


def tiny_cnn() -> nn.Module:
    """Conv (2 maps, 3x3, stride 2, padding 1) -> square -> dense 18 -> 5 -> square -> dense 3 on 1x6x6."""
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2, padding=1), Square(), nn.Flatten(), nn.Linear(18, 5), Square(), nn.Linear(5, 3)
    ).eval()


@pytest.fixture(scope="module")
def tiny() -> tuple[nn.Module, torch.Tensor]:
    return tiny_cnn(), torch.rand(3, 1, 6, 6)


@pytest.mark.parametrize(
    "variant",
    [
        "im2col",
        "bsgs",
        pytest.param("expanded", marks=pytest.mark.slow),  # TenSEAL's own products: slower, kept on request
        pytest.param("diagonal", marks=pytest.mark.slow),
    ],
)
def test_every_latency_variant_matches_plaintext(tiny, variant: str) -> None:
    model, x = tiny
    em = EncryptedModel.build(model, "latency", calibration=x, variants=(variant,))
    assert em.plan.variant == variant and em.plan.security_bits == 128
    client = EncryptionClient(em.spec())
    server = InferenceServer(em, client.public_context())
    out = client.decrypt(server.evaluate(client.encrypt(x)))
    with torch.no_grad():
        ref = model.double()(x.double()).numpy()
    model.float()
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= em.plan.estimated_error < 1e-2 * np.ptp(ref)
    assert (out.argmax(1) == ref.argmax(1)).all()


def test_galois_keys_requested_are_exactly_the_rotations_performed(tiny) -> None:
    model, x = tiny
    em = EncryptedModel.build(model, "latency", calibration=x, variants=("im2col",))
    prog = em.program
    assert isinstance(prog, BSGSProgram)
    requested = em.layout["galois_steps"]
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS, em.plan.poly_modulus_degree, coeff_mod_bit_sizes=list(em.plan.coeff_mod_bit_sizes)
    )
    ctx.global_scale = em.plan.scale
    ctx.generate_relin_keys()
    first = prog.structure.stages[0]
    assert prog.index is not None
    values = pack_gathered(x[0].numpy().ravel(), prog.index, first.width, first.ciphertexts, em.plan.slots)
    group = Group(1, [ts.ckks_vector(ctx, v.tolist()) for v in values])

    def public(steps: list[int]) -> ts.Context:
        return ts.context_from(public_context_bytes(ctx, steps))

    used: Counter[int] = Counter()
    result = prog.evaluate(public(requested), group, rotations=used)
    assert sorted(used) == requested
    assert sum(used.values()) == prog.structure.operations()["rotations"]  # what the estimate counts
    got = ts.ckks_vector_from(ctx, result.vectors[0].serialize()).decrypt()
    assert np.abs(np.array(got) - em.compiled.forward(x[:1].numpy())[0]).max() <= em.plan.estimated_error
    with pytest.raises(ValueError):  # a requested key is needed: without it the program cannot run
        prog.evaluate(public([s for s in requested if s != 1]), group)


def test_planner_picks_the_cheapest_latency_variant_and_says_so() -> None:
    # a conv first layer: gathered (im2col) inputs beat replicated input by estimated cost
    cnn = compile_model(tiny_cnn(), (1, 6, 6), calibration=torch.rand(4, 1, 6, 6))
    p = plan(cnn, "latency")
    assert p.variant == "im2col" and p.choice.startswith("im2col: cheapest by estimated cost")
    assert all(v in p.choice for v in ("bsgs", "expanded", "diagonal"))
    # a wide dense first layer: im2col would need 12 input ciphertexts, replicated input wins
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Linear(3000, 16), Square(), nn.Linear(16, 2)).eval()
    cw = compile_model(wide, (3000,), calibration=torch.rand(4, 3000))
    pw = plan(cw, "latency")
    assert pw.variant == "bsgs"
    packing = get_packing("latency")
    costs = {}
    for v in ("im2col", "bsgs"):
        c = packing.cost(cw, pw.slots, v)
        costs[v] = relative_seconds(pw.poly_modulus_degree, c.depth, dict(c.operations))
    assert costs["bsgs"] < costs["im2col"]
    assert bsgs_structure(cw, pw.slots, "im2col").ciphertexts >= 10
    assert plan(cw, "latency", variants=("im2col",)).variant == "im2col"  # a variant can still be asked for


def test_an_unknown_variant_is_refused(tiny) -> None:
    cm = compile_model(tiny[0], (1, 6, 6), calibration=tiny[1])
    with pytest.raises(Exception, match="latency packing has no variant 'spiral'"):
        plan(cm, "latency", variants=("spiral",))
