"""The fused residue program (throughput packing): exact residue arithmetic, SEAL's serialised
ciphertexts read and written without SEAL, and encrypted outputs against plaintext."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
import tenseal as ts
import torch
from torch import nn

from securetrain.encrypted import rns
from securetrain.encrypted.client import EncryptionClient
from securetrain.encrypted.errors import WireFormatError
from securetrain.encrypted.estimate import estimate_plan, measure_primitives
from securetrain.encrypted.fused import FusedProgram, FusedStream
from securetrain.encrypted.sealbridge import SeededEncryptor, seal_ciphertext
from securetrain.encrypted.sealformat import (
    SeededCiphertext,
    check_residues,
    read_seal_ciphertext,
    read_vector,
    vector_blob,
)
from securetrain.encrypted.server import EncryptedModel, InferenceServer
from securetrain.encrypted.throughput import SealBlobStream
from securetrain.encrypted.wire import StreamParser
from securetrain.errors import EncryptionError
from securetrain.models.he import Square

SHAPE = (1, 7, 7)
PRIMES = [17179672577, 536494081, (1 << 29) - 3 * (1 << 14) + 1, 1125899906826241]  # 34, 29, 29 and 50 bits


@pytest.mark.parametrize("q", PRIMES)
def test_mulmod_and_mod_matmul_equal_python_integers(q: int) -> None:
    rng = np.random.default_rng(q % 1000)
    a = rng.integers(0, q, 3000, dtype=np.uint64)
    b = rng.integers(0, q, 3000, dtype=np.uint64)
    a[:3], b[:3] = q - 1, q - 1  # the largest residues
    got = rns.mulmod(a, b, q)
    assert [int(v) for v in got] == [int(x) * int(y) % q for x, y in zip(a, b)]
    w = rng.integers(-(2**21), 2**21, size=(5, 300))
    w[0, :] = 2**21 - 1  # the largest weights on every term
    x = rng.integers(0, q, size=(300, 7), dtype=np.uint64)
    x[:, 0] = q - 1
    got2 = rns.mod_matmul(w, x, q, rns.LimbPlan.for_modulus(q, int(np.abs(w).max()), 300))
    want = [[sum(int(w[i, k]) * int(x[k, j]) for k in range(300)) % q for j in range(7)] for i in range(5)]
    assert got2.tolist() == want


def test_a_limb_plan_without_room_for_exact_sums_is_refused() -> None:
    with pytest.raises(EncryptionError, match="no room"):
        rns.LimbPlan.for_modulus(PRIMES[0], 2**40, 2**10)
    with pytest.raises(EncryptionError, match="below 2\\^51"):
        rns.check_modulus((1 << 55) + 1)


@pytest.fixture(scope="module")
def context() -> Any:
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[34, 30, 30, 34])
    ctx.global_scale = 2**30
    ctx.generate_relin_keys()
    return ctx


def _primes(ctx: Any) -> list[int]:
    data = ctx.seal_context().data
    return [int(m.value()) for m in data.get_context_data(data.first_parms_id()).parms().coeff_modulus()]


def test_a_ciphertext_read_without_seal_writes_back_to_the_same_values(context: Any) -> None:
    values = np.linspace(-2, 2, 100)
    blob = SeededEncryptor(context).encrypt_complete(values.tolist())
    raw = read_vector(blob)
    assert raw.data.shape == (2, 3, 8192) and raw.values == 100 and raw.scale == 2**30
    check_residues(raw.data, _primes(context))
    back = ts.ckks_vector_from(context, vector_blob(raw))
    assert np.abs(np.array(back.decrypt()) - values).max() < 1e-6
    # the residue square equals SEAL's (before relinearisation), word for word on every polynomial
    sq = np.stack([np.stack(rns.square(raw.data[0, i], raw.data[1, i], q)) for i, q in enumerate(_primes(context))], 1)
    raw.data, raw.scale = sq, raw.scale**2
    mine = seal_ciphertext(ts.ckks_vector_from(context, vector_blob(raw)))
    ref = seal_ciphertext(ts.ckks_vector_from(context, blob))
    theirs = seal_ciphertext(ts.ckks_vector_from(context, blob))
    from tenseal import sealapi

    sealapi.Evaluator(context.seal_context().data).square(ref, theirs)
    assert mine.size() == theirs.size() == 3
    assert all(mine.data(i) == theirs.data(i) for i in range(3))


def test_malformed_seeded_and_foreign_ciphertexts_are_refused(context: Any) -> None:
    with pytest.raises(SeededCiphertext):
        read_vector(SeededEncryptor(context).encrypt([1.0, 2.0]))
    blob = SeededEncryptor(context).encrypt_complete([1.0, 2.0])
    magic = blob.index(b"\x5e\xa1")
    wrong_magic = blob[:magic] + b"\x5e\xa2" + blob[magic + 2 :]
    for bad in (b"", blob[:40], blob[:-3], b"\x0a\x01\x02", wrong_magic, blob + b"\x00"):
        with pytest.raises(WireFormatError):
            read_vector(bad)
    raw = read_vector(blob)
    raw.data[0, 1, 5] = np.uint64(_primes(context)[1])  # a residue equal to its prime
    with pytest.raises(WireFormatError, match="above its prime"):
        check_residues(raw.data, _primes(context))
    # a zstd body that inflates beyond what a ciphertext can hold is cut off, not inflated
    import zstandard

    body = zstandard.ZstdCompressor().compress(bytes(10**6))
    bomb = struct.pack("<HBBBBHQ", 0xA15E, 16, 4, 1, 2, 0, 16 + len(body)) + body
    with pytest.raises(WireFormatError, match="zstd"):
        read_seal_ciphertext(bomb, max_bytes=10**5)


@pytest.fixture(scope="module")
def deep_cnn() -> tuple[nn.Module, EncryptedModel]:
    """Conv, square, dense, square, dense on 7x7 inputs: a he-mnist in miniature, deep enough to fuse."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2), Square(), nn.Flatten(), nn.Linear(18, 4), Square(), nn.Linear(4, 3)
    ).eval()
    return model, EncryptedModel.build(model, "throughput", calibration=torch.rand(32, *SHAPE), input_shape=SHAPE)


def _stream(
    em: EncryptedModel, client: EncryptionClient, server: InferenceServer, x: torch.Tensor, seeded: int = -1
) -> Any:
    head, *frames = list(client.encrypt_stream(x))
    parser = StreamParser()
    parser.feed(head)
    assert parser.header is not None
    evaluation = server.open_stream(parser.header)
    encryptor = SeededEncryptor(client.context)
    flat = x.reshape(len(x), -1).numpy().astype(np.float64)
    for i, frame in enumerate(frames):
        (blob,) = parser.feed(frame)
        if i == seeded:  # an old client's seeded frame: expanded through SEAL
            blob = encryptor.encrypt(flat[:, i].tolist())
        evaluation.feed(blob)
    return evaluation


def test_the_fused_program_matches_plaintext_and_the_seal_program(deep_cnn) -> None:
    model, em = deep_cnn
    assert em.layout["frames"] == "full"
    fused = FusedProgram.build(em.compiled, em.plan)
    assert fused is not None and fused.widths == (49, 18, 4)
    client = EncryptionClient(em.spec())
    server = InferenceServer(em, client.public_context())
    x = torch.rand(6, *SHAPE)
    ref = model(x).detach().numpy()
    evaluation = _stream(em, client, server, x, seeded=7)
    assert isinstance(evaluation.stream, FusedStream)
    out = client.decrypt(evaluation.finish())
    assert np.abs(out - ref).max() < em.plan.estimated_error
    # the buffered path runs the same model on SEAL's evaluator: both agree with plaintext
    buffered = client.decrypt(server.evaluate(client.encrypt(x)))
    assert np.abs(buffered - ref).max() < em.plan.estimated_error


def test_the_fused_stream_refuses_wrong_inputs(deep_cnn) -> None:
    _, em = deep_cnn
    client = EncryptionClient(em.spec())
    server = InferenceServer(em, client.public_context())
    x = torch.rand(4, *SHAPE)
    head, first, *_ = list(client.encrypt_stream(x))
    parser = StreamParser()
    parser.feed(head)
    evaluation = server.open_stream(parser.header)
    (blob,) = parser.feed(first)
    other = SeededEncryptor(client.context).encrypt_complete([0.5] * 3)  # 3 values, the chunk has 4
    with pytest.raises(EncryptionError, match="holds 3 values"):
        evaluation.feed(other)
    low = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[40, 40, 40])
    low.global_scale = 2**30
    with pytest.raises(EncryptionError, match="top level"):
        evaluation.feed(SeededEncryptor(low).encrypt_complete([0.5] * 4))
    big = ts.context(ts.SCHEME_TYPE.CKKS, 16384, coeff_mod_bit_sizes=[60, 40, 40, 40, 40, 40, 40, 60])
    big.global_scale = 2**40
    with pytest.raises(WireFormatError, match="inflates beyond"):  # refused before it is decompressed whole
        evaluation.feed(SeededEncryptor(big).encrypt_complete([0.5] * 4))
    evaluation.feed(blob)
    with pytest.raises(EncryptionError, match="ended after 1 of 49"):
        evaluation.finish()


def test_shallow_models_keep_seal_programs_and_seeded_frames() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), Square(), nn.Flatten(), nn.Linear(18, 3)).eval()
    em = EncryptedModel.build(model, "throughput", calibration=torch.rand(16, *SHAPE), input_shape=SHAPE)
    assert FusedProgram.build(em.compiled, em.plan) is None and em.layout["frames"] == "seeded"
    client = EncryptionClient(em.spec())
    server = InferenceServer(em, client.public_context())
    evaluation = _stream(em, client, server, torch.rand(2, *SHAPE))
    assert isinstance(evaluation.stream, SealBlobStream)


def test_the_estimate_counts_the_fused_program(deep_cnn) -> None:
    _, em = deep_cnn
    est = estimate_plan(em, 10)
    primitives = measure_primitives(em.plan)
    assert est.operations["step-1 terms"] >= em.compiled.ops[0].weight.nnz
    assert est.operations["loaded into SEAL"] == 4
    assert est.request_bytes == 49 * primitives.full_bytes  # complete frames: both polynomials
    assert primitives.full_bytes > 1.5 * primitives.seeded_bytes
    assert est.server_memory_bytes > 0 and est.request_s > 0


def test_a_wide_input_slides_its_window_and_constant_outputs_fold_into_the_next_layer() -> None:
    """12x12 inputs: the held inputs are fewer than the features (the window is compacted while
    the chunk streams); one convolution channel and one dense row are all zeros, so their outputs
    are plaintext constants folded into the next layer."""
    torch.manual_seed(1)
    shape = (1, 12, 12)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, stride=2), Square(), nn.Flatten(), nn.Linear(75, 5), Square(), nn.Linear(5, 3)
    ).eval()
    with torch.no_grad():
        model[0].weight[1].zero_()  # channel 1: its outputs are its bias, a constant
        model[3].weight[2].zero_()  # dense row 2: a constant too
    em = EncryptedModel.build(model, "throughput", calibration=torch.rand(32, *shape), input_shape=shape)
    assert em.fused is not None and em.fused.groups.window < 144
    client = EncryptionClient(em.spec())
    server = InferenceServer(em, client.public_context())
    x = torch.rand(3, *shape)
    evaluation = _stream(em, client, server, x)
    stream = evaluation.stream
    assert isinstance(stream, FusedStream)
    out = client.decrypt(evaluation.finish())
    assert stream.peak_held < 144
    assert len(stream.w.out1) == 50 and len(stream.w.out3) == 4
    ref = model(x).detach().numpy()
    assert np.abs(out - ref).max() < em.plan.estimated_error


def test_a_dense_first_layer_over_many_inputs_keeps_the_streaming_seal_program() -> None:
    """A dense first layer reads every input, so a fused stream would hold them all (2304 here):
    over the memory bound, the SEAL program (which holds only partial sums) runs instead."""
    from securetrain.encrypted.compiler import compile_model
    from securetrain.encrypted.fusable import MAX_STREAM_BYTES, fusable, plan_groups, stream_bytes
    from securetrain.encrypted.planner import plan

    torch.manual_seed(0)
    shape = (1, 48, 48)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2304, 8), Square(), nn.Linear(8, 4), Square(), nn.Linear(4, 3))
    compiled = compile_model(model.eval(), shape, calibration=torch.rand(8, *shape))
    p = plan(compiled, "throughput")
    groups = plan_groups(compiled.ops[0].weight)
    assert groups.window == 2304
    assert stream_bytes(p, groups.window, 8, 4) > MAX_STREAM_BYTES and not fusable(compiled, p)


def test_a_model_that_cannot_fuse_is_refused_by_the_constructor() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), Square(), nn.Flatten(), nn.Linear(18, 3)).eval()
    em = EncryptedModel.build(model, "throughput", calibration=torch.rand(8, *SHAPE), input_shape=SHAPE)
    with pytest.raises(EncryptionError, match="cannot run fused"):
        FusedProgram(em.compiled, em.plan)
