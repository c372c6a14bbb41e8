"""Throughput mode streams: the SEAL-evaluator program, its bounded partial sums, the stream framing,
and streamed requests over loopback HTTP under the server's stream limit."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from torch import nn

from securetrain.encrypted import (
    EncryptedInferenceService,
    EncryptedModel,
    EncryptionClient,
    RemoteClient,
    start_server,
)
from securetrain.encrypted.errors import PayloadTooLarge, WireFormatError
from securetrain.encrypted.server import InferenceServer
from securetrain.encrypted.throughput import SealBlobStream, _peak_open
from securetrain.encrypted.wire import CONTENT_TYPE, StreamParser, encode_frame, encode_stream_head
from securetrain.models.he import Square

SHAPE = (1, 7, 7)


@pytest.fixture(scope="module")
def small_cnn() -> tuple[nn.Module, EncryptedModel]:
    """Conv 3x3 stride 2 (2 maps) -> square -> dense -> 3 outputs on 7x7 inputs: a he-mnist in miniature."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), Square(), nn.Flatten(), nn.Linear(18, 3)).eval()
    return model, EncryptedModel.build(model, calibration=torch.rand(32, *SHAPE), input_shape=SHAPE)


def test_peak_open_counts_the_most_overlapping_intervals() -> None:
    assert _peak_open(np.array([0, 1, 5]), np.array([2, 3, 6])) == 2
    assert _peak_open(np.array([0, 3]), np.array([2, 4])) == 1  # one closes (after 2) before the next opens at 3
    assert _peak_open(np.array([0, 0, 0]), np.array([9, 9, 9])) == 3
    assert _peak_open(np.zeros(0, np.int64), np.zeros(0, np.int64)) == 0


def test_streamed_evaluation_matches_plaintext_and_holds_only_open_partial_sums(small_cnn) -> None:
    model, em = small_cnn
    program = em.program
    conv_outputs = 2 * 3 * 3
    assert program.squares == conv_outputs and program.rescales == conv_outputs + 3
    # the conv's partial sums open and close as the pixels arrive row by row; the dense layer's stay open
    assert program.peak_open[0] < conv_outputs and program.peak_open[1] == 3
    client = EncryptionClient(em.spec())
    server = InferenceServer(em, client.public_context())
    x = torch.rand(5, *SHAPE)
    head, *frames = list(client.encrypt_stream(x))
    parser = StreamParser()
    parser.feed(head)
    assert parser.header is not None
    evaluation = server.open_stream(parser.header)
    stream = evaluation.stream
    assert isinstance(stream, SealBlobStream)  # conv, square, dense: too shallow for the fused program
    most = 0
    for frame in frames:
        (blob,) = parser.feed(frame)
        evaluation.feed(blob)
        most = max(most, stream.open_sums)
    assert most <= sum(program.peak_open)
    assert stream.open_sums == 0
    out = client.decrypt(evaluation.finish())
    ref = model(x).detach().numpy()
    assert np.abs(out - ref).max() < em.plan.estimated_error
    # the buffered path runs the same program
    buffered = client.decrypt(server.evaluate(client.encrypt(x)))
    assert np.abs(buffered - ref).max() < em.plan.estimated_error


def test_a_stream_refuses_frames_beyond_its_features_and_an_early_finish(small_cnn) -> None:
    _, em = small_cnn
    client = EncryptionClient(em.spec())
    server = InferenceServer(em, client.public_context())
    head, *frames = list(client.encrypt_stream(torch.rand(2, *SHAPE)))
    parser = StreamParser()
    parser.feed(head)
    assert parser.header is not None
    evaluation = server.open_stream(parser.header)
    blobs = [parser.feed(f)[0] for f in frames]
    evaluation.feed(blobs[0])
    with pytest.raises(WireFormatError, match=r"the streamed request ended after 1 of 49 input ciphertexts"):
        evaluation.finish()
    with pytest.raises(WireFormatError, match=r"one ciphertext per input feature \(49\), got 48"):
        server.open_stream({**parser.header, "features": 48})
    with pytest.raises(WireFormatError, match=r"1 to 4096 samples, got 0"):
        server.open_stream({**parser.header, "samples": 0})


def test_the_stream_parser_reads_any_split_and_refuses_malformed_frames() -> None:
    data = encode_stream_head({"samples": 1, "features": 3}) + b"".join(encode_frame(b) for b in (b"a", b"bcd", b"ef"))
    for step in (1, 2, 5, len(data)):
        parser = StreamParser()
        blobs = [blob for i in range(0, len(data), step) for blob in parser.feed(data[i : i + step])]
        assert blobs == [b"a", b"bcd", b"ef"] and parser.pending == 0 and parser.header == {"samples": 1, "features": 3}
    with pytest.raises(WireFormatError, match="bad magic"):
        StreamParser().feed(b"XXXX" + data[4:])
    parser = StreamParser(max_frame_bytes=2)
    with pytest.raises(WireFormatError, match=r"a frame announces 3 bytes; frames hold 1 to 2"):
        parser.feed(data)
    with pytest.raises(WireFormatError, match="expected a streamed request"):
        StreamParser().feed(encode_stream_head({})[:5] + bytes([1]) + encode_stream_head({})[6:])


def test_remote_client_streams_chunk_by_chunk_and_stays_under_the_stream_limit(small_cnn) -> None:
    model, em = small_cnn
    x = torch.rand(5, *SHAPE)
    with start_server(EncryptedInferenceService({"throughput": em}), max_body_bytes=4_000_000) as srv:
        client = RemoteClient(srv.url)
        assert client.streams  # a buffered request of 49 ciphertexts (~20 MB) would be over max_body_bytes
        out = client.predict(x, chunk_size=3)  # two streamed requests
        assert np.abs(out - model(x).detach().numpy()).max() < em.plan.estimated_error
    limit = 5_000_000  # below one chunk's ~49 ciphertexts
    with start_server(EncryptedInferenceService({"throughput": em}, max_stream_bytes=limit)) as srv:
        client = RemoteClient(srv.url)
        with pytest.raises(PayloadTooLarge, match=r"a streamed chunk takes about \d+ bytes .* stream limit of 5000000"):
            client.predict(x)
        # a stream that turns out larger than announced stops before the piece that would cross the limit
        made: list[int] = []

        def pieces():
            for piece in client.client.encrypt_stream(x[:1]):
                made.append(len(piece))
                yield piece

        small = 1_000_000  # a few frames
        with pytest.raises(PayloadTooLarge, match=r"exceed the server's limit of 1000000 bytes after \d+ bytes"):
            client._call_stream(client._stream_path(), pieces(), small)
        assert sum(made[:-1]) <= small < sum(made) and len(made) < 50  # the crossing frame was made, never sent
        # the server refuses a body over its limit itself (413 JSON, connection closed)
        parts = urlsplit(srv.url)
        conn = http.client.HTTPConnection(str(parts.hostname), parts.port, timeout=30)
        head, *frames = list(client.client.encrypt_stream(x[:1]))
        conn.putrequest("POST", "/v1/infer/stream")
        conn.putheader("Authorization", f"Bearer {client.token}")
        conn.putheader("Content-Type", CONTENT_TYPE)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        try:
            for piece in [head, *frames]:
                conn.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = conn.getresponse()
        assert resp.status == 413 and json.loads(resp.read())["error"] == "PayloadTooLarge"
        conn.close()


def test_a_streamed_request_needs_the_token_and_a_complete_body(small_cnn) -> None:
    _, em = small_cnn
    with start_server(EncryptedInferenceService({"throughput": em})) as srv:
        client = RemoteClient(srv.url)
        parts = urlsplit(srv.url)
        head, first, *_ = list(client.client.encrypt_stream(torch.rand(1, *SHAPE)))
        for token, body, status, kind in (
            (None, head + first, 401, "AuthenticationError"),
            (client.token, head + first, 400, "WireFormatError"),
            (client.token, head[:-1], 400, "WireFormatError"),
        ):
            conn = http.client.HTTPConnection(str(parts.hostname), parts.port, timeout=30)
            headers = {"Content-Type": CONTENT_TYPE}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            conn.request("POST", "/v1/infer/stream", body=body, headers=headers)
            resp = conn.getresponse()
            assert (resp.status, json.loads(resp.read())["error"]) == (status, kind)
            conn.close()
