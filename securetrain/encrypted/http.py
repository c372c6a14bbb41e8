"""An HTTP service for encrypted inference: a Starlette application served by uvicorn.

Endpoints (errors are JSON ``{"error": type, "message": ...}``; the server keeps serving):

- ``GET /healthz`` (and ``GET /v1/health``): ``{"status": "ok"}``
- ``GET /v1/info``: the model, the modes served and the limits (``max_body_bytes``, quotas)
- ``GET /v1/spec?mode=throughput``: the public spec a client builds its keys from
- ``POST /v1/contexts?mode=...`` (body: public context bytes) -> 201 ``{"context_id", "token",
  "expires_in_s"}``; without a token this makes a new client, with ``Authorization: Bearer
  <token>`` it adds a context to that client (within its quota). A context carrying a secret key
  is refused.
- ``DELETE /v1/contexts/<context_id>`` (with the token) -> 204
- ``POST /v1/infer`` (with the token; body: a request from :meth:`EncryptionClient.encrypt`) ->
  response bytes
- ``POST /v1/infer/stream`` (with the token; body, usually chunked: a streamed request from
  :meth:`EncryptionClient.encrypt_stream`, one throughput chunk) -> response bytes. Each
  ciphertext is evaluated as it arrives and dropped, so the server holds only the chunk's open
  partial sums, whatever the body's size; the body may not exceed ``max_stream_bytes`` (413,
  the connection closed).

Any other method on these paths gets 405 JSON (with ``Allow``), any other path 404 JSON. Bodies
must be ``application/octet-stream`` (or ``application/vnd.securetrain.he``) with a
``Content-Length`` no larger than ``max_body_bytes`` (else 413, answered from the headers). A
body that stops arriving for ``read_timeout_s`` (or arrives slower than
:data:`MIN_UPLOAD_BYTES_PER_S`) is answered 408 and its connection closed. Every request is
logged on the ``securetrain.encrypted.access`` logger (the token never is).

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

import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from securetrain.deprecation import deprecated_aliases
from securetrain.encrypted.contexts import DEFAULT_TTL_S, ContextStore, Registration
from securetrain.encrypted.errors import (
    ContextMismatchError,
    PayloadTooLarge,
    PublicContextError,
    RequestTimeoutError,
    ServiceError,
    UnknownContextError,
    WireFormatError,
)
from securetrain.encrypted.remote import RemoteClient
from securetrain.encrypted.server import EncryptedModel, InferenceServer, StreamEvaluation
from securetrain.encrypted.wire import CONTENT_TYPE, REQUEST, StreamParser, decode_header
from securetrain.errors import ConfigurationError, EncryptionError

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from typing_extensions import Self  # typing.Self from Python 3.11

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("securetrain.encrypted.access")

DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024
DEFAULT_READ_TIMEOUT_S = 30.0
DEFAULT_MAX_STREAM_BYTES = 2**30
MIN_UPLOAD_BYTES_PER_S = 256 * 1024
ACCEPTED_TYPES = ("application/octet-stream", CONTENT_TYPE)


class EncryptedInferenceService:
    """Thread-safe: the served models (one per mode) and the contexts clients registered.

    ``max_contexts`` / ``max_total_bytes`` bound what the whole service holds,
    ``max_contexts_per_client`` / ``max_bytes_per_client`` what one client (one token) may hold,
    ``context_ttl_s`` how long a context may stay unused; ``max_concurrent`` evaluations run at once.
    """

    def __init__(
        self,
        models: Mapping[str, EncryptedModel],
        *,
        max_contexts: int = 64,
        max_total_bytes: int = 4 * 2**30,
        max_contexts_per_client: int = 4,
        max_bytes_per_client: int = 2**30,
        context_ttl_s: float = DEFAULT_TTL_S,
        max_concurrent: int = 2,
        max_stream_bytes: int = DEFAULT_MAX_STREAM_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not models:
            raise ConfigurationError("the service needs at least one EncryptedModel")
        for mode, em in models.items():
            if em.plan.mode != mode:
                raise ConfigurationError(f"model registered as {mode!r} was planned for {em.plan.mode!r}")
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int) or max_concurrent < 1:
            raise ConfigurationError(f"max_concurrent must be at least 1, got {max_concurrent!r}")
        if isinstance(max_stream_bytes, bool) or not isinstance(max_stream_bytes, int) or max_stream_bytes < 1:
            raise ConfigurationError(f"max_stream_bytes must be a positive whole number, got {max_stream_bytes!r}")
        self.max_stream_bytes = max_stream_bytes
        self.models = dict(models)
        self.contexts: ContextStore[InferenceServer] = ContextStore(
            max_contexts=max_contexts,
            max_total_bytes=max_total_bytes,
            max_contexts_per_client=max_contexts_per_client,
            max_bytes_per_client=max_bytes_per_client,
            ttl_s=context_ttl_s,
            clock=clock,
        )
        self._slots = threading.BoundedSemaphore(max_concurrent)

    @property
    def max_contexts(self) -> int:
        return self.contexts.max_contexts

    def info(self) -> dict[str, Any]:
        first = next(iter(self.models.values()))
        store = self.contexts
        return {
            "model": first.compiled.name,
            "modes": sorted(self.models),
            "input_shape": list(first.compiled.input_shape),
            "outputs": first.compiled.output_size,
            "limits": {
                "max_contexts_per_client": store.max_contexts_per_client,
                "max_bytes_per_client": store.max_bytes_per_client,
                "context_ttl_s": store.ttl_s,
                "streams": "throughput" in self.models,
                "max_stream_bytes": self.max_stream_bytes,
            },
        }

    def _model(self, mode: str) -> EncryptedModel:
        if mode not in self.models:
            raise ConfigurationError(f"mode {mode!r} is not served; choose one of {', '.join(sorted(self.models))}")
        return self.models[mode]

    def spec(self, mode: str) -> dict[str, Any]:
        return self._model(mode).spec()

    def register(self, mode: str, public_context: bytes, *, token: str | None = None) -> Registration:
        """Check a client's public context and keep it for the client of ``token`` (a new client if ``None``).

        The context id is the SHA-256 of the bytes (what requests name); the returned token is the
        only key that can use or delete it.
        """
        model = self._model(mode)
        if token is not None:
            self.contexts.check_token(token)  # a stale token fails before the slow load of the context
        server = InferenceServer(model, public_context)
        return self.contexts.add(server.context_id, server, nbytes=len(public_context), token=token)

    def infer(self, request: bytes, *, token: str | None) -> bytes:
        """Evaluate a request under the context it names, which the client of ``token`` must hold."""
        header, _ = decode_header(request, expect_kind=REQUEST)
        ctx_id = header.get("context")
        if not isinstance(ctx_id, str):
            raise WireFormatError("the request header names no context")
        server = self.contexts.get(token, ctx_id)
        with self._slots:
            return server.evaluate(request)

    def open_stream(self, header: dict[str, Any], *, token: str | None) -> StreamEvaluation:
        """Start a streamed request (its parsed header) under the context it names; takes one of the
        ``max_concurrent`` evaluation slots, which :meth:`end_stream` gives back."""
        ctx_id = header.get("context")
        if not isinstance(ctx_id, str):
            raise WireFormatError("the request header names no context")
        server = self.contexts.get(token, ctx_id)
        self._slots.acquire()
        try:
            return server.open_stream(header)
        except BaseException:
            self._slots.release()
            raise

    def end_stream(self) -> None:
        """Give back the evaluation slot of a stream :meth:`open_stream` started."""
        self._slots.release()

    def delete(self, context_id: str, *, token: str | None) -> None:
        """Forget a context of the client of ``token``."""
        self.contexts.remove(token, context_id)


def _status_for(exc: Exception) -> int:
    if isinstance(exc, ServiceError):
        return exc.status
    if isinstance(exc, ContextMismatchError):
        return 409
    if isinstance(exc, (WireFormatError, PublicContextError, ConfigurationError)):
        return 400
    if isinstance(exc, EncryptionError):
        return 422
    return 500


def _error_response(status: int, kind: str, message: str, *, close: bool = False, **headers: str) -> Response:
    from starlette.responses import JSONResponse

    extra = dict(headers)
    if close:
        extra["Connection"] = "close"
    return JSONResponse({"error": kind, "message": message}, status_code=status, headers=extra)


def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


async def _read_body(request: Request, limit: int, read_timeout: float) -> bytes | Response:
    """The body, read with an idle timeout and a minimum rate; or the error response to send."""
    import anyio
    from starlette.requests import ClientDisconnect

    if request.headers.get("transfer-encoding"):
        return _error_response(411, "LengthRequired", "send the body with a Content-Length, not chunked", close=True)
    length = request.headers.get("content-length")
    if length is None:
        return _error_response(411, "LengthRequired", "a Content-Length header is required", close=True)
    try:
        n = int(length)
    except ValueError:
        n = -1
    if n < 0:
        return _error_response(400, "BadRequest", f"invalid Content-Length {length!r}", close=True)
    if n > limit:
        return _error_response(
            413, "PayloadTooLarge", f"body of {n} bytes exceeds the limit of {limit} bytes", close=True
        )
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ACCEPTED_TYPES:
        return _error_response(
            415,
            "UnsupportedMediaType",
            f"Content-Type must be one of {', '.join(ACCEPTED_TYPES)}, got {ctype or 'none'!r}",
            close=True,
        )
    deadline = time.monotonic() + read_timeout + n / MIN_UPLOAD_BYTES_PER_S
    parts: list[bytes] = []
    received = 0
    stream = request.stream().__aiter__()
    try:
        while received < n:
            wait = min(read_timeout, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError
            with anyio.fail_after(wait):
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    break
            received += len(chunk)
            if received > n:
                return _error_response(400, "BadRequest", f"body is longer than its Content-Length {n}", close=True)
            parts.append(chunk)
    except TimeoutError:
        err = RequestTimeoutError(
            f"the body stalled after {received} of {n} bytes (read timeout {read_timeout:g} s); connection released"
        )
        return _error_response(408, type(err).__name__, str(err), close=True)
    except ClientDisconnect:
        return _error_response(400, "BadRequest", f"client left after {received} of {n} bytes", close=True)
    if received != n:
        return _error_response(400, "BadRequest", f"body ended after {received} of {n} bytes", close=True)
    return b"".join(parts)


async def _evaluate_stream(
    request: Request, service: EncryptedInferenceService, read_timeout: float
) -> bytes | Response:
    """Read a streamed request piece by piece, evaluating each ciphertext as it arrives; the
    response bytes, or the error response to send (which closes the connection)."""
    import anyio
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect

    limit = service.max_stream_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return _error_response(
            413, "PayloadTooLarge", f"body of {length} bytes exceeds the stream limit of {limit} bytes", close=True
        )
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ACCEPTED_TYPES:
        return _error_response(
            415, "UnsupportedMediaType", f"Content-Type must be one of {', '.join(ACCEPTED_TYPES)}", close=True
        )
    named = request.query_params.get("context")
    if named is not None:  # refused from the headers, before the client sends the body (Expect: 100-continue)
        try:
            service.contexts.get(_token(request), named)
        except Exception as exc:  # noqa: BLE001 (every failure becomes a JSON error; the server keeps serving)
            return _error_response(_status_for(exc), type(exc).__name__, str(exc), close=True)
    parser = StreamParser()
    evaluation: StreamEvaluation | None = None
    received = 0
    waited = 0.0
    stream = request.stream().__aiter__()
    try:
        while True:
            start = time.monotonic()
            with anyio.fail_after(read_timeout):
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    break
            waited += time.monotonic() - start  # time spent waiting for the client, not evaluating
            received += len(chunk)
            if received > limit:
                return _error_response(
                    413, "PayloadTooLarge", f"the streamed body exceeds the limit of {limit} bytes", close=True
                )
            if waited > read_timeout + received / MIN_UPLOAD_BYTES_PER_S:
                raise TimeoutError
            blobs = parser.feed(chunk)
            if evaluation is None and parser.header is not None:
                if named is not None and parser.header.get("context") != named:
                    raise WireFormatError("the streamed request's header names another context than its URL")
                evaluation = await run_in_threadpool(service.open_stream, parser.header, token=_token(request))
            for blob in blobs:
                assert evaluation is not None  # a frame comes after the header
                await run_in_threadpool(evaluation.feed, blob)
        if evaluation is None or parser.pending:
            raise WireFormatError(f"the streamed request ended early ({received} bytes, {parser.frames} frames)")
        return await run_in_threadpool(evaluation.finish)
    except TimeoutError:
        err = RequestTimeoutError(
            f"the streamed body stalled after {received} bytes (read timeout {read_timeout:g} s); connection released"
        )
        return _error_response(408, type(err).__name__, str(err), close=True)
    except ClientDisconnect:
        return _error_response(400, "BadRequest", f"client left after {received} bytes", close=True)
    except Exception as exc:  # noqa: BLE001 (every failure becomes a JSON error; the server keeps serving)
        status = _status_for(exc)
        if status == 500:
            logger.error("internal error while serving %s", request.url.path, exc_info=exc)
            return _error_response(500, "InternalError", "internal server error", close=True)
        return _error_response(status, type(exc).__name__, str(exc), close=True)
    finally:
        if evaluation is not None:
            service.end_stream()


class _AccessLog:
    """ASGI middleware: one line per request on ``securetrain.encrypted.access`` (never the token)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        status = [0]
        sent = [0]

        async def logged_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            elif message["type"] == "http.response.body":
                sent[0] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        finally:
            client = scope.get("client") or ("-", 0)
            access_logger.info(
                "%s:%s %s %s %d %dB %.3fs",
                client[0],
                client[1],
                scope.get("method"),
                scope.get("path"),
                status[0],
                sent[0],
                time.monotonic() - start,
            )


def make_app(
    service: EncryptedInferenceService,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
) -> Any:
    """The ASGI application (Starlette, wrapped in the access log) for ``service``."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse
    from starlette.responses import Response as PlainResponse
    from starlette.routing import Route

    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ConfigurationError(f"max_body_bytes must be a positive whole number, got {max_body_bytes!r}")
    if not read_timeout_s > 0:
        raise ConfigurationError(f"read_timeout_s must be positive, got {read_timeout_s!r}")

    def fail(exc: Exception, path: str) -> Response:
        status = _status_for(exc)
        if status == 500:
            logger.error("internal error while serving %s", path, exc_info=exc)
            return _error_response(500, "InternalError", "internal server error")
        return _error_response(status, type(exc).__name__, str(exc))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def info(request: Request) -> Response:
        body = service.info()
        body["limits"]["max_body_bytes"] = max_body_bytes
        body["limits"]["read_timeout_s"] = read_timeout_s
        return JSONResponse(body)

    async def spec(request: Request) -> Response:
        try:
            return JSONResponse(service.spec(request.query_params.get("mode", "throughput")))
        except Exception as exc:  # noqa: BLE001 (every failure becomes a JSON error; the server keeps serving)
            return fail(exc, request.url.path)

    async def contexts(request: Request) -> Response:
        body = await _read_body(request, max_body_bytes, read_timeout_s)
        if not isinstance(body, bytes):
            return body
        try:
            reg = await run_in_threadpool(
                service.register, request.query_params.get("mode", "throughput"), body, token=_token(request)
            )
        except Exception as exc:  # noqa: BLE001 (every failure becomes a JSON error; the server keeps serving)
            return fail(exc, request.url.path)
        return JSONResponse(
            {"context_id": reg.context_id, "token": reg.token, "expires_in_s": reg.expires_in_s}, status_code=201
        )

    async def delete_context(request: Request) -> Response:
        try:
            service.delete(str(request.path_params["context_id"]), token=_token(request))
        except Exception as exc:  # noqa: BLE001 (every failure becomes a JSON error; the server keeps serving)
            return fail(exc, request.url.path)
        return PlainResponse(status_code=204)

    async def infer(request: Request) -> Response:
        body = await _read_body(request, max_body_bytes, read_timeout_s)
        if not isinstance(body, bytes):
            return body
        try:
            reply = await run_in_threadpool(service.infer, body, token=_token(request))
        except Exception as exc:  # noqa: BLE001 (every failure becomes a JSON error; the server keeps serving)
            return fail(exc, request.url.path)
        return PlainResponse(reply, media_type=CONTENT_TYPE)

    async def infer_stream(request: Request) -> Response:
        reply = await _evaluate_stream(request, service, read_timeout_s)
        if not isinstance(reply, bytes):
            return reply
        return PlainResponse(reply, media_type=CONTENT_TYPE)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)  # registered for HTTPException only
        if exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow", "")
            return _error_response(
                405,
                "MethodNotAllowed",
                f"{request.method} is not allowed on {request.url.path}; use {allow}",
                Allow=allow,
            )
        if exc.status_code == 404:
            return _error_response(404, "NotFound", f"no such endpoint {request.url.path!r}")
        return _error_response(exc.status_code, "HTTPError", str(exc.detail))

    routes = [
        Route("/healthz", health, methods=["GET"]),
        Route("/v1/health", health, methods=["GET"]),
        Route("/v1/info", info, methods=["GET"]),
        Route("/v1/spec", spec, methods=["GET"]),
        Route("/v1/contexts", contexts, methods=["POST"]),
        Route("/v1/contexts/{context_id}", delete_context, methods=["DELETE"]),
        Route("/v1/infer", infer, methods=["POST"]),
        Route("/v1/infer/stream", infer_stream, methods=["POST"]),
    ]
    app: Starlette = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return _AccessLog(app)


class RunningServer:
    """A uvicorn server running in a background thread; a context manager that shuts it down."""

    def __init__(self, server: Any, thread: threading.Thread, address: tuple[str, int]) -> None:
        self.server = server
        self.thread = thread
        self.host, self.port = address
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{name}:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
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


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port), with a message that says how to fix a failure."""
    check_port(port)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, int(port)), family=family, reuse_port=False, backlog=512)
    except OSError as exc:  # an address of another machine, a port in use or reserved, a name that does not resolve
        detail = exc.strerror or str(exc)
        raise OSError(
            exc.errno,
            f"cannot listen on {host}:{port} ({detail}); give an address of this machine (127.0.0.1, or 0.0.0.0 for "
            "every interface) and a free port (0 picks one)",
        ) from exc
    return sock


def make_server(
    service: EncryptedInferenceService,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    max_connections: int = 256,
) -> tuple[Any, socket.socket]:
    """A uvicorn ``Server`` for ``service`` and the socket it will listen on (bound here).

    ``max_connections`` bounds open connections (beyond it uvicorn answers 503).
    """
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ConfigurationError(f"max_body_bytes must be positive, got {max_body_bytes}")
    sock = bind_socket(host, port)
    try:
        import uvicorn

        app = make_app(service, max_body_bytes=max_body_bytes, read_timeout_s=read_timeout_s)
        config = uvicorn.Config(
            app,
            http="h11",
            ws="none",
            loop="asyncio",
            lifespan="off",
            access_log=False,  # our own access log (no duplicate lines)
            log_config=None,
            server_header=False,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=5,
            limit_concurrency=max_connections,
        )
        return uvicorn.Server(config), sock
    except BaseException:
        sock.close()
        raise


def start_server(
    service: EncryptedInferenceService,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    max_connections: int = 256,
) -> RunningServer:
    """Serve in a background thread; use as ``with start_server(...) as running: running.url``."""
    server, sock = make_server(
        service,
        host,
        port,
        max_body_bytes=max_body_bytes,
        read_timeout_s=read_timeout_s,
        max_connections=max_connections,
    )
    address = sock.getsockname()[:2]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="securetrain-he-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise OSError(f"the HTTP server did not start on {address[0]}:{address[1]}")
        time.sleep(0.01)
    return RunningServer(server, thread, (str(address[0]), int(address[1])))


def serve(
    service: EncryptedInferenceService,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    max_connections: int = 256,
) -> None:
    """Serve until interrupted (blocking)."""
    server, sock = make_server(
        service,
        host,
        port,
        max_body_bytes=max_body_bytes,
        read_timeout_s=read_timeout_s,
        max_connections=max_connections,
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def build_service_from_run(
    run_dir: str | os.PathLike[str],
    modes: Sequence[str] = ("throughput", "latency"),
    *,
    calibration_samples: int = 512,
    max_contexts: int | None = None,
    service_options: Mapping[str, Any] | None = None,
    model: str | None = None,
    data: str | None = None,
    **plan_options: Any,
) -> EncryptedInferenceService:
    """A service for the model of a run directory, calibrated on its training split
    (``service_options``: keyword arguments of :class:`EncryptedInferenceService`, e.g. quotas;
    ``max_contexts``: the same as ``service_options={"max_contexts": ...}``; ``model`` / ``data``:
    the run's import-path specs, passed again to allow importing them, see
    :class:`securetrain.rundir.RunDir`)."""
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
    options = dict(service_options or {})
    if max_contexts is not None:
        options["max_contexts"] = max_contexts
    return EncryptedInferenceService(models, **options)


__getattr__ = deprecated_aliases(__name__, {"service_from_run": "build_service_from_run"})

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_READ_TIMEOUT_S",
    "MIN_UPLOAD_BYTES_PER_S",
    "EncryptedInferenceService",
    "PayloadTooLarge",
    "RemoteClient",
    "RunningServer",
    "UnknownContextError",
    "bind_socket",
    "build_service_from_run",
    "make_app",
    "make_server",
    "serve",
    "start_server",
]
