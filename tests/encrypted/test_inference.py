"""Decrypted outputs agree with the plaintext model, in both packings, for MLP and CNNs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from securetrain.data import load
from securetrain.encrypted import HECNN2, EncryptedModel, EncryptionClient, InferenceServer, evaluate_encrypted
from securetrain.encrypted.evaluate import float64_logits
from securetrain.encrypted.validator import FineTune, fine_tune_model
from securetrain.models import build_model
from securetrain.models.he import Square


def train(model: nn.Module, epochs: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    fine_tune_model(model, FineTune(*load("digits", "train"), epochs=epochs, lr=3e-3, seed=seed))
    return model.eval()


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "mlp": train(build_model("he", (1, 8, 8), 10)),
        "cnn": train(build_model("he-cnn", (1, 8, 8), 10)),
        "two-conv-cnn": train(HECNN2((1, 8, 8), 10, channels=(2, 4))),
    }


@pytest.fixture(scope="module")
def digits_test() -> tuple[torch.Tensor, torch.Tensor]:
    return load("digits", "test")


@pytest.mark.parametrize("mode", ["throughput", "latency"])
@pytest.mark.parametrize("name", ["mlp", "cnn", "two-conv-cnn"])
def test_encrypted_logits_match_plaintext(models, digits_test, name: str, mode: str) -> None:
    x, y = digits_test
    n = 40 if mode == "throughput" else 2
    section = evaluate_encrypted(
        models[name], x, mode=mode, samples=n, y=y, calibration=load("digits", "train")[0][:256]
    )
    assert section["samples"] == n and section["mode"] == mode
    assert section["agreement"] == 1.0
    assert section["encrypted_accuracy"] == section["plaintext_accuracy"]
    # the tolerance comes from the scale (see estimate_error) and is tight enough to mean something
    logits = float64_logits(models[name], x[:n])
    assert section["max_abs_error"] <= section["tolerance"]
    assert section["tolerance"] < 0.01 * float(np.ptp(logits))
    assert section["security_bits"] == 128
    assert (
        sum(section["coeff_mod_bit_sizes"])
        <= {4096: 109, 8192: 218, 16384: 438, 32768: 881}[section["poly_modulus_degree"]]
    )
    assert section["galois_keys"] == (mode == "latency")


def test_latency_variants_chosen_by_cost_and_on_request(models) -> None:
    calib = load("digits", "train")[0][:256]
    assert EncryptedModel.build(models["mlp"], "latency", calibration=calib).plan.variant == "im2col"
    only = ("expanded", "diagonal")
    assert EncryptedModel.build(models["mlp"], "latency", calibration=calib, variants=only).plan.variant == "expanded"
    two_conv = EncryptedModel.build(models["two-conv-cnn"], "latency", calibration=calib, variants=only)
    assert two_conv.plan.variant == "diagonal"


def roundtrip(model: nn.Module, x: torch.Tensor, mode: str, calibration: torch.Tensor, **kwargs) -> np.ndarray:
    em = EncryptedModel.build(model, mode, calibration=calibration, input_shape=tuple(x.shape[1:]))
    client = EncryptionClient(em.spec())
    server = InferenceServer(em, client.public_context())
    return client.decrypt(server.evaluate(client.encrypt(x, **kwargs)))


def test_batches_larger_than_a_chunk_are_split_and_agree(digits_test) -> None:
    x, _ = digits_test
    calib = x[:64]
    model = train(build_model("he", (1, 8, 8), 10, hidden=4), epochs=1)
    em = EncryptedModel.build(model, "throughput", calibration=calib)
    client = EncryptionClient(em.spec())
    server = InferenceServer(em, client.public_context())
    whole = client.decrypt(server.evaluate(client.encrypt(x[:12])))
    request = client.encrypt(x[:12], chunk_size=5)
    opened = server.open_request(request)
    assert [g.samples for g in opened] == [5, 5, 2]
    chunked = client.decrypt(server.evaluate(request))
    ref = float64_logits(model, x[:12])
    tol = em.plan.estimated_error
    assert np.abs(whole - ref).max() <= tol and np.abs(chunked - ref).max() <= tol
    np.testing.assert_array_equal(whole.argmax(1), chunked.argmax(1))


def test_more_samples_than_slots_are_chunked() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()  # depth 1: N=4096, 2048 slots
    x = torch.cat([load("digits", split)[0] for split in ("train", "validation", "test")])
    x = torch.cat([x, x[: 2100 - x.shape[0]]])  # 2100 samples > 2048 slots
    section = evaluate_encrypted(model, x, mode="throughput")
    assert section["poly_modulus_degree"] == 4096 and section["slots"] == 2048
    assert section["requests"] == 2 and section["samples"] == 2100
    assert section["agreement"] == 1.0 and section["max_abs_error"] <= section["tolerance"]


@pytest.mark.parametrize("mode", ["throughput", "latency"])
def test_constant_outputs_and_a_final_square(mode: str) -> None:
    torch.manual_seed(1)
    lin = nn.Linear(6, 3)
    with torch.no_grad():
        lin.weight[1].zero_()  # output 1 does not depend on the input: computed in plaintext by the server
    model = nn.Sequential(nn.Linear(5, 6), Square(), lin, Square()).eval()
    x = torch.rand(4, 5)
    out = roundtrip(model, x, mode, calibration=x)
    ref = float64_logits(model, x)
    em = EncryptedModel.build(model, mode, calibration=x, input_shape=(5,))
    assert np.abs(out - ref).max() <= em.plan.estimated_error
    assert out[:, 1] == pytest.approx(ref[:, 1], abs=em.plan.estimated_error)


def test_the_model_is_neither_modified_nor_switched_to_eval() -> None:
    torch.manual_seed(0)
    model = build_model("he", (1, 8, 8), 10, hidden=4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate_encrypted(model, torch.rand(3, 1, 8, 8))
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
