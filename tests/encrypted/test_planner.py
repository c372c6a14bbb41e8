"""The depth planner: parameters at 128-bit security, refusal before anything is encrypted."""

from __future__ import annotations

import dataclasses

import pytest
import tenseal as ts
import torch
from torch import nn

from securetrain.encrypted import (
    EncryptedModel,
    EncryptionClient,
    EncryptionPlan,
    compile_model,
    evaluate_encrypted,
    get_packing,
    plan,
)
from securetrain.encrypted.planner import (
    MAX_COEFF_BITS_128,
    ckks_primes,
    estimate_error,
)
from securetrain.encrypted.server import _expected_parms_id
from securetrain.errors import EncryptionError
from securetrain.models import build_model
from securetrain.models.he import Square


def deep_bounded_model(pairs: int) -> nn.Sequential:
    """``pairs`` x (Linear, Square) whose values stay in [0, 1] for inputs in [0, 1]."""
    layers: list[nn.Module] = []
    for _ in range(pairs):
        lin = nn.Linear(4, 4)
        with torch.no_grad():
            lin.weight.copy_(0.5 * torch.eye(4))
            lin.bias.fill_(0.5)
        layers += [lin, Square()]
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def he_compiled():
    torch.manual_seed(0)
    return compile_model(build_model("he", (1, 8, 8), 10), (1, 8, 8), calibration=torch.rand(16, 1, 8, 8))


def test_throughput_plan_for_the_he_mlp(he_compiled) -> None:
    p = plan(he_compiled, "throughput")
    assert p.poly_modulus_degree == 8192 and p.depth == 3 and p.security_bits == 128
    q0, *middle, special = p.coeff_mod_bit_sizes
    assert middle == [p.scale_bits] * 3 and q0 == special == p.scale_bits + p.int_bits
    assert p.total_bits <= MAX_COEFF_BITS_128[8192] == 218
    assert not p.galois_keys


def test_latency_plan_spends_one_more_level_on_the_expanded_layer(he_compiled) -> None:
    p = plan(he_compiled, "latency", variants=("expanded",))
    assert (p.variant, p.depth, p.galois_keys) == ("expanded", 4, True)
    assert p.total_bits <= 218


def test_plan_primes_are_the_primes_of_the_tenseal_context(he_compiled) -> None:
    p = plan(he_compiled, "throughput")
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, p.poly_modulus_degree, coeff_mod_bit_sizes=list(p.coeff_mod_bit_sizes))
    got = tuple(int(v) for v in ctx.seal_context().data.key_parms_id())
    assert got == _expected_parms_id(p.poly_modulus_degree, tuple(p.coeff_mod_bit_sizes))
    assert [q.bit_length() for q in p.primes()] == list(p.coeff_mod_bit_sizes)
    assert len(p.rescale_primes()) == p.depth


def test_a_linear_model_gets_the_smallest_ring() -> None:
    cm = compile_model(nn.Sequential(nn.Linear(30, 2)), (30,), calibration=torch.rand(8, 30))
    p = plan(cm, "throughput")
    assert p.poly_modulus_degree == 4096 and p.depth == 1 and p.total_bits <= 109


def test_too_deep_model_is_refused_before_anything_is_encrypted(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("nothing may be encrypted before the plan is known to fit")

    monkeypatch.setattr(ts, "context", forbidden)
    monkeypatch.setattr(ts, "ckks_vector", forbidden)
    model = deep_bounded_model(25)
    x = torch.rand(8, 4)
    message = (
        r"the model needs multiplicative depth 50 \(25 affine maps \+ 25 squares\), but at 128-bit security the "
        r"largest allowed ring \(N=32768\) has 881 modulus bits: enough for depth 31 at a 26-bit scale with 4 "
        r"integer bits\. Reduce the depth"
    )
    with pytest.raises(EncryptionError, match=message):
        plan(compile_model(model, (4,), calibration=x), "throughput")
    with pytest.raises(EncryptionError, match=message):
        evaluate_encrypted(model, x)


def test_a_ring_that_is_too_small_is_refused(he_compiled) -> None:
    with pytest.raises(EncryptionError, match=r"depth 3 .* \(N=4096\) has 109 modulus bits"):
        plan(he_compiled, "throughput", poly_modulus_degree=4096)
    with pytest.raises(EncryptionError, match=r"poly_modulus_degree must be one of \[4096, 8192, 16384, 32768\]"):
        plan(he_compiled, "throughput", poly_modulus_degree=1000)


def test_values_beyond_one_prime_are_refused() -> None:
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.fill_(1e15)
    cm = compile_model(nn.Sequential(lin), (4,), calibration=torch.rand(4, 4))
    with pytest.raises(EncryptionError, match=r"values reach .* integer bits on top of a 26-bit scale"):
        plan(cm, "throughput")


def test_without_calibration_an_input_bound_is_needed() -> None:
    cm = compile_model(build_model("he", (1, 8, 8), 10), (1, 8, 8))
    with pytest.raises(EncryptionError, match="compile with calibration=x .* or pass input_bound"):
        plan(cm)
    p = plan(cm, input_bound=1.0)  # interval arithmetic: a looser, larger bound
    assert p.value_bound > 0


def test_plan_round_trips_and_rejects_tampering(he_compiled) -> None:
    p = plan(he_compiled, "latency", variants=("expanded",))
    assert EncryptionPlan.from_dict(p.to_dict()) == p
    bad = p.to_dict()
    bad["coeff_mod_bit_sizes"] = [60, 60, 60, 60, 60, 60]
    with pytest.raises(EncryptionError, match=r"has 360 bits; 128-bit security allows 218 at N=8192"):
        EncryptionPlan.from_dict(bad)
    bad = p.to_dict()
    bad["variant"] = "spiral"
    tampered = EncryptionPlan.from_dict(bad)  # the plan is pure data: its packing judges the variant
    with pytest.raises(EncryptionError, match="latency packing has no variant 'spiral'"):
        get_packing(tampered.mode).check_plan(tampered)
    spec = EncryptedModel(he_compiled, p).spec()
    spec["plan"] = bad
    with pytest.raises(EncryptionError, match="latency packing has no variant 'spiral'"):
        EncryptionClient(spec)  # where a received plan is used, before any key is made


def test_error_estimate_shrinks_with_the_scale(he_compiled) -> None:
    errs = [estimate_error(he_compiled, 8192, s) for s in (26, 30, 35, 40)]
    assert errs == sorted(errs, reverse=True)
    assert errs[0] / errs[-1] > 2**10


def test_primes_have_the_requested_sizes() -> None:
    primes = ckks_primes(8192, (40, 30, 40))
    assert [p.bit_length() for p in primes] == [40, 30, 40]
    assert all(p % (2 * 8192) == 1 for p in primes)


def test_a_packing_prices_a_layout_in_one_frozen_cost(he_compiled) -> None:
    latency = get_packing("latency")
    cost = latency.cost(he_compiled, 4096, "expanded")
    p = plan(he_compiled, "latency", variants=("expanded",))
    assert cost.fits and (cost.depth, cost.galois_keys, cost.notes) == (p.depth, p.galois_keys, p.notes)
    assert cost.extra_first_level and cost.rotation_amplification > 0
    assert len(cost.key_switches) == len(cost.rescales_per_output) == he_compiled.n_affine
    assert latency.cost(he_compiled, 4096, "spiral").reason == "unknown latency variant 'spiral'"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cost.depth = 1  # type: ignore[misc]
    throughput = get_packing("throughput").cost(he_compiled, 4096, "batch")
    assert throughput.fits and not throughput.galois_keys and throughput.depth == he_compiled.depth
