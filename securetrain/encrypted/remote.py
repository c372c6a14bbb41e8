"""The Python client of the HTTP service: keys stay here, only public bytes and ciphertexts travel.

:class:`RemoteClient` fetches the spec, makes its keys, registers its public context (and keeps
the token the service returns), and then encrypts, posts and decrypts. It re-registers
transparently when the service forgot its context (idle expiry), sends bodies with ``Expect:
100-continue`` so a refusal (413 too large, 401, ...) arrives as a typed error instead of a broken
pipe, and splits a batch into requests that stay under the server's ``max_body_bytes``.

Example:
    >>> import torch
    >>> from securetrain.models import build_model
    >>> from securetrain.encrypted.server import EncryptedModel
    >>> from securetrain.encrypted.http import EncryptedInferenceService, start_server
    >>> em = EncryptedModel.build(build_model("he", (1, 8, 8), 10, hidden=4), calibration=torch.rand(8, 1, 8, 8))
    >>> with start_server(EncryptedInferenceService({"throughput": em})) as running:
    ...     remote = RemoteClient(running.url)
    ...     remote.predict(torch.rand(3, 1, 8, 8)).shape
    (3, 10)
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from securetrain.encrypted.client import EncryptionClient
from securetrain.encrypted.errors import (
    AuthenticationError,
    ContextMismatchError,
    PayloadTooLarge,
    QuotaExceededError,
    RequestTimeoutError,
    ServiceError,
    ServiceFullError,
    UnknownContextError,
)
from securetrain.encrypted.prefetch import Prefetch
from securetrain.encrypted.wire import CONTENT_TYPE
from securetrain.errors import ConfigurationError, EncryptionError

_SEND_PIECE = 1 << 20
_INTERIM = (b"HTTP/1.1 100", b"HTTP/1.0 100")
_CONTINUE_WAIT_S = 10.0
_TYPED: dict[int, type[ServiceError]] = {
    401: AuthenticationError,
    404: UnknownContextError,
    408: RequestTimeoutError,
    413: PayloadTooLarge,
    429: QuotaExceededError,
    503: ServiceFullError,
}


def _await_continue(sock: socket.socket, wait: float) -> bool:
    """After headers with ``Expect: 100-continue``: True to send the body (``100 Continue`` read, or
    no answer within ``wait``), False when the server already sent its final answer."""
    readable, _, _ = select.select([sock], [], [], wait)
    if not readable:
        return True
    deadline = time.monotonic() + wait
    while True:
        head = sock.recv(4096, socket.MSG_PEEK)
        interim = head.startswith(_INTERIM)
        if not head or (len(head) >= len(_INTERIM[0]) and not interim):
            return False  # a final answer (or a closed connection): the response parser reads it
        end = head.find(b"\r\n\r\n")
        if end >= 0:
            sock.recv(end + 4)  # consume the interim response
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)  # a partial status line: wait for the rest


PREFETCH_BYTES = 64 << 20  # encrypted frames made ahead of the socket in a streamed request


class RemoteClient:
    """Python client of the service (``mode``: the packing to use; ``timeout``: seconds per call)."""

    def __init__(self, url: str, *, mode: str = "throughput", timeout: float = 600.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"the service URL must look like http://host:port, got {url!r}")
        self.url = url.rstrip("/")
        self._parts = parts
        self.timeout = timeout
        self.mode = mode
        info = json.loads(self._call("GET", "/v1/info"))
        limits = info.get("limits", {}) if isinstance(info, dict) else {}
        self.max_body_bytes: int | None = limits.get("max_body_bytes") if isinstance(limits, dict) else None
        self.max_stream_bytes: int | None = limits.get("max_stream_bytes") if isinstance(limits, dict) else None
        self.streams = bool(isinstance(limits, dict) and limits.get("streams")) and mode == "throughput"
        spec = json.loads(self._call("GET", f"/v1/spec?mode={urllib.parse.quote(mode)}"))
        self.client = EncryptionClient(spec)
        self.token: str | None = None
        self.context_id: str | None = None
        self.bytes_sent = 0
        """Body bytes of the inference requests sent so far (buffered and streamed)."""
        self.bytes_received = 0
        """Bytes of the inference responses received so far."""
        self.register()

    # -- transport
    def _connection(self) -> http.client.HTTPConnection:
        host, port = self._parts.hostname, self._parts.port
        if self._parts.scheme == "https":
            return http.client.HTTPSConnection(str(host), port, timeout=self.timeout)
        return http.client.HTTPConnection(str(host), port, timeout=self.timeout)

    def _exchange(self, method: str, path: str, send: Callable[[http.client.HTTPConnection], None]) -> bytes:
        """One request on a fresh connection: ``send`` writes it, then the answer is read and checked;
        a transport failure becomes :class:`EncryptionError` naming the service and the request."""
        conn = self._connection()
        try:
            send(conn)
            resp = conn.getresponse()
            payload = resp.read()
            status = resp.status
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, ServiceError):
                raise
            raise EncryptionError(f"cannot reach the service at {self.url} ({method} {path}): {exc}") from exc
        finally:
            conn.close()
        return self._checked(method, path, status, payload)

    def _call(self, method: str, path: str, body: bytes | None = None, *, auth: bool = False) -> bytes:
        def send(conn: http.client.HTTPConnection) -> None:
            conn.putrequest(method, path, skip_accept_encoding=True)
            if auth and self.token:
                conn.putheader("Authorization", f"Bearer {self.token}")
            if body is not None:
                conn.putheader("Content-Type", CONTENT_TYPE)
                conn.putheader("Content-Length", str(len(body)))
                conn.putheader("Expect", "100-continue")
            conn.endheaders()
            if (
                body is not None
                and conn.sock is not None
                and _await_continue(conn.sock, min(self.timeout, _CONTINUE_WAIT_S))
            ):
                view = memoryview(body)
                try:
                    for start in range(0, len(view), _SEND_PIECE):
                        conn.send(view[start : start + _SEND_PIECE])
                except (BrokenPipeError, ConnectionResetError) as exc:
                    if self.max_body_bytes is not None and len(body) > self.max_body_bytes:
                        raise PayloadTooLarge(
                            f"the server refused a body of {len(body)} bytes (limit {self.max_body_bytes})",
                            limit=self.max_body_bytes,
                        ) from exc
                    raise EncryptionError(
                        f"the server closed the connection while {method} {path} was sending {len(body)} bytes ({exc})"
                    ) from exc

        return self._exchange(method, path, send)

    def _checked(self, method: str, path: str, status: int, payload: bytes) -> bytes:
        if status >= 400:
            try:
                err = json.loads(payload)
                kind, message = str(err.get("error")), str(err.get("message"))
            except (json.JSONDecodeError, AttributeError):
                kind, message = "HTTPError", payload[:200].decode("utf-8", "replace")
            text = f"server answered {status} to {method} {path}: {kind}: {message}"
            typed = _TYPED.get(status)
            if typed is PayloadTooLarge:
                raise PayloadTooLarge(text, limit=self.max_body_bytes)
            if typed is not None:
                raise typed(text)
            raise EncryptionError(text)
        return payload

    def _call_stream(self, path: str, pieces: Iterator[bytes], limit: int | None) -> bytes:
        """POST ``pieces`` with chunked transfer encoding, never sending more than ``limit`` bytes.

        The first piece is made before connecting; a piece that would take the body over
        ``limit`` is not sent (:class:`PayloadTooLarge`, the connection dropped).
        """
        it = iter(pieces)
        piece: bytes | None = next(it, None)

        def send(conn: http.client.HTTPConnection) -> None:
            nonlocal piece
            sent = 0
            conn.putrequest("POST", path, skip_accept_encoding=True)
            if self.token:
                conn.putheader("Authorization", f"Bearer {self.token}")
            conn.putheader("Content-Type", CONTENT_TYPE)
            conn.putheader("Transfer-Encoding", "chunked")
            conn.putheader("Expect", "100-continue")
            conn.endheaders()
            try:
                go = conn.sock is None or _await_continue(conn.sock, min(self.timeout, _CONTINUE_WAIT_S))
                # not go: refused from the headers (unknown context, token); the answer is read below
                while go and piece is not None:
                    if limit is not None and sent + len(piece) > limit:
                        raise PayloadTooLarge(
                            f"the streamed request would exceed the server's limit of {limit} bytes after {sent} "
                            "bytes; nothing more was sent",
                            limit=limit,
                        )
                    conn.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
                    sent += len(piece)
                    self.bytes_sent += len(piece)
                    piece = next(it, None)
                if go:
                    conn.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered early (an error): read it below

        return self._exchange("POST", path, send)

    # -- contexts
    def register(self) -> str:
        """Register this client's public context (again); its id. A token the service no longer knows is dropped."""
        path = f"/v1/contexts?mode={urllib.parse.quote(self.mode)}"
        body = self.client.public_context()
        try:
            reply = json.loads(self._call("POST", path, body, auth=True))
        except AuthenticationError:  # the service forgot this client (all its contexts expired): start anew
            self.token = None
            reply = json.loads(self._call("POST", path, body))
        if reply.get("context_id") != self.client.context_id:
            raise ContextMismatchError("the server registered a different context fingerprint than this client's")
        self.token = str(reply["token"])
        self.context_id = str(reply["context_id"])
        return self.context_id

    def close(self) -> None:
        """Delete this client's context on the server (it would expire anyway)."""
        if self.context_id is not None and self.token is not None:
            try:
                self._call("DELETE", f"/v1/contexts/{self.context_id}", auth=True)
            except (AuthenticationError, UnknownContextError):
                pass  # already gone (expired): nothing to delete
            self.context_id = None

    # -- inference
    def _infer(self, request: bytes) -> bytes:
        self.bytes_sent += len(request)
        try:
            reply = self._call("POST", "/v1/infer", request, auth=True)
        except (AuthenticationError, UnknownContextError):  # expired: register the same context again, retry once
            self.register()
            self.bytes_sent += len(request)
            reply = self._call("POST", "/v1/infer", request, auth=True)
        self.bytes_received += len(reply)
        return reply

    def _pieces(self, x: Any) -> Iterator[bytes]:
        """The streamed request of one chunk, refused before anything is sent when its first frame
        shows that the whole would not fit the server's stream limit."""
        it = self.client.encrypt_stream(x)
        head = next(it)
        first = next(it, None)
        limit = self.max_stream_bytes
        features = int(self.client.layout["features"])
        if first is not None and limit is not None and len(head) + features * len(first) > limit:
            raise PayloadTooLarge(
                f"a streamed chunk takes about {len(head) + features * len(first)} bytes ({features} ciphertexts of "
                f"{len(first)} bytes), over the server's stream limit of {limit}; fewer samples per chunk do not make "
                "it smaller: ask for a server with a larger --max-stream-mb",
                limit=limit,
            )
        yield head
        if first is not None:
            yield first
        yield from it

    def _stream_path(self) -> str:
        # the context in the URL too, so the service can refuse an unknown one from the headers
        return f"/v1/infer/stream?context={urllib.parse.quote(str(self.context_id))}"

    def _infer_stream(self, x: Any) -> bytes:
        limit = self.max_stream_bytes
        try:
            reply = self._send_prefetched(x, limit)
        except (AuthenticationError, UnknownContextError):  # expired: register the same context again, retry once
            self.register()
            reply = self._send_prefetched(x, limit)
        self.bytes_received += len(reply)
        return reply

    def _send_prefetched(self, x: Any, limit: int | None) -> bytes:
        # ciphertexts are encrypted ahead (up to PREFETCH_BYTES) while a send waits on the server
        with Prefetch(self._pieces(x), max_bytes=PREFETCH_BYTES) as pieces:
            return self._call_stream(self._stream_path(), pieces, limit)

    def predict_stream(self, x: Any, *, chunk_size: int | None = None) -> np.ndarray:
        """Encrypted logits for ``x`` (throughput mode), streamed: one request per chunk of at most
        ``chunk_size`` (default: the slot count) samples, each encrypted, sent and evaluated one
        ciphertext at a time, so neither side holds a chunk's request; only the small response of
        one chunk is held at once. Memory on this side: the inputs, the ciphertexts encrypted ahead
        while the server computes (at most :data:`PREFETCH_BYTES`), one response.
        """
        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        slots = int(self.client.layout["slots"])
        size = slots if chunk_size is None else int(chunk_size)
        if not 1 <= size <= slots:
            raise EncryptionError(f"chunk_size must be between 1 and the slot count {slots}, got {chunk_size}")
        if arr.ndim < 2 or arr.shape[0] < 1:
            raise EncryptionError(f"inputs must be a batch (B, ...), got shape {tuple(arr.shape)}")
        outs = [self.client.decrypt(self._infer_stream(arr[s : s + size])) for s in range(0, arr.shape[0], size)]
        return np.concatenate(outs, axis=0)

    def predict(self, x: Any, *, chunk_size: int | None = None, stream: bool | None = None) -> np.ndarray:
        """Encrypted logits for ``x``, decrypted here.

        In throughput mode against a service that streams (``stream=None``: whenever it can) this
        is :meth:`predict_stream`. Otherwise (``stream=False``, or latency mode) the batch is sent
        in as many buffered requests as it takes to keep each under the server's
        ``max_body_bytes``: one request is built, sent and decrypted at a time, so memory holds
        one request and one response, not the whole batch's. :class:`PayloadTooLarge` when even
        one sample's request is over the limit (a buffered throughput request carries one
        ciphertext per input feature whatever the batch: stream it instead).
        """
        if stream is None:
            stream = self.streams
        if stream:
            if not self.streams:
                raise EncryptionError("this service does not take streamed requests for mode " + repr(self.mode))
            return self.predict_stream(x, chunk_size=chunk_size)
        rows = int(x.shape[0]) if isinstance(x, (torch.Tensor, np.ndarray)) and x.ndim > 1 else None
        limit = self.max_body_bytes
        if rows is None or limit is None:
            return self.client.decrypt(self._infer(self.client.encrypt(x, chunk_size=chunk_size)))
        outs = []
        start, per, last = 0, rows, None
        while start < rows:
            request = self.client.encrypt(x[start : start + per], chunk_size=chunk_size)
            if len(request) > limit:
                if per == 1 or (last is not None and len(request) >= last):
                    raise PayloadTooLarge(
                        f"a request of {per} sample(s) is {len(request)} bytes, over the server's limit of {limit}; "
                        "fewer samples per request do not make it smaller (in throughput mode a request carries "
                        "one ciphertext per input feature): stream it, use latency mode or a server with a larger limit",
                        limit=limit,
                    )
                last, per = len(request), max(1, min(per - 1, per * limit // len(request)))
                continue
            outs.append(self.client.decrypt(self._infer(request)))
            del request
            start += per
        return np.concatenate(outs, axis=0)


__all__ = ["RemoteClient"]
