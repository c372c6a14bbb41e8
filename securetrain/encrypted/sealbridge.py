"""Between TenSEAL vectors and SEAL ciphertexts: what a program on ``tenseal.sealapi`` needs.

TenSEAL's :class:`CKKSVector` hides SEAL's evaluator behind operations that rescale after every
product; a program that controls when it rescales works on ``tenseal.sealapi`` ciphertexts
instead. :func:`seal_ciphertext` takes the one ciphertext out of a vector (a copy);
:func:`vector_from_seal` wraps a SEAL ciphertext back into a TenSEAL vector (the
``CKKSVectorProto`` message TenSEAL loads: the size, SEAL's serialised ciphertext, the scale),
so requests and responses keep TenSEAL's format. :class:`SealTools` holds the evaluator, the
encoder and the relinearisation keys of one context.

Example:
    >>> import tenseal as ts
    >>> ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[40, 30, 40])
    >>> ctx.global_scale = 2**30
    >>> ct = seal_ciphertext(ts.ckks_vector(ctx, [1.5, -2.0]))
    >>> [round(v, 3) for v in vector_from_seal(ctx, ct, 2).decrypt()]
    [1.5, -2.0]
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from securetrain.encrypted.sealformat import vector_proto
from securetrain.errors import EncryptionError


def seal_ciphertext(vector: Any) -> Any:
    """The SEAL ciphertext of a TenSEAL CKKS vector holding exactly one (a copy)."""
    cts = vector.ciphertext()
    if len(cts) != 1:
        raise EncryptionError(f"a vector spanning {len(cts)} ciphertexts cannot be evaluated as one")
    return cts[0]


def seal_bytes(ciphertext: Any) -> bytes:
    """SEAL's own serialisation of ``ciphertext`` (a SEAL ciphertext, or the seeded form that
    symmetric encryption returns; the sealapi binding saves only to a path)."""
    fd, path = tempfile.mkstemp(prefix="securetrain-ct-")
    os.close(fd)
    try:
        ciphertext.save(path)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


def vector_bytes(ciphertext: Any, size: int, scale: float) -> bytes:
    """A serialised TenSEAL ``CKKSVectorProto`` holding ``ciphertext`` with ``size`` values."""
    return vector_proto(seal_bytes(ciphertext), size, scale)


def vector_from_seal(context: Any, ciphertext: Any, size: int) -> Any:
    """A TenSEAL CKKS vector of ``size`` values under ``context`` holding ``ciphertext``."""
    import tenseal as ts

    return ts.ckks_vector_from(context, vector_bytes(ciphertext, size, context.global_scale))


class SeededEncryptor:
    """Encrypts with the secret key (symmetric CKKS) and serialises the seeded form: the second
    half of a fresh ciphertext is uniformly random, so SEAL stores the seed of its generator
    instead, and a request is half the size of one encrypted with the public key. The result
    loads as a TenSEAL vector under the public context, like any other.

    Example:
        >>> import tenseal as ts
        >>> ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[40, 30, 40])
        >>> ctx.global_scale = 2**30
        >>> blob = SeededEncryptor(ctx).encrypt([0.25, 4.0])
        >>> len(blob) < 0.6 * len(ts.ckks_vector(ctx, [0.25, 4.0]).serialize())
        True
        >>> [round(v, 3) for v in ts.ckks_vector_from(ctx, blob).decrypt()]
        [0.25, 4.0]
    """

    def __init__(self, context: Any) -> None:
        from tenseal import sealapi

        if not context.has_secret_key():
            raise EncryptionError("symmetric encryption needs the context's secret key (the client's own)")
        self.sealapi = sealapi
        self.scale = float(context.global_scale)
        seal_context = context.seal_context().data
        self.encoder = sealapi.CKKSEncoder(seal_context)
        self.encryptor = sealapi.Encryptor(seal_context, context.secret_key().data)

    def encrypt(self, values: list[float]) -> bytes:
        """A serialised TenSEAL CKKS vector holding ``values``."""
        pt = self.sealapi.Plaintext()
        self.encoder.encode([float(v) for v in values], self.scale, pt)
        return vector_proto(seal_bytes(self.encryptor.encrypt_symmetric(pt)), len(values), self.scale)

    def encrypt_complete(self, values: list[float]) -> bytes:
        """Like :meth:`encrypt`, but both polynomials written out (twice the bytes): the form a
        server reads without SEAL (:mod:`securetrain.encrypted.sealformat`). Secret-key encryption
        keeps the fresh noise ~30 times below a public-key encryption's."""
        pt = self.sealapi.Plaintext()
        self.encoder.encode([float(v) for v in values], self.scale, pt)
        ct = self.sealapi.Ciphertext()
        self.encryptor.encrypt_symmetric(pt, ct)
        return vector_bytes(ct, len(values), self.scale)


class SealTools:
    """SEAL's evaluator, encoder and relinearisation keys for one TenSEAL context."""

    def __init__(self, context: Any) -> None:
        from tenseal import sealapi

        self.sealapi = sealapi
        self.context = context
        self.seal_context = context.seal_context().data
        self.evaluator = sealapi.Evaluator(self.seal_context)
        self.encoder = sealapi.CKKSEncoder(self.seal_context)
        self.relin_keys = context.relin_keys().data if context.has_relin_keys() else None

    def new_ciphertext(self) -> Any:
        return self.sealapi.Ciphertext(self.seal_context)

    def scalar(self, value: float, like: Any, scale: float) -> Any:
        """``value`` encoded at ``scale`` for the level of ciphertext ``like``."""
        pt = self.sealapi.Plaintext()
        self.encoder.encode(float(value), like.parms_id(), float(scale), pt)
        return pt

    def prime(self, ciphertext: Any) -> int:
        """The prime the next rescale of ``ciphertext`` divides by (its level's last)."""
        data = self.seal_context.get_context_data(ciphertext.parms_id())
        return int(data.parms().coeff_modulus()[-1].value())


__all__ = ["SealTools", "SeededEncryptor", "seal_bytes", "seal_ciphertext", "vector_bytes", "vector_from_seal"]
