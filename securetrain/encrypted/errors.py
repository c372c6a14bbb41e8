"""Typed errors of the encrypted-inference package.

All derive from :class:`securetrain.errors.EncryptionError` (itself a ``ValueError``),
so ``except EncryptionError`` catches every one of them.

Example:
    >>> from securetrain.errors import EncryptionError
    >>> issubclass(PublicContextError, EncryptionError)
    True
"""

from __future__ import annotations

from securetrain.errors import EncryptionError


class PublicContextError(EncryptionError):
    """A context handed to a server is unusable: it carries a secret key, is malformed,
    lacks a key the computation needs, or does not match the plan."""


class ContextMismatchError(EncryptionError):
    """Ciphertexts and context (or request and server) do not belong together."""


class SecretKeyRequiredError(EncryptionError):
    """Decryption was attempted with a context that holds no secret key (the server side)."""


class WireFormatError(EncryptionError):
    """Bytes that should be a request, a response or a ciphertext are malformed."""


class ServiceError(EncryptionError):
    """The encrypted-inference service refused a request (the HTTP status is in ``status``)."""

    status = 400


class UnknownContextError(ContextMismatchError, ServiceError):
    """A request names a context that this client's token does not hold (never registered,
    deleted, expired, or registered by another client)."""

    status = 404


class AuthenticationError(ServiceError):
    """A request that needs a client's token came without one, or with a token the service does not know
    (never issued, or its client's last context expired)."""

    status = 401


class QuotaExceededError(ServiceError):
    """A client asked for more contexts or context bytes than its quota allows."""

    status = 429


class ServiceFullError(ServiceError):
    """The service holds as many contexts (or bytes) as it may; no client's context is evicted for another's."""

    status = 503


class PayloadTooLarge(ServiceError):
    """A request body exceeds the server's limit (HTTP 413); the limit in bytes is in ``limit``."""

    status = 413

    def __init__(self, message: str, *, limit: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit


class RequestTimeoutError(ServiceError):
    """A client sent its body too slowly (HTTP 408): the server released the connection."""

    status = 408


__all__ = [
    "AuthenticationError",
    "ContextMismatchError",
    "PayloadTooLarge",
    "PublicContextError",
    "QuotaExceededError",
    "RequestTimeoutError",
    "SecretKeyRequiredError",
    "ServiceError",
    "ServiceFullError",
    "UnknownContextError",
    "WireFormatError",
]
