"""Galois keys for exactly the rotation steps a program uses.

TenSEAL's ``context.generate_galois_keys()`` makes a key for every power-of-two step in both
directions (about 2 log2(N) keys: 60-120 MB of public context at N=8192-16384). A program that
rotates by a few known steps needs only those. TenSEAL's Python API cannot make such a set, so
the keys are made with SEAL's own key generator (``tenseal.sealapi.KeyGenerator``) and placed in
the ``galois_keys`` field of the serialised public context (TenSEAL's protobuf message
``TenSEALContextProto.public_context``), which TenSEAL loads like any other.

SEAL rotates by a step whose key is missing by composing the steps of its non-adjacent form
(:func:`naf`); :func:`keys_for_rotations` returns the steps whose keys make every rotation in a
list possible, and :func:`galois_element` is SEAL's element of a step, to check a context.

Example:
    >>> naf(7)
    [-1, 8]
    >>> sorted(keys_for_rotations([3, 5, 6], direct=False))
    [-2, -1, 1, 4, 8]
    >>> galois_element(1, 8192)
    3
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from typing import Any

from securetrain.encrypted.errors import PublicContextError


def naf(value: int) -> list[int]:
    """SEAL's non-adjacent form of a rotation step: the power-of-two steps it is composed of."""
    sign = -1 if value < 0 else 1
    value = abs(int(value))
    out = []
    i = 0
    while value:
        z = 2 - (value & 3) if value & 1 else 0
        value = (value - z) >> 1
        if z:
            out.append(sign * z * (1 << i))
        i += 1
    return out


def keys_for_rotations(steps: Iterable[int], *, direct: bool = True) -> set[int]:
    """The key steps that make rotating by every step in ``steps`` possible: the steps themselves
    (``direct``), or the terms of their non-adjacent forms (fewer keys when the steps are many)."""
    out: set[int] = set()
    for s in steps:
        if s == 0:
            continue
        if direct:
            out.add(int(s))
        else:
            out.update(naf(int(s)))
    return out


def galois_element(step: int, poly_modulus_degree: int) -> int:
    """SEAL's Galois element for rotating the slots by ``step`` (left when positive)."""
    n = int(poly_modulus_degree)
    if step == 0:
        return 2 * n - 1
    if abs(step) >= n // 2:
        raise ValueError(f"rotation step {step} is out of range for N={n}")
    s = n // 2 - abs(step) if step < 0 else step
    return pow(3, s, 2 * n)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(data: bytes, pos: int, error: type[Exception] = PublicContextError) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise error("malformed serialised message (bad varint)")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, bytes]]:
    """Top-level protobuf fields ``(number, wire type, raw encoding incl. tag)``."""
    out = []
    pos = 0
    while pos < len(data):
        start = pos
        tag, pos = _read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _read_varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            pos += length
        else:
            raise PublicContextError(f"malformed serialised context (wire type {wire})")
        if pos > len(data):
            raise PublicContextError("malformed serialised context (truncated)")
        out.append((number, wire, data[start:pos]))
    return out


def _payload(raw: bytes) -> bytes:
    _, pos = _read_varint(raw, 0)
    length, pos = _read_varint(raw, pos)
    return raw[pos : pos + length]


def _with_public_galois_keys(serialized: bytes, galois: bytes) -> bytes:
    """``serialized`` (a TenSEALContextProto) with ``public_context.galois_keys`` (field 2.5) set."""
    out = []
    found = False
    for number, wire, raw in _fields(serialized):
        if number == 2 and wire == 2:
            inner = [r for n, _, r in _fields(_payload(raw)) if n != 5]
            body = b"".join(inner) + bytes([(5 << 3) | 2]) + _varint(len(galois)) + galois
            raw = bytes([(2 << 3) | 2]) + _varint(len(body)) + body
            found = True
        out.append(raw)
    if not found:
        raise PublicContextError("the serialised context has no public part to add Galois keys to")
    return b"".join(out)


def public_context_bytes(context: Any, rotation_steps: Iterable[int] | None) -> bytes:
    """The public part of a private TenSEAL ``context`` (no secret key), with Galois keys for
    ``rotation_steps`` only (``None``: no Galois keys)."""
    from tenseal import sealapi

    base: bytes = context.serialize(
        save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=True
    )
    steps = sorted(set(int(s) for s in rotation_steps or ()) - {0})
    if not steps:
        return base
    n = int(context.seal_context().data.key_context_data().parms().poly_modulus_degree())
    elements = sorted({galois_element(s, n) for s in steps})
    keygen = sealapi.KeyGenerator(context.seal_context().data, context.secret_key().data)
    keys = sealapi.GaloisKeys()
    # by Galois element: the binding's overload for a list of non-negative ints takes elements, not steps
    keygen.create_galois_keys(elements, keys)
    if not all(keys.has_key(e) for e in elements):
        raise PublicContextError("SEAL did not make the requested Galois keys")
    with tempfile.TemporaryDirectory(prefix="securetrain-keys-") as tmp:  # SEAL saves to a path only
        path = os.path.join(tmp, "galois")
        keys.save(path)
        with open(path, "rb") as fh:
            raw = fh.read()
    return _with_public_galois_keys(base, raw)


def check_rotation_keys(context: Any, rotation_steps: Iterable[int], poly_modulus_degree: int) -> None:
    """Raise :class:`PublicContextError` unless ``context`` holds a key for every step in ``rotation_steps``."""
    if not context.has_galois_keys():
        raise PublicContextError("the context has no Galois keys, which this program's rotations need")
    keys = context.galois_keys().data
    missing = [s for s in sorted(set(rotation_steps)) if not keys.has_key(galois_element(s, poly_modulus_degree))]
    if missing:
        raise PublicContextError(
            f"the context lacks Galois keys for rotation steps {missing[:8]}{'...' if len(missing) > 8 else ''}; "
            "build the client from the server's spec (its layout lists the steps)"
        )


__all__ = [
    "check_rotation_keys",
    "galois_element",
    "keys_for_rotations",
    "naf",
    "public_context_bytes",
]
