"""Exact arithmetic on the residues of CKKS ciphertexts, in numpy.

A CKKS ciphertext in SEAL is ``size`` polynomials, each stored as its residues modulo the
primes ``q_l`` of its level, in NTT (evaluation) form: ``size x L x N`` unsigned 64-bit words.
In that form every linear map and every product of ciphertexts is computed coefficient by
coefficient, independently per prime:

- a weighted sum of ciphertexts with integer weights ``W`` is ``W @ X mod q_l`` on each
  prime's residues (:func:`mod_matmul`): a matrix product, which BLAS computes exactly in
  float64 once the residues are split into limbs small enough that no partial sum reaches
  2^53 (:class:`LimbPlan`);
- the square of ``(c0, c1)`` is ``(c0^2, 2 c0 c1, c1^2)`` coefficient by coefficient
  (:func:`square`), with products reduced by :func:`mulmod`;
- adding a constant ``c`` to every slot adds the integer ``round(c * scale)`` to every NTT
  coefficient of ``c0`` (the NTT of a constant polynomial is that constant at every point).

Nothing here rescales or relinearises: those need the number-theoretic transform and the
evaluation keys, and stay with SEAL's evaluator.

Example:
    >>> import numpy as np
    >>> q = (1 << 29) - 3 * (1 << 14) + 1        # any odd modulus below 2^51
    >>> rng = np.random.default_rng(0)
    >>> x = rng.integers(0, q, size=(5, 7), dtype=np.uint64)
    >>> w = rng.integers(-1000, 1000, size=(3, 5))
    >>> got = mod_matmul(w, x, q, LimbPlan.for_modulus(q, int(np.abs(w).max()), 5))
    >>> want = [[sum(int(w[i, k]) * int(x[k, j]) for k in range(5)) % q for j in range(7)] for i in range(3)]
    >>> bool((got == np.array(want, dtype=np.uint64)).all())
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from securetrain.errors import EncryptionError

MAX_MODULUS_BITS = 51  # mulmod's float quotient is exact to within 1 below 2^52
_EXACT = 52  # bits a float64 partial sum may use (2^53 is the first integer it cannot step past)


def check_modulus(q: int) -> None:
    """Raise unless ``q`` is a modulus this module computes with exactly."""
    if not 2 < int(q) < (1 << MAX_MODULUS_BITS):
        raise EncryptionError(f"residue arithmetic in numpy needs primes below 2^{MAX_MODULUS_BITS}, got {q}")


def mulmod(a: np.ndarray, b: np.ndarray | int, q: int) -> np.ndarray:
    """``a * b mod q`` elementwise, for unsigned residues ``a, b < q < 2^51``.

    The quotient ``floor(a b / q)`` is estimated in float64 (off by at most one), the product
    and the quotient times ``q`` are formed exactly modulo 2^64, and the difference, which lies
    in ``(-q, 2q)``, is brought into ``[0, q)``.
    """
    b_arr = np.asarray(b, dtype=np.uint64)
    return _mulmod_known(a, a.astype(np.float64), b_arr, b_arr.astype(np.float64), q)


def _fix_signed(r: np.ndarray, q: int) -> np.ndarray:
    """``r`` (int64 in ``(-q, 2q)``) brought into ``[0, q)`` in place, without branches."""
    qq = np.int64(q)
    r += (r >> np.int64(63)) & qq  # negative: add q
    r -= qq
    r += (r >> np.int64(63)) & qq  # was below q: add it back
    return r


def reduce_float(v: np.ndarray, q: int) -> np.ndarray:
    """``v mod q`` in place for float64 integers with ``|v| + q <= 2^53`` (so that the quotient
    times ``q`` is exact); the result in ``[0, q)``."""
    k = v * (1.0 / float(q))
    np.floor(k, out=k)
    k *= float(q)
    v -= k  # now in (-q, 2q): the quotient's estimate is off by at most one
    np.add(v, float(q), out=v, where=v < 0)
    np.subtract(v, float(q), out=v, where=v >= float(q))
    return v


def addmod(a: np.ndarray, b: np.ndarray, q: int) -> np.ndarray:
    """``(a + b) mod q`` for residues ``a, b < q`` (in place into ``a``)."""
    a += b
    a -= np.where(a >= np.uint64(q), np.uint64(q), np.uint64(0))
    return a


@dataclass(frozen=True)
class LimbPlan:
    """How to split residues so that ``W @ X`` is exact in float64.

    ``X`` (residues below ``q``) is split into ``limbs`` pieces of ``bits`` bits; the integer
    weights stay whole (their magnitude below ``2^weight_bits``). Every partial sum of
    ``terms`` products then stays below ``2^52``.
    """

    bits: int
    limbs: int

    @classmethod
    def for_modulus(cls, q: int, max_weight: int, terms: int) -> LimbPlan:
        """The widest limbs for residues below ``q``, weights up to ``max_weight`` in magnitude and
        sums of up to ``terms`` products."""
        check_modulus(q)
        weight_bits = max(int(max_weight), 1).bit_length()
        bits = _EXACT - weight_bits - max(int(terms), 1).bit_length()
        if bits < 8:
            raise EncryptionError(
                f"weights of {weight_bits} bits summed over {terms} terms leave no room for exact products in float64"
            )
        q_bits = int(q).bit_length()
        bits = min(bits, q_bits)
        limbs = -(-q_bits // bits)
        return cls(bits=-(-q_bits // limbs), limbs=limbs)


def split_limbs(x: np.ndarray, limbs: LimbPlan) -> list[np.ndarray]:
    """Residues ``x`` (unsigned) as ``limbs.limbs`` float64 pieces of ``limbs.bits`` bits, low first."""
    mask = np.uint64((1 << limbs.bits) - 1)
    out = []
    for i in range(limbs.limbs):
        piece = x >> np.uint64(i * limbs.bits) if i else x
        if i + 1 < limbs.limbs:
            piece = piece & mask
        out.append(piece.astype(np.float64))
    return out


def join_limbs(parts: list[np.ndarray], q: int, limbs: LimbPlan) -> np.ndarray:
    """``sum_i parts[i] * 2^(i bits) mod q`` for float64 integer partial sums ``|parts[i]| < 2^52``
    (consumed), as unsigned residues."""
    if int(q).bit_length() + limbs.bits < _EXACT - 1:  # Horner's rule stays exact in float64
        acc = reduce_float(parts[-1], q)
        for part in reversed(parts[:-1]):
            # acc * 2^bits + part stays below 2^(bits(q) + bits) + 2^52 < 2^53 - q: exact
            acc *= float(1 << limbs.bits)
            acc += part
            reduce_float(acc, q)
        return acc.astype(np.uint64)
    out: np.ndarray | None = None
    factor = 1
    for part in parts:
        term = reduce_float(part, q).astype(np.uint64)
        if factor != 1:
            term = mulmod(term, factor, q)
        out = term if out is None else addmod(out, term, q)
        factor = (factor << limbs.bits) % q
    assert out is not None
    return out


def mod_matmul(w: np.ndarray, x: np.ndarray, q: int, limbs: LimbPlan) -> np.ndarray:
    """``w @ x mod q``: integer weights ``w`` (``M x K``, signed) times residues ``x`` (``K x C``,
    unsigned, below ``q``), exactly; the result is ``M x C`` residues below ``q``.

    ``limbs`` must come from :meth:`LimbPlan.for_modulus` for ``q``, ``max |w|`` and ``K``.
    """
    k = w.shape[1]
    if x.shape[0] != k:
        raise EncryptionError(f"weights of width {k} cannot multiply {x.shape[0]} ciphertexts")
    wf = np.ascontiguousarray(w, dtype=np.float64)
    return join_limbs([wf @ piece for piece in split_limbs(x, limbs)], q, limbs)


def square(c0: np.ndarray, c1: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three polynomials of ``(c0 + c1 s)^2`` before relinearisation, residues modulo ``q``:
    ``(c0^2, 2 c0 c1, c1^2)``."""
    f0, f1 = c0.astype(np.float64), c1.astype(np.float64)
    cross = _mulmod_known(c0, f0, c1, f1, q)
    return _mulmod_known(c0, f0, c0, f0, q), addmod(cross, cross, q), _mulmod_known(c1, f1, c1, f1, q)


def _mulmod_known(a: np.ndarray, af: np.ndarray, b: np.ndarray, bf: np.ndarray, q: int) -> np.ndarray:
    """:func:`mulmod` for residues whose float64 copies ``af, bf`` are already at hand."""
    check_modulus(q)
    est = af * bf
    est *= 1.0 / float(q)
    np.floor(est, out=est)
    quotient = est.astype(np.uint64)
    quotient *= np.uint64(q)
    r = a * b
    r -= quotient
    return _fix_signed(r.view(np.int64), q).view(np.uint64)


def constant_residue(value: float, scale: float, q: int) -> int:
    """``round(value * scale) mod q``: the NTT coefficients of the constant ``value`` at ``scale``."""
    return int(round(float(value) * float(scale))) % int(q)


__all__ = [
    "LimbPlan",
    "addmod",
    "check_modulus",
    "constant_residue",
    "join_limbs",
    "mod_matmul",
    "mulmod",
    "reduce_float",
    "split_limbs",
    "square",
]
