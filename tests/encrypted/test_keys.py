"""Galois keys only for the rotation steps the latency program uses."""

from __future__ import annotations

import pytest
import torch

from securetrain.encrypted import EncryptedModel, EncryptionClient, InferenceServer, PublicContextError
from securetrain.encrypted.keys import galois_element, keys_for_rotations, naf, public_context_bytes
from securetrain.models import build_model


def test_naf_terms_compose_every_step() -> None:
    for step in range(1, 300):
        assert sum(naf(step)) == step and sum(naf(-step)) == -step
        terms = [abs(t) for t in naf(step)]
        assert all(t & (t - 1) == 0 for t in terms)  # powers of two
    assert keys_for_rotations([3, 0, 5]) == {3, 5}
    assert galois_element(-1, 8192) == pow(3, 4095, 16384)


@pytest.mark.slow
def test_latency_contexts_carry_the_keys_of_the_program_and_no_others() -> None:
    torch.manual_seed(0)
    em = EncryptedModel.build(
        build_model("he", (1, 2, 2), 3, hidden=2).eval(), "latency", calibration=torch.rand(8, 1, 2, 2)
    )
    steps = em.layout["galois_steps"]
    client = EncryptionClient(em.spec())
    server = InferenceServer(em, client.public_context())
    keys = server.context.galois_keys().data
    n = em.plan.poly_modulus_degree
    assert keys.size() == len(steps) < 2 * (n // 2).bit_length()  # fewer than every power of two both ways
    assert all(keys.has_key(galois_element(s, n)) for s in steps)
    x = torch.rand(1, 1, 2, 2)
    out = client.decrypt(server.evaluate(client.encrypt(x)))
    assert abs(out - em.compiled.forward(x)).max() <= em.plan.estimated_error
    short = public_context_bytes(client.context, steps[:1])  # one key only (cheap to make)
    with pytest.raises(PublicContextError, match=rf"lacks Galois keys for rotation steps \[{steps[1]}, "):
        InferenceServer(em, short)
