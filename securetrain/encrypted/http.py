"""An HTTP service for encrypted inference (standard library only) and its Python client.

Endpoints (JSON errors ``{"error": type, "message": ...}`` with a 4xx status on bad input;
the server keeps serving):

- ``GET /v1/health``: ``{"status": "ok"}``
- ``GET /v1/info``: the model name and the modes served
- ``GET /v1/spec?mode=throughput``: the public spec a client builds its keys from
- ``POST /v1/contexts?mode=...`` (body: public context bytes) -> ``{"context_id": ...}``;
  a context carrying a secret key is refused
- ``POST /v1/infer`` (body: a request from :meth:`EncryptionClient.encrypt`) -> response bytes

Bodies must be ``application/octet-stream`` (or ``application/vnd.securetrain.he``) with a
``Content-Length`` no larger than ``max_body_bytes``; contexts are kept per client (at most
``max_contexts``, least recently used first out).

Example:
    >>> import torch
    >>> from securetrain.models import build_model
    >>> from securetrain.encrypted.server import EncryptedModel
    >>> em = EncryptedModel.build(build_model("he", (1, 8, 8), 10, hidden=4), calibration=torch.rand(8, 1, 8, 8))
    >>> with start_server(EncryptedInferenceService({"throughput": em})) as running:
    ...     RemoteClient(running.url).predict(torch.rand(2, 1, 8, 8)).shape
    (2, 10)
"""

from __future__ import annotations

import json
import logging
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import numpy as np

from securetrain.deprecation import deprecated_aliases
from securetrain.encrypted.client import EncryptionClient
from securetrain.encrypted.errors import (
    ContextMismatchError,
    PublicContextError,
    WireFormatError,
)
from securetrain.encrypted.server import EncryptedModel, InferenceServer
from securetrain.encrypted.wire import CONTENT_TYPE, REQUEST, decode_header
from securetrain.errors import ConfigurationError, EncryptionError

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024
ACCEPTED_TYPES = ("application/octet-stream", CONTENT_TYPE)


class UnknownContextError(ContextMismatchError):
    """A request names a context the service does not hold (never registered or evicted)."""


class EncryptedInferenceService:
    """Thread-safe: the served models (one per mode) and the contexts clients registered."""

    def __init__(
        self, models: Mapping[str, EncryptedModel], *, max_contexts: int = 16, max_concurrent: int = 2
    ) -> None:
        if not models:
            raise ConfigurationError("the service needs at least one EncryptedModel")
        for mode, em in models.items():
            if em.plan.mode != mode:
                raise ConfigurationError(f"model registered as {mode!r} was planned for {em.plan.mode!r}")
        if max_contexts < 1 or max_concurrent < 1:
            raise ConfigurationError("max_contexts and max_concurrent must be at least 1")
        self.models = dict(models)
        self.max_contexts = max_contexts
        self._servers: OrderedDict[str, InferenceServer] = OrderedDict()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_concurrent)

    def info(self) -> dict[str, Any]:
        first = next(iter(self.models.values()))
        return {
            "model": first.compiled.name,
            "modes": sorted(self.models),
            "input_shape": list(first.compiled.input_shape),
            "outputs": first.compiled.output_size,
        }

    def spec(self, mode: str) -> dict[str, Any]:
        if mode not in self.models:
            raise ConfigurationError(f"mode {mode!r} is not served; choose one of {', '.join(sorted(self.models))}")
        return self.models[mode].spec()

    def register(self, mode: str, public_context: bytes) -> str:
        """Check and keep a client's public context; its id (SHA-256 of the bytes)."""
        if mode not in self.models:
            raise ConfigurationError(f"mode {mode!r} is not served; choose one of {', '.join(sorted(self.models))}")
        server = InferenceServer(self.models[mode], public_context)
        with self._lock:
            self._servers[server.context_id] = server
            self._servers.move_to_end(server.context_id)
            while len(self._servers) > self.max_contexts:
                self._servers.popitem(last=False)
        return server.context_id

    def infer(self, request: bytes) -> bytes:
        """Evaluate a request under the context it names."""
        header, _ = decode_header(request, expect_kind=REQUEST)
        ctx_id = header.get("context")
        with self._lock:
            server = self._servers.get(ctx_id) if isinstance(ctx_id, str) else None
            if server is not None:
                self._servers.move_to_end(server.context_id)
        if server is None:
            raise UnknownContextError(
                "the request names a context this service does not hold; POST the public context to "
                "/v1/contexts first (contexts are evicted when more than "
                f"{self.max_contexts} clients are registered)"
            )
        with self._slots:
            return server.evaluate(request)


def _status_for(exc: Exception) -> int:
    if isinstance(exc, UnknownContextError):
        return 404
    if isinstance(exc, ContextMismatchError):
        return 409
    if isinstance(exc, (WireFormatError, PublicContextError, ConfigurationError)):
        return 400
    if isinstance(exc, EncryptionError):
        return 422
    return 500


class _Handler(BaseHTTPRequestHandler):
    server_version = "securetrain-he/1"
    protocol_version = "HTTP/1.1"
    service: EncryptedInferenceService
    max_body_bytes: int

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        logger.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json")

    def _error(self, status: int, kind: str, message: str) -> None:
        self._json(status, {"error": kind, "message": message})

    def _route(self) -> tuple[str, dict[str, str]]:
        parsed = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query).items()}
        return parsed.path.rstrip("/") or "/", query

    def do_GET(self) -> None:  # the stdlib's name
        path, query = self._route()
        try:
            if path == "/v1/health":
                self._json(200, {"status": "ok"})
            elif path == "/v1/info":
                self._json(200, self.service.info())
            elif path == "/v1/spec":
                self._json(200, self.service.spec(query.get("mode", "throughput")))
            else:
                self._error(404, "NotFound", f"no such endpoint {path!r}")
        except Exception as exc:  # noqa: BLE001 (every failure becomes a JSON error; the server keeps serving)
            self._fail(exc)

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._error(411, "LengthRequired", "send the body with a Content-Length, not chunked")
            return None
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            self._error(411, "LengthRequired", "a Content-Length header is required")
            return None
        try:
            n = int(length)
        except ValueError:
            n = -1
        if n < 0:
            self.close_connection = True
            self._error(400, "BadRequest", f"invalid Content-Length {length!r}")
            return None
        if n > self.max_body_bytes:
            self.close_connection = True
            self._error(413, "PayloadTooLarge", f"body of {n} bytes exceeds the limit of {self.max_body_bytes} bytes")
            return None
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype not in ACCEPTED_TYPES:
            self.close_connection = True
            self._error(
                415,
                "UnsupportedMediaType",
                f"Content-Type must be one of {', '.join(ACCEPTED_TYPES)}, got {ctype or 'none'!r}",
            )
            return None
        body = self.rfile.read(n)
        if len(body) != n:
            self.close_connection = True
            self._error(400, "BadRequest", f"body ended after {len(body)} of {n} bytes")
            return None
        return body

    def do_POST(self) -> None:  # the stdlib's name
        path, query = self._route()
        if path not in ("/v1/contexts", "/v1/infer"):
            self.close_connection = True
            self._error(404, "NotFound", f"no such endpoint {path!r}")
            return
        body = self._read_body()
        if body is None:
            return
        try:
            if path == "/v1/contexts":
                ctx_id = self.service.register(query.get("mode", "throughput"), body)
                self._json(201, {"context_id": ctx_id})
            else:
                self._send(200, self.service.infer(body), CONTENT_TYPE)
        except Exception as exc:  # noqa: BLE001 (every failure becomes a JSON error; the server keeps serving)
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        status = _status_for(exc)
        if status == 500:
            logger.exception("internal error while serving %s", self.path)
            self._error(500, "InternalError", "internal server error")
        else:
            self._error(status, type(exc).__name__, str(exc))


class RunningServer:
    """A server running in a background thread; a context manager that shuts it down."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self.httpd = httpd
        self.thread = thread
        host, port = httpd.server_address[:2]
        name = host.decode() if isinstance(host, (bytes, bytearray)) else str(host)
        self.url = f"http://{name}:{port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=30)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_port(port: object) -> int:
    """A TCP port number, ``0..65535`` (0: any free port); :class:`ConfigurationError` otherwise.

    Example:
        >>> check_port(8000)
        8000
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigurationError(f"port must be a whole number in 0..65535 (0: any free port), got {port!r}")
    return port


def make_server(
    service: EncryptedInferenceService,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> ThreadingHTTPServer:
    """A ``ThreadingHTTPServer`` bound to ``host:port`` (port 0: any free port)."""
    if max_body_bytes < 1:
        raise ConfigurationError(f"max_body_bytes must be positive, got {max_body_bytes}")
    check_port(port)
    handler = type("Handler", (_Handler,), {"service": service, "max_body_bytes": int(max_body_bytes)})
    try:
        httpd = ThreadingHTTPServer((host, int(port)), handler)
    except OSError as exc:  # an address of another machine, a port in use or reserved, a name that does not resolve
        detail = exc.strerror or str(exc)
        raise OSError(
            exc.errno,
            f"cannot listen on {host}:{port} ({detail}); give an address of this machine (127.0.0.1, or 0.0.0.0 for "
            "every interface) and a free port (0 picks one)",
        ) from exc
    httpd.daemon_threads = True
    return httpd


def start_server(
    service: EncryptedInferenceService,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> RunningServer:
    """Serve in a background thread; use as ``with start_server(...) as running: running.url``."""
    httpd = make_server(service, host, port, max_body_bytes=max_body_bytes)
    thread = threading.Thread(target=httpd.serve_forever, name="securetrain-he-server", daemon=True)
    thread.start()
    return RunningServer(httpd, thread)


def serve(
    service: EncryptedInferenceService,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> None:
    """Serve until interrupted (blocking)."""
    httpd = make_server(service, host, port, max_body_bytes=max_body_bytes)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()


def build_service_from_run(
    run_dir: str | os.PathLike[str],
    modes: Sequence[str] = ("throughput", "latency"),
    *,
    calibration_samples: int = 512,
    max_contexts: int = 16,
    model: str | None = None,
    data: str | None = None,
    **plan_options: Any,
) -> EncryptedInferenceService:
    """A service for the model of a run directory, calibrated on its training split
    (``max_contexts``: client contexts kept in memory; ``model`` / ``data``: the run's import-path
    specs, passed again to allow importing them, see :class:`securetrain.rundir.RunDir`)."""
    from securetrain.rundir import RunDir

    run = RunDir.open(run_dir, model=model, data=data)
    run.check_specs_given()
    trained = run.load_model()
    x_train, _ = run.load_data("train")
    calib = x_train[:calibration_samples]
    shape = run.data.input_shape
    models = {}
    for mode in modes:
        models[mode] = EncryptedModel.build(
            trained, mode, calibration=calib, input_shape=shape, name=run.model_spec.name, **plan_options
        )
    return EncryptedInferenceService(models, max_contexts=max_contexts)


class RemoteClient:
    """Python client of the service: keys stay here, only public bytes and ciphertexts travel."""

    def __init__(self, url: str, *, mode: str = "throughput", timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.mode = mode
        spec = json.loads(self._call("GET", f"/v1/spec?mode={urllib.parse.quote(mode)}"))
        self.client = EncryptionClient(spec)
        reply = json.loads(
            self._call("POST", f"/v1/contexts?mode={urllib.parse.quote(mode)}", self.client.public_context())
        )
        if reply.get("context_id") != self.client.context_id:
            raise ContextMismatchError("the server registered a different context fingerprint than this client's")

    def _call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", CONTENT_TYPE)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # the URL is the caller's
                reply: bytes = resp.read()
                return reply
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                err = json.loads(payload)
                detail = f"{err.get('error')}: {err.get('message')}"
            except (json.JSONDecodeError, AttributeError):
                detail = payload[:200].decode("utf-8", "replace")
            raise EncryptionError(f"server answered {exc.code} to {method} {path}: {detail}") from None

    def predict(self, x: Any, *, chunk_size: int | None = None) -> np.ndarray:
        """Encrypted logits for ``x``, decrypted here."""
        return self.client.decrypt(self._call("POST", "/v1/infer", self.client.encrypt(x, chunk_size=chunk_size)))


__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "EncryptedInferenceService",
    "RemoteClient",
    "RunningServer",
    "UnknownContextError",
    "build_service_from_run",
    "make_server",
    "serve",
    "start_server",
]


__getattr__ = deprecated_aliases(__name__, {"service_from_run": "build_service_from_run"})
