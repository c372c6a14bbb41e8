"""Client and server roles: the server holds public keys only and rejects what is not its own."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts
import torch

from securetrain.encrypted import (
    ContextMismatchError,
    EncryptedModel,
    EncryptionClient,
    InferenceServer,
    PublicContextError,
    SecretKeyRequiredError,
    WireFormatError,
    decrypt,
)
from securetrain.encrypted.packing import Group
from securetrain.encrypted.planner import plan
from securetrain.encrypted.wire import REQUEST, decode_message, encode_message, pack_groups
from securetrain.errors import EncryptionError
from securetrain.models import build_model


@pytest.fixture(scope="module")
def em() -> EncryptedModel:
    torch.manual_seed(0)
    model = build_model("he", (1, 8, 8), 10, hidden=4).eval()
    return EncryptedModel.build(model, "throughput", calibration=torch.rand(16, 1, 8, 8))


@pytest.fixture(scope="module")
def client(em: EncryptedModel) -> EncryptionClient:
    return EncryptionClient(em.spec())


@pytest.fixture(scope="module")
def server(em: EncryptedModel, client: EncryptionClient) -> InferenceServer:
    return InferenceServer(em, client.public_context())


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_a_round_trip_through_bytes_is_correct(em, client, server, x) -> None:
    request = client.encrypt(x)
    assert isinstance(request, bytes) and isinstance(client.public_context(), bytes)
    out = client.decrypt(server.evaluate(request))
    with torch.no_grad():
        ref = em.compiled.forward(x)
    assert np.abs(out - ref).max() <= em.plan.estimated_error


def test_the_server_refuses_a_context_that_carries_a_secret_key(em, client) -> None:
    private = client.context.serialize(save_secret_key=True)
    with pytest.raises(
        PublicContextError, match="refused: the context carries a secret key. A server must never hold it"
    ):
        InferenceServer(em, private)


def test_the_server_side_cannot_decrypt(em, client, server, x) -> None:
    response = server.evaluate(client.encrypt(x))
    assert not server.context.is_private()
    with pytest.raises(SecretKeyRequiredError, match="this context holds no secret key, so it cannot decrypt"):
        decrypt(server.context, em.spec(), response)
    # and not by going around the library either: TenSEAL itself has no key to use
    blob = decode_message(response, expect_kind=2)[1][0]
    with pytest.raises(ValueError, match="doesn't hold a secret_key"):
        ts.ckks_vector_from(server.context, blob).decrypt()


def test_a_ciphertext_from_another_client_is_rejected(em, server, x) -> None:
    other = EncryptionClient(em.spec())  # same parameters, other keys
    with pytest.raises(
        ContextMismatchError, match=r"were made under context [0-9a-f]{12}\.\.\., but this server holds context"
    ):
        server.evaluate(other.encrypt(x))


def test_a_ciphertext_under_other_parameters_is_rejected(em, client, server) -> None:
    foreign = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[40, 20, 40])
    foreign.global_scale = 2**20
    vectors = [ts.ckks_vector(foreign, [0.5]) for _ in range(64)]
    header = {"mode": "throughput", "context": client.context_id, "spec": em.spec_id}
    request = pack_groups(REQUEST, header, [Group(1, vectors)])
    with pytest.raises(ContextMismatchError, match="does not belong to this context's encryption parameters"):
        server.evaluate(request)


def test_a_context_with_other_parameters_or_missing_keys_is_refused(em) -> None:
    # the expanded variant spends one more level than throughput: other parameters
    latency = EncryptedModel(em.compiled, plan(em.compiled, "latency", variants=("expanded",)))
    other = EncryptionClient(latency.spec())
    with pytest.raises(ContextMismatchError, match="the context's encryption parameters differ from this model's plan"):
        InferenceServer(em, other.public_context())
    no_galois = other.context.serialize(save_secret_key=False, save_galois_keys=False)
    with pytest.raises(
        PublicContextError, match="the latency packing rotates ciphertexts: the context needs Galois keys"
    ):
        InferenceServer(latency, no_galois)
    with pytest.raises(PublicContextError, match="not a serialised TenSEAL context"):
        InferenceServer(em, b"\x00garbage")


def test_malformed_requests_get_clear_errors(client, server, x) -> None:
    request = client.encrypt(x)
    with pytest.raises(WireFormatError, match="not a securetrain HE message"):
        server.evaluate(b"GARBAGE" * 10)
    with pytest.raises(WireFormatError, match="body holds .* bytes of ciphertexts but the header announces"):
        server.evaluate(request[:-10])
    header, blobs = decode_message(request, expect_kind=REQUEST)
    with pytest.raises(WireFormatError, match="not a serialised CKKS vector"):
        server.evaluate(encode_message(REQUEST, header, [b"junk"] * len(blobs)))
    with pytest.raises(WireFormatError, match="expected a request, got message kind 2"):
        server.evaluate(encode_message(2, header, blobs))


def test_requests_for_another_spec_or_with_missing_features_are_rejected(em, client, server, x) -> None:
    header, blobs = decode_message(client.encrypt(x), expect_kind=REQUEST)
    with pytest.raises(ContextMismatchError, match="built for another model or plan"):
        server.evaluate(encode_message(REQUEST, {**header, "spec": "0" * 64}, blobs))
    short = {**header, "groups": [[3, 63]]}
    with pytest.raises(EncryptionError, match=r"one ciphertext per input feature \(64\), got 63"):
        server.evaluate(encode_message(REQUEST, short, blobs[:63]))


def test_a_ciphertext_that_already_used_a_level_is_rejected(em, client, server) -> None:
    vectors = [ts.ckks_vector(client.context, [0.1, 0.2]) * 1.0 for _ in range(64)]  # one level spent
    header = {"mode": "throughput", "context": client.context_id, "spec": em.spec_id}
    with pytest.raises(EncryptionError, match=r"is at the wrong level \(2 levels left, the plan needs 3\)"):
        server.evaluate(pack_groups(REQUEST, header, [Group(2, vectors)]))


def test_a_response_for_another_client_is_not_decrypted(em, client, server, x) -> None:
    response = server.evaluate(client.encrypt(x))
    other = EncryptionClient(em.spec())
    with pytest.raises(ContextMismatchError, match="computed under another context than this client's"):
        other.decrypt(response)


def test_inputs_beyond_the_planned_range_are_refused_by_the_client(em, client) -> None:
    limit = 2.0 ** (em.plan.int_bits - 1)
    with pytest.raises(
        EncryptionError,
        match=rf"inputs reach 1e\+06, beyond the range this plan was made for \(\|value\| <= {limit:g}\)",
    ):
        client.encrypt(torch.full((1, 1, 8, 8), 1e6))
    with pytest.raises(EncryptionError, match="inputs must have 64 features per sample"):
        client.encrypt(torch.rand(2, 10))


def test_a_malformed_spec_is_refused_before_keys_are_made(em) -> None:
    spec = em.spec()
    spec["layout"] = {**spec["layout"], "output_factors": [1.0]}
    with pytest.raises(EncryptionError, match=r"malformed throughput layout in the spec \(output_factors\)"):
        EncryptionClient(spec)
    latency = EncryptedModel(em.compiled, plan(em.compiled, "latency")).spec()
    latency["layout"]["index"][0][0] = 10_000
    with pytest.raises(EncryptionError, match="malformed latency layout in the spec"):
        EncryptionClient(latency)
    with pytest.raises(EncryptionError, match="not a securetrain encrypted-inference spec"):
        EncryptionClient({"format": "other"})
