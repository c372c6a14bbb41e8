"""SEAL's serialised CKKS ciphertexts, read into numpy and written back, without SEAL.

A TenSEAL CKKS vector serialises as a small protobuf message (``CKKSVectorProto``: the number
of values, SEAL's serialised ciphertext, the scale). SEAL's serialisation is a 16-byte header
(magic ``0xA15E``, header size, version, compression mode, total size) and the ciphertext's
members: ``parms_id`` (4 words), the NTT flag, ``size``, ``N``, the number of primes, the
scale, a correction factor, then the residues as a nested serialised array (``size x L x N``
64-bit words). The body may be compressed (zstd or zlib).

:func:`read_vector` parses and checks a serialised vector (every residue below its prime,
sizes bounded before anything is decompressed) and returns a :class:`RawCiphertext`;
:func:`vector_blob` writes one back, uncompressed, in the same format, so TenSEAL and SEAL load
it like any other. Ciphertexts in SEAL's *seeded* form (the second polynomial replaced by the
seed of the generator that made it, as symmetric encryption saves them) cannot be expanded
here: :class:`SeededCiphertext` is raised, and the caller loads them through SEAL.

Example:
    >>> import numpy as np, tenseal as ts
    >>> ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[40, 30, 40])
    >>> ctx.global_scale = 2**30
    >>> raw = read_vector(ts.ckks_vector(ctx, [1.5, -2.0]).serialize())
    >>> raw.data.shape, raw.values, raw.scale == 2**30
    ((2, 2, 8192), 2, True)
    >>> back = ts.ckks_vector_from(ctx, vector_blob(raw))
    >>> [round(v, 3) for v in back.decrypt()]
    [1.5, -2.0]
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from securetrain.encrypted.errors import WireFormatError
from securetrain.encrypted.keys import _read_varint
from securetrain.encrypted.keys import _varint as _write_varint

SEAL_MAGIC = 0xA15E
_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compression, reserved, total size
_MEMBERS = struct.Struct("<4QBQQQdQ")  # parms_id, NTT flag, size, N, primes, scale, correction factor
_COMPR_NONE, _COMPR_ZLIB, _COMPR_ZSTD = 0, 1, 2
MAX_POLYS = 3
MAX_DEGREE = 1 << 16
MAX_PRIMES = 64


def _array_bytes(words: int) -> int:
    """Bytes of SEAL's serialised array of ``words`` 64-bit words (its header, count and words)."""
    return _HEADER.size + 8 + 8 * words


MAX_CIPHERTEXT_BYTES = _MEMBERS.size + _array_bytes(MAX_POLYS * MAX_PRIMES * MAX_DEGREE)


class SeededCiphertext(WireFormatError):
    """The ciphertext is in SEAL's seeded form: only SEAL can expand it."""


@dataclass
class RawCiphertext:
    """One CKKS ciphertext's members and residues (``data``: ``size x L x N`` unsigned words)."""

    parms_id: tuple[int, int, int, int]
    scale: float
    data: np.ndarray
    values: int  # how many slots the TenSEAL vector uses
    version: tuple[int, int] = (4, 1)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    return _read_varint(data, pos, WireFormatError)


def vector_proto(seal: bytes, values: int, scale: float) -> bytes:
    """A serialised TenSEAL ``CKKSVectorProto``: ``values`` slots used, SEAL's serialised
    ciphertext ``seal``, the scale."""
    size_field = _write_varint(int(values))
    return b"".join(
        [
            b"\x0a",  # field 1 (size), packed
            _write_varint(len(size_field)),
            size_field,
            b"\x12",  # field 2 (ciphertext), bytes
            _write_varint(len(seal)),
            seal,
            b"\x19",  # field 3 (scale), double
            struct.pack("<d", float(scale)),
        ]
    )


def _proto_fields(blob: bytes) -> tuple[int, memoryview, float]:
    """``(values, SEAL bytes, scale)`` of a ``CKKSVectorProto`` holding exactly one ciphertext."""
    view = memoryview(blob)
    values: list[int] = []
    seal: list[memoryview] = []
    scale: float | None = None
    pos = 0
    while pos < len(view):
        tag, pos = _varint(blob, pos)
        number, wire = tag >> 3, tag & 7
        if number == 1 and wire == 0:
            v, pos = _varint(blob, pos)
            values.append(v)
        elif number == 1 and wire == 2:
            length, pos = _varint(blob, pos)
            end = pos + length
            while pos < end:
                v, pos = _varint(blob, pos)
                values.append(v)
            if pos != end:
                raise WireFormatError("a ciphertext blob is not a serialised CKKS vector (bad size field)")
        elif number == 2 and wire == 2:
            length, pos = _varint(blob, pos)
            seal.append(view[pos : pos + length])
            pos += length
        elif number == 3 and wire == 1:
            if pos + 8 > len(view):
                break
            (scale,) = struct.unpack_from("<d", view, pos)
            pos += 8
        else:
            raise WireFormatError(f"a ciphertext blob is not a serialised CKKS vector (field {number}, type {wire})")
    if pos != len(view) or scale is None:
        raise WireFormatError("a ciphertext blob is not a serialised CKKS vector (truncated)")
    if len(seal) != 1 or len(values) != 1:
        raise WireFormatError(f"a ciphertext blob must hold one ciphertext, it holds {len(seal)}")
    return values[0], seal[0], float(scale)


def _decompress(mode: int, body: memoryview, limit: int) -> bytes:
    if mode == _COMPR_NONE:
        if len(body) > limit:
            raise WireFormatError(f"a ciphertext of {len(body)} bytes exceeds the {limit} its parameters allow")
        return bytes(body)
    if mode == _COMPR_ZSTD:
        import zstandard

        try:
            declared = zstandard.frame_content_size(body)
            if 0 <= declared <= limit:  # the frame states its size: one call, that much allocated
                out = zstandard.ZstdDecompressor().decompress(body, max_output_size=limit)
            else:  # unknown or too large: read at most one byte past the limit
                with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)) as reader:
                    out = reader.read(limit + 1)
        except zstandard.ZstdError as exc:
            raise WireFormatError(f"a ciphertext's zstd body does not decompress ({exc})") from exc
        if len(out) > limit:
            raise WireFormatError(f"a ciphertext's zstd body inflates beyond the {limit} bytes a ciphertext can hold")
        return out
    if mode == _COMPR_ZLIB:
        d = zlib.decompressobj()
        try:
            out = d.decompress(body, limit)
        except zlib.error as exc:
            raise WireFormatError(f"a ciphertext's zlib body does not decompress ({exc})") from exc
        if d.unconsumed_tail:
            raise WireFormatError(f"a ciphertext decompresses to more than the {limit} bytes its parameters allow")
        return out
    raise WireFormatError(f"a ciphertext uses an unknown compression mode ({mode})")


def ciphertext_bytes(size: int, primes: int, degree: int) -> int:
    """Bytes of an uncompressed serialised ciphertext body of this shape (members and residues)."""
    return _MEMBERS.size + _array_bytes(size * primes * degree)


def read_seal_ciphertext(
    seal: bytes | memoryview, *, max_bytes: int = MAX_CIPHERTEXT_BYTES
) -> tuple[tuple[int, int, int, int], float, np.ndarray, tuple[int, int]]:
    """``(parms_id, scale, residues, version)`` of SEAL's serialised ciphertext ``seal``."""
    view = memoryview(seal)
    if len(view) < _HEADER.size:
        raise WireFormatError("a ciphertext is too short to be SEAL's serialisation")
    magic, hsize, major, minor, mode, _, total = _HEADER.unpack_from(view, 0)
    if magic != SEAL_MAGIC or hsize != _HEADER.size or total != len(view):
        raise WireFormatError("a ciphertext is not SEAL's serialisation (bad header)")
    raw = _decompress(mode, view[_HEADER.size :], max_bytes)
    if len(raw) < _MEMBERS.size + _array_bytes(0):
        raise WireFormatError("a ciphertext's body is truncated")
    p0, p1, p2, p3, ntt, size, degree, primes, scale, _ = _MEMBERS.unpack_from(raw, 0)
    if ntt != 1:
        raise WireFormatError("a CKKS ciphertext must be in NTT form")
    if not 2 <= size <= MAX_POLYS or not 1 <= primes <= MAX_PRIMES or degree not in {1 << k for k in range(1, 17)}:
        raise WireFormatError(
            f"a ciphertext has an unsupported shape ({size} polynomials, {primes} primes, N={degree})"
        )
    if not np.isfinite(scale) or scale <= 0:
        raise WireFormatError(f"a ciphertext has an invalid scale {scale!r}")
    pos = _MEMBERS.size
    magic2, hsize2, _, _, mode2, _, total2 = _HEADER.unpack_from(raw, pos)
    count = size * primes * degree
    if magic2 == SEAL_MAGIC and total2 == _array_bytes(count // size) and len(raw) > pos + total2:
        # SEAL's seeded form: the first polynomial, then the seed of the second
        raise SeededCiphertext("the ciphertext is in SEAL's seeded form")
    if magic2 != SEAL_MAGIC or hsize2 != _HEADER.size or mode2 != _COMPR_NONE or total2 != _array_bytes(count):
        raise WireFormatError("a ciphertext's residues are not SEAL's serialised array")
    (n_words,) = struct.unpack_from("<Q", raw, pos + _HEADER.size)
    start = pos + _array_bytes(0)
    if n_words != count or len(raw) != pos + _array_bytes(count):
        raise WireFormatError("a ciphertext's residue count does not match its shape")
    data = np.frombuffer(raw, dtype="<u8", count=count, offset=start).reshape(size, primes, degree).copy()
    return (p0, p1, p2, p3), float(scale), data, (major, minor)


def read_vector(blob: bytes, *, max_bytes: int = MAX_CIPHERTEXT_BYTES) -> RawCiphertext:
    """The one ciphertext of a serialised TenSEAL CKKS vector (residues not yet checked against
    the primes: see :func:`check_residues`); ``max_bytes`` caps its decompressed size (default:
    the largest ciphertext this module reads)."""
    values, seal, proto_scale = _proto_fields(blob)
    parms_id, scale, data, version = read_seal_ciphertext(seal, max_bytes=max_bytes)
    if not np.isclose(scale, proto_scale, rtol=1e-12):
        raise WireFormatError("a ciphertext blob's scale disagrees with its ciphertext's")
    return RawCiphertext(parms_id=parms_id, scale=scale, data=data, values=int(values), version=version)


def check_residues(data: np.ndarray, primes: list[int]) -> None:
    """Raise unless every residue in ``data`` (``size x L x N``) is below its prime."""
    if data.shape[1] != len(primes):
        raise WireFormatError(f"a ciphertext has {data.shape[1]} primes, its level has {len(primes)}")
    for level, q in enumerate(primes):
        if int(data[:, level, :].max()) >= q:
            raise WireFormatError(
                "a ciphertext holds a residue above its prime: it was not made under these parameters"
            )


def seal_ciphertext_bytes(raw: RawCiphertext) -> bytes:
    """SEAL's serialisation of ``raw``, uncompressed."""
    size, primes, degree = raw.data.shape
    count = size * primes * degree
    array = _HEADER.pack(SEAL_MAGIC, _HEADER.size, raw.version[0], raw.version[1], _COMPR_NONE, 0, _array_bytes(count))
    members = _MEMBERS.pack(*raw.parms_id, 1, size, degree, primes, raw.scale, 1)
    body = b"".join([members, array, struct.pack("<Q", count), np.ascontiguousarray(raw.data, dtype="<u8").tobytes()])
    head = _HEADER.pack(
        SEAL_MAGIC, _HEADER.size, raw.version[0], raw.version[1], _COMPR_NONE, 0, _HEADER.size + len(body)
    )
    return head + body


def vector_blob(raw: RawCiphertext) -> bytes:
    """A serialised TenSEAL CKKS vector holding ``raw`` (uncompressed)."""
    return vector_proto(seal_ciphertext_bytes(raw), raw.values, raw.scale)


__all__ = [
    "RawCiphertext",
    "SeededCiphertext",
    "check_residues",
    "ciphertext_bytes",
    "read_seal_ciphertext",
    "read_vector",
    "seal_ciphertext_bytes",
    "vector_blob",
    "vector_proto",
]
