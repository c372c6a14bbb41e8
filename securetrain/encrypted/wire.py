"""The byte format of requests and responses: a small header, then ciphertexts.

::

    b"STHE" | version (1 byte) | kind (1 byte: 1 request, 2 response)
    | header length (4 bytes, big endian) | header (UTF-8 JSON) | ciphertext blobs

The header names the packing ``mode``, the ``context`` fingerprint (SHA-256 of the public
context bytes the ciphertexts were made under), the ``spec`` fingerprint (model and
plan), the ``groups`` (samples and ciphertext count of each) and the byte ``sizes`` of
the blobs. Nothing is unpickled; every length is checked before it is used.

Example:
    >>> data = encode_message(REQUEST, {"mode": "throughput"}, [b"ab", b"c"])
    >>> header, blobs = decode_message(data, expect_kind=REQUEST)
    >>> header["mode"], blobs
    ('throughput', [b'ab', b'c'])
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

from securetrain.deprecation import deprecated_aliases
from securetrain.encrypted.errors import ContextMismatchError, WireFormatError
from securetrain.encrypted.packing import Group

MAGIC = b"STHE"
VERSION = 1
REQUEST = 1
RESPONSE = 2
MAX_HEADER_BYTES = 1 << 20
MAX_BLOBS = 1 << 20
_PREFIX = struct.Struct(">4sBBI")
CONTENT_TYPE = "application/vnd.securetrain.he"


def context_fingerprint(data: bytes) -> str:
    """SHA-256 hex digest of a serialised (public) context: what binds a request to the context
    its ciphertexts were made under.

    Example:
        >>> context_fingerprint(b"context bytes")[:16]
        'd5e21ccc3f01f168'
    """
    return hashlib.sha256(data).hexdigest()


def spec_fingerprint(spec: dict[str, Any]) -> str:
    """SHA-256 hex digest of a spec's canonical JSON (binds requests to a model and plan)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def encode_message(kind: int, header: dict[str, Any], blobs: list[bytes]) -> bytes:
    """Frame ``header`` and ``blobs`` (the header's ``sizes`` is filled in)."""
    head = dict(header)
    head["sizes"] = [len(b) for b in blobs]
    raw = json.dumps(head, separators=(",", ":")).encode("utf-8")
    if len(raw) > MAX_HEADER_BYTES:
        raise WireFormatError(f"header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}; send fewer groups per request")
    return b"".join([_PREFIX.pack(MAGIC, VERSION, kind, len(raw)), raw, *blobs])


def decode_header(data: bytes, *, expect_kind: int) -> tuple[dict[str, Any], int]:
    """Parse the prefix and header of a framed message: ``(header, offset of the first blob)``."""
    what = "request" if expect_kind == REQUEST else "response"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireFormatError(f"a {what} must be bytes, got {type(data).__name__}")
    view = memoryview(data)
    if len(view) < _PREFIX.size:
        raise WireFormatError(f"{what} is too short ({len(view)} bytes) to be a securetrain HE message")
    magic, version, kind, hlen = _PREFIX.unpack(view[: _PREFIX.size])
    if magic != MAGIC:
        raise WireFormatError(f"not a securetrain HE message (bad magic bytes {bytes(magic)!r})")
    if version != VERSION:
        raise WireFormatError(f"unsupported message version {version}; this library speaks version {VERSION}")
    if kind != expect_kind:
        raise WireFormatError(f"expected a {what}, got message kind {kind}")
    if hlen > MAX_HEADER_BYTES or _PREFIX.size + hlen > len(view):
        raise WireFormatError(f"{what} header length {hlen} is out of range")
    try:
        header = json.loads(bytes(view[_PREFIX.size : _PREFIX.size + hlen]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireFormatError(f"{what} header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise WireFormatError(f"{what} header must be a JSON object")
    sizes = header.get("sizes")
    if (
        not isinstance(sizes, list)
        or len(sizes) > MAX_BLOBS
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)
    ):
        raise WireFormatError(f"{what} header 'sizes' must be a list of positive integers")
    offset = _PREFIX.size + hlen
    if offset + sum(sizes) != len(view):
        raise WireFormatError(
            f"{what} body holds {len(view) - offset} bytes of ciphertexts but the header announces {sum(sizes)}"
        )
    return header, offset


def decode_message(data: bytes, *, expect_kind: int) -> tuple[dict[str, Any], list[bytes]]:
    """Parse a framed message; raise :class:`WireFormatError` on anything malformed."""
    header, offset = decode_header(data, expect_kind=expect_kind)
    view = memoryview(data)
    blobs = []
    for s in header["sizes"]:
        blobs.append(bytes(view[offset : offset + s]))
        offset += s
    return header, blobs


def pack_groups(kind: int, header: dict[str, Any], groups: list[Group]) -> bytes:
    """Serialise groups of CKKS vectors into one message."""
    blobs: list[bytes] = []
    desc = []
    for g in groups:
        desc.append([int(g.samples), len(g.vectors)])
        blobs.extend(v.serialize() for v in g.vectors)
    return encode_message(kind, {**header, "groups": desc}, blobs)


def unpack_groups(data: bytes, context: Any, *, expect_kind: int) -> tuple[dict[str, Any], list[Group]]:
    """Parse a message and load its ciphertexts under ``context``."""
    import tenseal as ts

    header, blobs = decode_message(data, expect_kind=expect_kind)
    desc = header.get("groups")
    if (
        not isinstance(desc, list)
        or not all(
            isinstance(d, list)
            and len(d) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in d)
            for d in desc
        )
        or sum(d[1] for d in desc) != len(blobs)
    ):
        raise WireFormatError("header 'groups' must list [samples, ciphertexts] pairs matching the blobs")
    groups = []
    it = iter(blobs)
    for samples, count in desc:
        vectors = []
        for _ in range(count):
            blob = next(it)
            try:
                vectors.append(ts.ckks_vector_from(context, blob))
            except RuntimeError as exc:  # SEAL: "ciphertext data is invalid" (other parameters)
                raise ContextMismatchError(
                    f"a ciphertext does not belong to this context's encryption parameters ({exc}); it was made "
                    "under another context"
                ) from exc
            except (ValueError, TypeError) as exc:  # protobuf parse failure
                raise WireFormatError(f"a ciphertext blob is not a serialised CKKS vector ({exc})") from exc
        groups.append(Group(samples, vectors))
    return header, groups


_DEPRECATED = {"fingerprint": "context_fingerprint"}


__getattr__ = deprecated_aliases(__name__, _DEPRECATED)

__all__ = [
    "CONTENT_TYPE",
    "MAGIC",
    "REQUEST",
    "RESPONSE",
    "VERSION",
    "context_fingerprint",
    "decode_header",
    "decode_message",
    "encode_message",
    "pack_groups",
    "spec_fingerprint",
    "unpack_groups",
]
