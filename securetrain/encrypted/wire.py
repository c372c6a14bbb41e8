"""The byte format of requests and responses: a small header, then ciphertexts.

::

    b"STHE" | version (1 byte) | kind (1 byte: 1 request, 2 response)
    | header length (4 bytes, big endian) | header (UTF-8 JSON) | ciphertext blobs

A *streamed* request (kind 3) carries one chunk of the throughput packing without announcing
its size: the same prefix and header (``samples`` and ``features`` instead of ``groups`` and
``sizes``), then one frame per input feature, each a 4-byte big-endian length and a ciphertext
blob. :class:`StreamParser` reads it piece by piece, so neither side holds the whole body.

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
STREAM = 3
MAX_FRAME_BYTES = 64 << 20
MAX_HEADER_BYTES = 1 << 20
MAX_BLOBS = 1 << 20
_PREFIX = struct.Struct(">4sBBI")
_FRAME = struct.Struct(">I")
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


def encode_stream_head(header: dict[str, Any]) -> bytes:
    """The prefix and header of a streamed request; frames (:func:`encode_frame`) follow."""
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    if len(raw) > MAX_HEADER_BYTES:
        raise WireFormatError(f"header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}")
    return _PREFIX.pack(MAGIC, VERSION, STREAM, len(raw)) + raw


def encode_frame(blob: bytes) -> bytes:
    """One frame of a streamed request: the blob's length (4 bytes, big endian), then the blob."""
    if not 0 < len(blob) <= MAX_FRAME_BYTES:
        raise WireFormatError(f"a frame holds 1 to {MAX_FRAME_BYTES} bytes, got {len(blob)}")
    return _FRAME.pack(len(blob)) + blob


def _check_prefix(magic: bytes, version: int) -> None:
    """Raise unless a message's prefix has our magic bytes and version."""
    if magic != MAGIC:
        raise WireFormatError(f"not a securetrain HE message (bad magic bytes {bytes(magic)!r})")
    if version != VERSION:
        raise WireFormatError(f"unsupported message version {version}; this library speaks version {VERSION}")


class StreamParser:
    """Incremental reader of a streamed request: :meth:`feed` bytes as they arrive, get back the
    header (once) and every complete frame's blob; only an incomplete frame is buffered.

    Example:
        >>> data = encode_stream_head({"samples": 2, "features": 2}) + encode_frame(b"ab") + encode_frame(b"c")
        >>> parser = StreamParser()
        >>> parser.feed(data[:9]), parser.header
        ([], None)
        >>> parser.feed(data[9:]), parser.header["features"], parser.frames
        ([b'ab', b'c'], 2, 2)
    """

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.header: dict[str, Any] | None = None
        self.frames = 0
        self._max_frame = max_frame_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        blobs: list[bytes] = []
        while True:
            if self.header is None:
                if len(self._buf) < _PREFIX.size:
                    return blobs
                magic, version, kind, hlen = _PREFIX.unpack(bytes(self._buf[: _PREFIX.size]))
                _check_prefix(magic, version)
                if kind != STREAM:
                    raise WireFormatError(f"expected a streamed request, got message kind {kind}")
                if hlen > MAX_HEADER_BYTES:
                    raise WireFormatError(f"streamed request header length {hlen} is out of range")
                if len(self._buf) < _PREFIX.size + hlen:
                    return blobs
                try:
                    header = json.loads(bytes(self._buf[_PREFIX.size : _PREFIX.size + hlen]).decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise WireFormatError(f"streamed request header is not valid JSON ({exc})") from exc
                if not isinstance(header, dict):
                    raise WireFormatError("streamed request header must be a JSON object")
                self.header = header
                del self._buf[: _PREFIX.size + hlen]
                continue
            if len(self._buf) < _FRAME.size:
                return blobs
            (size,) = _FRAME.unpack(bytes(self._buf[: _FRAME.size]))
            if not 0 < size <= self._max_frame:
                raise WireFormatError(f"a frame announces {size} bytes; frames hold 1 to {self._max_frame}")
            if len(self._buf) < _FRAME.size + size:
                return blobs
            blobs.append(bytes(self._buf[_FRAME.size : _FRAME.size + size]))
            del self._buf[: _FRAME.size + size]
            self.frames += 1

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame (or header) held."""
        return len(self._buf)


def load_vector(blob: bytes, context: Any) -> Any:
    """A ciphertext blob loaded as a TenSEAL CKKS vector under ``context`` (typed errors)."""
    import tenseal as ts

    try:
        return ts.ckks_vector_from(context, blob)
    except RuntimeError as exc:  # SEAL: "ciphertext data is invalid" (other parameters)
        raise ContextMismatchError(
            f"a ciphertext does not belong to this context's encryption parameters ({exc}); it was made "
            "under another context"
        ) from exc
    except (ValueError, TypeError) as exc:  # protobuf parse failure
        raise WireFormatError(f"a ciphertext blob is not a serialised CKKS vector ({exc})") from exc


def decode_header(data: bytes, *, expect_kind: int) -> tuple[dict[str, Any], int]:
    """Parse the prefix and header of a framed message: ``(header, offset of the first blob)``."""
    what = "request" if expect_kind == REQUEST else "response"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireFormatError(f"a {what} must be bytes, got {type(data).__name__}")
    view = memoryview(data)
    if len(view) < _PREFIX.size:
        raise WireFormatError(f"{what} is too short ({len(view)} bytes) to be a securetrain HE message")
    magic, version, kind, hlen = _PREFIX.unpack(view[: _PREFIX.size])
    _check_prefix(magic, version)
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
        groups.append(Group(samples, [load_vector(next(it), context) for _ in range(count)]))
    return header, groups


_DEPRECATED = {"fingerprint": "context_fingerprint"}


__getattr__ = deprecated_aliases(__name__, _DEPRECATED)

__all__ = [
    "CONTENT_TYPE",
    "MAGIC",
    "MAX_FRAME_BYTES",
    "REQUEST",
    "RESPONSE",
    "STREAM",
    "VERSION",
    "StreamParser",
    "context_fingerprint",
    "decode_header",
    "decode_message",
    "encode_frame",
    "encode_message",
    "encode_stream_head",
    "load_vector",
    "pack_groups",
    "spec_fingerprint",
    "unpack_groups",
]
