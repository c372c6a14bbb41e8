"""The HTTP service on loopback: concurrent clients, per-client contexts, limits, timeouts, bad input."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
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
from securetrain.encrypted.errors import (
    AuthenticationError,
    PayloadTooLarge,
    QuotaExceededError,
    ServiceFullError,
    UnknownContextError,
)
from securetrain.encrypted.wire import CONTENT_TYPE
from securetrain.errors import EncryptionError

MAX_BODY = 8 * 1024 * 1024
READ_TIMEOUT = 1.0
SHAPE = (1, 2, 2)


@pytest.fixture(scope="module")
def tiny() -> EncryptedModel:
    """A linear model on 4 features: depth 1, N=4096, contexts of ~0.4 MB (cheap keys)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    return EncryptedModel.build(model, calibration=torch.rand(16, *SHAPE), input_shape=SHAPE)


@pytest.fixture(scope="module")
def running(tiny) -> Iterator:
    service = EncryptedInferenceService({"throughput": tiny})
    server = start_server(service, "127.0.0.1", 0, max_body_bytes=MAX_BODY, read_timeout_s=READ_TIMEOUT)
    try:
        yield server
    finally:
        server.close()


def raw(url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def assert_alive(url: str) -> None:
    status, _, body = raw(url, "GET", "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}


def check(out: np.ndarray, em: EncryptedModel, x: torch.Tensor) -> None:
    assert out.shape == (x.shape[0], em.compiled.output_size)
    assert np.abs(out - em.compiled.forward(x)).max() <= em.plan.estimated_error


@pytest.mark.slow
def test_twenty_clients_five_requests_each_are_all_answered_correctly(running, tiny) -> None:
    failures: list[BaseException] = []
    answered = [0]
    lock = threading.Lock()

    def work(i: int) -> None:
        try:
            client = RemoteClient(running.url)
            for j in range(5):
                x = torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(100 * i + j))
                check(client.predict(x), tiny, x)
                with lock:
                    answered[0] += 1
        except BaseException as exc:  # noqa: BLE001 (re-raised in the main thread below)
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    if failures:
        raise failures[0]
    assert answered[0] == 100


def test_stalled_uploads_are_released_within_the_read_timeout(running, tiny) -> None:
    parts = urlsplit(running.url)
    head = b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
    socks = []
    start = time.monotonic()
    try:
        for _ in range(40):
            s = socket.create_connection((parts.hostname, parts.port), timeout=10)
            s.sendall(head + b"\x00" * 10)  # then stall
            socks.append(s)
        replies = []
        for s in socks:
            data = b""
            while chunk := s.recv(65536):  # the server answers, then closes: recv returns b""
                data += chunk
            replies.append(data.decode("latin-1"))
        elapsed = time.monotonic() - start
    finally:
        for s in socks:
            s.close()
    assert all(r.startswith("HTTP/1.1 408") for r in replies), replies[0][:200]
    assert all('"error":"RequestTimeoutError"' in r for r in replies)
    assert elapsed < READ_TIMEOUT + 8, f"stalled uploads held for {elapsed:.1f} s with a {READ_TIMEOUT} s read timeout"
    assert_alive(running.url)
    x = torch.rand(2, *SHAPE)
    check(RemoteClient(running.url).predict(x), tiny, x)


def test_oversized_bodies_get_413_json_from_the_headers(running) -> None:
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


def test_the_remote_client_raises_payload_too_large_instead_of_a_broken_pipe(tiny) -> None:
    service = EncryptedInferenceService({"throughput": tiny})
    with start_server(service, max_body_bytes=100_000) as small:  # a public context is ~0.4 MB
        with pytest.raises(PayloadTooLarge, match=r"server answered 413 to POST /v1/contexts.*limit of 100000") as info:
            RemoteClient(small.url)
        assert info.value.limit == 100_000
        assert_alive(small.url)


def test_the_remote_client_splits_a_batch_to_stay_under_the_server_limit(tiny) -> None:
    service = EncryptedInferenceService({"throughput": tiny})
    with start_server(service, max_body_bytes=600_000) as srv:  # a context (~0.4 MB) fits, 3 chunks do not
        client = RemoteClient(srv.url)
        x = torch.rand(6, *SHAPE)
        whole = client.client.encrypt(x, chunk_size=2)
        assert len(whole) > 600_000
        check(client.predict(x, chunk_size=2, stream=False), tiny, x)  # several requests, each under the limit
    wide = EncryptedModel.build(  # 16 features: 16 ciphertexts per request (~1.4 MB) whatever the batch
        nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval(), calibration=torch.rand(8, 1, 4, 4), input_shape=(1, 4, 4)
    )
    with start_server(EncryptedInferenceService({"throughput": wide}), max_body_bytes=1_000_000) as srv:
        client = RemoteClient(srv.url)
        with pytest.raises(PayloadTooLarge, match=r"request of \d+ sample\(s\) is \d+ bytes, over the server's limit"):
            client.predict(torch.rand(3, 1, 4, 4), stream=False)


def test_other_methods_get_405_json_and_unknown_paths_404_json(running) -> None:
    for method, path, allowed in (
        ("PUT", "/v1/infer", "POST"),
        ("GET", "/v1/infer", "POST"),
        ("DELETE", "/v1/info", "GET"),
        ("PATCH", "/healthz", "GET"),
    ):
        status, headers, body = raw(running.url, method, path)
        assert status == 405, (method, path)
        assert headers["content-type"] == "application/json"
        err = json.loads(body)
        assert err["error"] == "MethodNotAllowed" and f"{method} is not allowed on {path}" in err["message"]
        assert allowed in headers["allow"]
    status, headers, body = raw(running.url, "POST", "/v1/nowhere", b"x", {"Content-Type": CONTENT_TYPE})
    assert status == 404 and json.loads(body)["error"] == "NotFound"
    assert_alive(running.url)


def test_bad_bodies_get_4xx_json_and_the_server_keeps_serving(running, tiny) -> None:
    client = RemoteClient(running.url)
    auth = {"Authorization": f"Bearer {client.token}"}
    status, headers, body = raw(running.url, "POST", "/v1/infer", b"\x00" * 100, {"Content-Type": CONTENT_TYPE, **auth})
    assert (status, headers["content-type"]) == (400, "application/json")
    assert json.loads(body)["error"] == "WireFormatError"

    status, _, body = raw(running.url, "POST", "/v1/infer", b"{}", {"Content-Type": "application/json", **auth})
    assert status == 415 and json.loads(body)["error"] == "UnsupportedMediaType"

    private = EncryptionClient(tiny.spec()).context.serialize(save_secret_key=True)
    status, _, body = raw(running.url, "POST", "/v1/contexts?mode=throughput", private, {"Content-Type": CONTENT_TYPE})
    assert status == 400
    err = json.loads(body)
    assert err["error"] == "PublicContextError" and "carries a secret key" in err["message"]

    status, _, body = raw(running.url, "GET", "/v1/spec?mode=fastest")
    assert status == 400 and "mode 'fastest' is not served" in json.loads(body)["message"]

    parts = urlsplit(running.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\r\n")
        reply = sock.recv(65536).decode("latin-1")
    assert reply.startswith("HTTP/1.1 411")
    assert_alive(running.url)
    x = torch.rand(2, *SHAPE)
    check(client.predict(x), tiny, x)


def test_contexts_belong_to_the_token_that_registered_them(running, tiny) -> None:
    alice, bob = RemoteClient(running.url), RemoteClient(running.url)
    assert alice.token != bob.token
    request = alice.client.encrypt(torch.rand(2, *SHAPE))
    # bob's token cannot use alice's context, nor can no token at all
    status, _, body = raw(
        running.url,
        "POST",
        "/v1/infer",
        request,
        {"Content-Type": CONTENT_TYPE, "Authorization": f"Bearer {bob.token}"},
    )
    assert status == 404 and json.loads(body)["error"] == "UnknownContextError"
    status, _, body = raw(running.url, "POST", "/v1/infer", request, {"Content-Type": CONTENT_TYPE})
    assert status == 401 and json.loads(body)["error"] == "AuthenticationError"
    status, _, _ = raw(running.url, "DELETE", f"/v1/contexts/{alice.context_id}", None, {"Authorization": "Bearer x"})
    assert status == 401
    status, _, _ = raw(
        running.url, "DELETE", f"/v1/contexts/{alice.context_id}", None, {"Authorization": f"Bearer {bob.token}"}
    )
    assert status == 404
    # alice's own token works; after she deletes her context, her client registers again by itself
    status, _, _ = raw(
        running.url, "DELETE", f"/v1/contexts/{alice.context_id}", None, {"Authorization": f"Bearer {alice.token}"}
    )
    assert status == 204
    x = torch.rand(3, *SHAPE)
    check(alice.predict(x), tiny, x)
    check(bob.predict(x), tiny, x)


def test_quotas_per_client_and_no_eviction_of_other_clients(tiny) -> None:
    service = EncryptedInferenceService({"throughput": tiny}, max_contexts=2, max_contexts_per_client=1)
    with start_server(service) as srv:
        first, second = RemoteClient(srv.url), RemoteClient(srv.url)
        other = EncryptionClient(tiny.spec())
        with pytest.raises(QuotaExceededError, match="already holds 1 contexts, its quota is 1"):
            service.register("throughput", other.public_context(), token=first.token)
        with pytest.raises(ServiceFullError, match=r"server answered 503 .*evicts nobody's"):
            RemoteClient(srv.url)
        x = torch.rand(2, *SHAPE)
        check(first.predict(x), tiny, x)  # both still served: nobody was evicted
        check(second.predict(x), tiny, x)
        second.close()
        check(RemoteClient(srv.url).predict(x), tiny, x)  # a freed slot is usable again
    small = EncryptedInferenceService({"throughput": tiny}, max_bytes_per_client=1000)
    with pytest.raises(QuotaExceededError, match=r"would take \d+ bytes, its quota is 1000"):
        small.register("throughput", other.public_context())


def test_the_remote_client_registers_again_when_its_context_expired(tiny) -> None:
    now = [0.0]
    service = EncryptedInferenceService({"throughput": tiny}, context_ttl_s=60, clock=lambda: now[0])
    with start_server(service) as srv:
        client = RemoteClient(srv.url)
        old_token = client.token
        x = torch.rand(2, *SHAPE)
        check(client.predict(x), tiny, x)
        now[0] += 61  # idle longer than the TTL: the service forgets the context and the client
        assert service.contexts.usage()["contexts"] == 0
        with pytest.raises(AuthenticationError):
            service.infer(client.client.encrypt(x), token=old_token)
        check(client.predict(x), tiny, x)  # streamed: refused from the headers, registered again, retried
        now[0] += 61
        check(client.predict(x, stream=False), tiny, x)  # the same for a buffered request
        assert client.token != old_token and service.contexts.usage() == {
            "clients": 1,
            "contexts": 1,
            "bytes": len(client.client.public_context()),
        }
    with pytest.raises(UnknownContextError, match="no context none... is registered under this token"):
        service.contexts.get(client.token, "none")


def test_every_request_is_logged_without_the_token(running, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="securetrain.encrypted.access"):
        client = RemoteClient(running.url)
        client.predict(torch.rand(1, *SHAPE), stream=False)
        client.predict(torch.rand(1, *SHAPE))  # streamed
        assert_alive(running.url)
        deadline = time.monotonic() + 5
        while not any("GET /healthz 200" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records if r.name == "securetrain.encrypted.access"]
    assert any("POST /v1/contexts 201" in line for line in lines)
    assert any("POST /v1/infer 200" in line for line in lines)
    assert any("POST /v1/infer/stream 200" in line for line in lines)
    assert any("GET /healthz 200" in line for line in lines)
    assert client.token is not None and not any(client.token in line for line in lines)


def test_info_reports_the_modes_and_limits(running) -> None:
    status, _, body = raw(running.url, "GET", "/v1/info")
    info = json.loads(body)
    assert status == 200 and info["modes"] == ["throughput"]
    assert info["limits"]["max_body_bytes"] == MAX_BODY and info["limits"]["read_timeout_s"] == READ_TIMEOUT
    assert info["limits"]["max_contexts_per_client"] == 4
    assert info["limits"]["streams"] is True and info["limits"]["max_stream_bytes"] == 2**30


def test_the_python_client_reports_server_errors(running) -> None:
    with pytest.raises(EncryptionError, match=r"server answered 400 to GET /v1/spec\?mode=nope: ConfigurationError"):
        RemoteClient(running.url, mode="nope")
