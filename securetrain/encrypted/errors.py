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


__all__ = ["ContextMismatchError", "PublicContextError", "SecretKeyRequiredError", "WireFormatError"]
