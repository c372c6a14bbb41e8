"""The HTTP service on loopback: concurrent clients, size limits, bad input answered with 4xx."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch

from securetrain.encrypted import (
    EncryptedInferenceService,
    EncryptedModel,
    EncryptionClient,
    RemoteClient,
    start_server,
)
from securetrain.encrypted.wire import CONTENT_TYPE
from securetrain.errors import EncryptionError
from securetrain.models import build_model

MAX_BODY = 128 * 1024 * 1024


@pytest.fixture(scope="module")
def models() -> dict[str, EncryptedModel]:
    torch.manual_seed(0)
    model = build_model("he", (1, 8, 8), 10, hidden=4).eval()
    calib = torch.rand(16, 1, 8, 8)
    return {mode: EncryptedModel.build(model, mode, calibration=calib) for mode in ("throughput", "latency")}


@pytest.fixture(scope="module")
def running(models) -> Iterator:
    service = EncryptedInferenceService(models, max_contexts=8)
    server = start_server(service, "127.0.0.1", 0, max_body_bytes=MAX_BODY)
    try:
        yield server
    finally:
        server.close()


def raw(url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def assert_alive(url: str) -> None:
    status, _, body = raw(url, "GET", "/v1/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}


def test_concurrent_clients_get_their_own_correct_answers(running, models) -> None:
    xs = [torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    modes = ["throughput", "throughput", "latency"]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = RemoteClient(running.url, mode=modes[i]).predict(xs[i][:1] if modes[i] == "latency" else xs[i])
        except BaseException as exc:  # noqa: BLE001 (re-raised in the main thread below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    if errors:
        raise errors[0]
    for i, mode in enumerate(modes):
        em = models[mode]
        x = xs[i][:1] if mode == "latency" else xs[i]
        assert results[i].shape == (x.shape[0], 10)
        assert np.abs(results[i] - em.compiled.forward(x)).max() <= em.plan.estimated_error


def test_oversized_bodies_are_refused_before_reading(running) -> None:
    parts = urlsplit(running.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.putrequest("POST", "/v1/infer")
        conn.putheader("Content-Type", CONTENT_TYPE)
        conn.putheader("Content-Length", str(MAX_BODY + 1))
        conn.endheaders()  # the body is never sent: the server must answer from the headers
        resp = conn.getresponse()
        body = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 413
    assert body["error"] == "PayloadTooLarge" and f"limit of {MAX_BODY} bytes" in body["message"]
    assert_alive(running.url)


def test_garbage_wrong_type_and_unknown_context_get_4xx_and_the_server_keeps_serving(running, models) -> None:
    status, ctype, body = raw(running.url, "POST", "/v1/infer", b"\x00" * 100, {"Content-Type": CONTENT_TYPE})
    assert (status, ctype) == (400, "application/json")
    assert json.loads(body)["error"] == "WireFormatError"
    assert_alive(running.url)

    status, _, body = raw(running.url, "POST", "/v1/infer", b"{}", {"Content-Type": "application/json"})
    assert status == 415 and json.loads(body)["error"] == "UnsupportedMediaType"
    assert_alive(running.url)

    stranger = EncryptionClient(models["throughput"].spec())  # never registered its context
    request = stranger.encrypt(torch.rand(2, 1, 8, 8))
    status, _, body = raw(running.url, "POST", "/v1/infer", request, {"Content-Type": CONTENT_TYPE})
    assert status == 404 and json.loads(body)["error"] == "UnknownContextError"

    private = stranger.context.serialize(save_secret_key=True)
    status, _, body = raw(running.url, "POST", "/v1/contexts?mode=throughput", private, {"Content-Type": CONTENT_TYPE})
    assert status == 400
    err = json.loads(body)
    assert err["error"] == "PublicContextError" and "carries a secret key" in err["message"]

    status, _, body = raw(running.url, "POST", "/v1/nowhere", b"x", {"Content-Type": CONTENT_TYPE})
    assert status == 404
    status, _, body = raw(running.url, "GET", "/v1/spec?mode=fastest")
    assert status == 400 and "mode 'fastest' is not served" in json.loads(body)["message"]
    assert_alive(running.url)
    # and a real client still gets correct answers afterwards
    x = torch.rand(2, 1, 8, 8)
    out = RemoteClient(running.url).predict(x)
    em = models["throughput"]
    assert np.abs(out - em.compiled.forward(x)).max() <= em.plan.estimated_error


def test_a_body_without_content_length_is_refused(running) -> None:
    parts = urlsplit(running.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\r\n")
        reply = sock.recv(65536).decode("latin-1")
    assert reply.startswith("HTTP/1.1 411")
    assert_alive(running.url)


def test_the_python_client_reports_server_errors(running) -> None:
    with pytest.raises(EncryptionError, match=r"server answered 400 to GET /v1/spec\?mode=nope: ConfigurationError"):
        RemoteClient(running.url, mode="nope")


def test_info_lists_the_modes(running) -> None:
    status, _, body = raw(running.url, "GET", "/v1/info")
    assert status == 200 and json.loads(body)["modes"] == ["latency", "throughput"]
