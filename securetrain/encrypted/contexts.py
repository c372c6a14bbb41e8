"""Contexts that belong to their clients: tokens, quotas and idle expiry, never cross-client eviction.

A client is whoever holds a secret token. Registering a context without a token makes a new
client and returns its token; registering with a token adds the context to that client, within
its quota (``max_contexts_per_client`` contexts, ``max_bytes_per_client`` bytes of public
contexts). Only the token that registered a context can use or delete it. A context unused for
``ttl_s`` seconds expires, and a client without contexts is forgotten (its token stops working;
:class:`~securetrain.encrypted.http.RemoteClient` then registers again). When the whole store is
full (``max_contexts`` contexts or ``max_total_bytes`` bytes) a registration is refused with
:class:`ServiceFullError`: nobody's live context is evicted for somebody else's.

Only the SHA-256 of a token is kept; tokens are compared through that digest.

Example:
    >>> store = ContextStore(max_contexts_per_client=1)
    >>> first = store.add("ctx-a", "value a", nbytes=10)
    >>> store.get(first.token, "ctx-a")
    'value a'
    >>> other = store.add("ctx-b", "value b", nbytes=10)  # a new client
    >>> store.get(other.token, "ctx-a")
    Traceback (most recent call last):
    ...
    securetrain.encrypted.errors.UnknownContextError: no context ctx-a... is registered under this token ...
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from securetrain.encrypted.errors import (
    AuthenticationError,
    QuotaExceededError,
    ServiceFullError,
    UnknownContextError,
)
from securetrain.errors import ConfigurationError

T = TypeVar("T")

DEFAULT_TTL_S = 3600.0


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Registration:
    """What a client gets back when it registers a context."""

    context_id: str
    token: str
    expires_in_s: float


@dataclass
class _Entry(Generic[T]):
    value: T
    nbytes: int
    last_used: float


@dataclass
class _Client(Generic[T]):
    contexts: dict[str, _Entry[T]] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.contexts.values())


class ContextStore(Generic[T]):
    """Thread-safe map ``token -> {context id -> value}`` with quotas and idle expiry."""

    def __init__(
        self,
        *,
        max_contexts: int = 64,
        max_total_bytes: int = 4 * 2**30,
        max_contexts_per_client: int = 4,
        max_bytes_per_client: int = 1 * 2**30,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (
            ("max_contexts", max_contexts),
            ("max_total_bytes", max_total_bytes),
            ("max_contexts_per_client", max_contexts_per_client),
            ("max_bytes_per_client", max_bytes_per_client),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive whole number, got {value!r}")
        if not ttl_s > 0:
            raise ConfigurationError(f"ttl_s must be positive (seconds a context may stay unused), got {ttl_s!r}")
        self.max_contexts = max_contexts
        self.max_total_bytes = max_total_bytes
        self.max_contexts_per_client = max_contexts_per_client
        self.max_bytes_per_client = max_bytes_per_client
        self.ttl_s = float(ttl_s)
        self._clock = clock
        self._clients: dict[str, _Client[T]] = {}
        self._lock = threading.Lock()

    # -- bookkeeping (call with the lock held)
    def _purge(self, now: float) -> None:
        for key in list(self._clients):
            client = self._clients[key]
            for cid in [c for c, e in client.contexts.items() if now - e.last_used > self.ttl_s]:
                del client.contexts[cid]
            if not client.contexts:
                del self._clients[key]

    def _client(self, token: str | None) -> _Client[T]:
        if not token:
            raise AuthenticationError(
                "this endpoint needs the token returned when the context was registered (header "
                "'Authorization: Bearer <token>')"
            )
        client = self._clients.get(_digest(token))
        if client is None:
            raise AuthenticationError(
                "unknown token: it was never issued, or all of its contexts expired after "
                f"{self.ttl_s:g} s unused; register the context again"
            )
        return client

    def _totals(self) -> tuple[int, int]:
        return (
            sum(len(c.contexts) for c in self._clients.values()),
            sum(c.nbytes for c in self._clients.values()),
        )

    # -- public operations
    def add(self, context_id: str, value: T, *, nbytes: int, token: str | None = None) -> Registration:
        """Keep ``value`` under ``context_id`` for the client of ``token`` (a new client if ``None``)."""
        with self._lock:
            now = self._clock()
            self._purge(now)
            if token is None:
                token = secrets.token_urlsafe(32)
                client: _Client[T] = _Client()
                key = _digest(token)
            else:
                client = self._client(token)
                key = _digest(token)
            replacing = client.contexts.get(context_id)
            held = len(client.contexts) - (replacing is not None)
            held_bytes = client.nbytes - (replacing.nbytes if replacing else 0)
            if held + 1 > self.max_contexts_per_client:
                raise QuotaExceededError(
                    f"this client already holds {held} contexts, its quota is {self.max_contexts_per_client}; "
                    "delete one (DELETE /v1/contexts/<id>) or let it expire"
                )
            if held_bytes + nbytes > self.max_bytes_per_client:
                raise QuotaExceededError(
                    f"this client's contexts would take {held_bytes + nbytes} bytes, its quota is "
                    f"{self.max_bytes_per_client}; delete a context or register a smaller one (fewer Galois keys)"
                )
            count, total = self._totals()
            count -= replacing is not None
            total -= replacing.nbytes if replacing else 0
            if count + 1 > self.max_contexts or total + nbytes > self.max_total_bytes:
                raise ServiceFullError(
                    f"the service holds {count} contexts ({total} bytes; limits {self.max_contexts} contexts, "
                    f"{self.max_total_bytes} bytes) and evicts nobody's; retry after contexts expire "
                    f"({self.ttl_s:g} s unused) or ask the operator to raise the limits"
                )
            client.contexts[context_id] = _Entry(value, int(nbytes), now)
            self._clients[key] = client
            return Registration(context_id, token, self.ttl_s)

    def get(self, token: str | None, context_id: str) -> T:
        """The value registered under ``context_id`` by the client of ``token``; marks it used."""
        with self._lock:
            now = self._clock()
            self._purge(now)
            client = self._client(token)
            entry = client.contexts.get(context_id)
            if entry is None:
                raise UnknownContextError(
                    f"no context {context_id[:12]}... is registered under this token (never registered, deleted, "
                    f"or expired after {self.ttl_s:g} s unused); register it again with POST /v1/contexts"
                )
            entry.last_used = now
            return entry.value

    def remove(self, token: str | None, context_id: str) -> None:
        """Delete a context of the client of ``token``."""
        with self._lock:
            self._purge(self._clock())
            client = self._client(token)
            if client.contexts.pop(context_id, None) is None:
                raise UnknownContextError(f"no context {context_id[:12]}... is registered under this token")
            if not client.contexts:
                del self._clients[_digest(str(token))]

    def check_token(self, token: str | None) -> None:
        """Raise :class:`AuthenticationError` unless ``token`` belongs to a client the store holds."""
        with self._lock:
            self._purge(self._clock())
            self._client(token)

    def usage(self) -> dict[str, int]:
        """Counts for monitoring: clients, contexts and bytes held."""
        with self._lock:
            self._purge(self._clock())
            count, total = self._totals()
            return {"clients": len(self._clients), "contexts": count, "bytes": total}


__all__ = ["DEFAULT_TTL_S", "ContextStore", "Registration"]
