"""Rank plans by estimated cost from operation counts, without timing anything.

The planner compares the layouts a packing offers (:attr:`~securetrain.encrypted.packing.LayoutCost.operations`)
with :func:`relative_seconds`; :mod:`securetrain.encrypted.estimate` times the primitives on this
machine for the estimate ``securetrain encrypt`` prints.
"""

from __future__ import annotations

import math

REFERENCE_SECONDS: dict[str, float] = {
    "rotations": 16e-3,
    "squares": 16e-3,
    "input ciphertexts": 20e-3,
    "vector products": 5.5e-3,
    "plain products": 0.55e-3,
    "scalar products": 0.5e-3,
}
"""Seconds per operation at N=8192 with 6 data primes on a 2-core reference machine (SEAL's
key switching for rotations and relinearised squares, encryption and transfer per input
ciphertext, TenSEAL's product by a vector it encodes on the fly, SEAL's product by a
pre-encoded plaintext plus an addition). Only ratios matter: they rank plans."""


def relative_seconds(poly_modulus_degree: int, levels: int, operations: dict[str, int]) -> float:
    """A machine-independent estimate of one request's time from operation counts, for ranking plans:
    :data:`REFERENCE_SECONDS` scaled by ``N log N`` and by the number of primes (squared for key switching).

    Example:
        >>> a = relative_seconds(8192, 6, {"rotations": 10})
        >>> b = relative_seconds(16384, 6, {"rotations": 10})
        >>> round(a, 3), b > 2 * a
        (0.16, True)
    """
    ring = (poly_modulus_degree / 8192) * (math.log2(poly_modulus_degree) / 13)
    primes = max(levels, 1) / 6
    total = 0.0
    for name, count in operations.items():
        per = REFERENCE_SECONDS.get(name)
        if per is None:
            raise KeyError(f"no reference cost for operation {name!r}")
        switching = name in ("rotations", "squares")
        total += count * per * ring * (primes * primes if switching else primes)
    return total


__all__ = ["REFERENCE_SECONDS", "relative_seconds"]
