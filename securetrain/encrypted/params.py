"""CKKS parameters: :class:`EncryptionPlan`, the HE-standard caps and SEAL's primes.

A plan is pure data: the ring, the modulus chain, the scale and what they were derived
from, with a JSON round trip and a self-check against the 128-bit security caps. It looks
nothing up; the planner (:func:`securetrain.encrypted.planner.plan`) makes plans, and the
packing named by :attr:`EncryptionPlan.mode` checks its own variant where the plan is used
(:meth:`securetrain.encrypted.packing.Packing.check_plan`).

Example:
    >>> p = EncryptionPlan(mode="throughput", poly_modulus_degree=8192, coeff_mod_bit_sizes=(36, 30, 30, 30, 36),
    ...                    scale_bits=30, depth=3, int_bits=6, value_bound=10.0, estimated_error=1e-3,
    ...                    galois_keys=False, variant="batch")
    >>> p.slots, p.total_bits, p.max_bits
    (4096, 162, 218)
    >>> EncryptionPlan.from_dict(p.to_dict()) == p
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from securetrain.errors import EncryptionError

MAX_COEFF_BITS_128: dict[int, int] = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
"""HE-standard caps on the total coefficient-modulus bits for 128-bit security (as SEAL enforces)."""
MAX_PRIME_BITS = 60
SECURITY_BITS = 128


@lru_cache(maxsize=64)
def ckks_primes(poly_modulus_degree: int, coeff_mod_bit_sizes: tuple[int, ...]) -> tuple[int, ...]:
    """The primes SEAL picks for ``coeff_mod_bit_sizes`` (the same ones TenSEAL's context uses)."""
    from tenseal import sealapi

    try:
        mods = sealapi.CoeffModulus.Create(int(poly_modulus_degree), [int(b) for b in coeff_mod_bit_sizes])
    except Exception as exc:  # SEAL raises a bare RuntimeError/ValueError for impossible chains
        raise EncryptionError(
            f"SEAL cannot build the modulus chain {list(coeff_mod_bit_sizes)} at N={poly_modulus_degree} ({exc}); "
            "use larger prime sizes"
        ) from exc
    return tuple(int(m.value()) for m in mods)


@dataclass(frozen=True)
class EncryptionPlan:
    """CKKS parameters for one model and one packing, plus what they were derived from."""

    mode: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    depth: int
    int_bits: int
    value_bound: float
    estimated_error: float
    galois_keys: bool
    variant: str = "default"
    security_bits: int = SECURITY_BITS
    notes: tuple[str, ...] = field(default=())
    choice: str = ""
    """How the planner chose :attr:`variant` (estimated cost against the alternatives), if it compared them."""

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def total_bits(self) -> int:
        return int(sum(self.coeff_mod_bit_sizes))

    @property
    def max_bits(self) -> int:
        return MAX_COEFF_BITS_128[self.poly_modulus_degree]

    @property
    def scale(self) -> float:
        return float(2**self.scale_bits)

    def primes(self) -> tuple[int, ...]:
        """All primes of the chain, special prime last."""
        return ckks_primes(self.poly_modulus_degree, tuple(self.coeff_mod_bit_sizes))

    def rescale_primes(self) -> tuple[int, ...]:
        """The prime each successive rescale divides by (SEAL drops the last data prime first)."""
        data = self.primes()[:-1]
        return tuple(reversed(data[1:]))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["coeff_mod_bit_sizes"] = list(self.coeff_mod_bit_sizes)
        d["notes"] = list(self.notes)
        d["primes"] = [str(p) for p in self.primes()]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncryptionPlan:
        """Rebuild (and sanity-check) a plan received from a server."""
        try:
            plan = cls(
                mode=str(d["mode"]),
                poly_modulus_degree=int(d["poly_modulus_degree"]),
                coeff_mod_bit_sizes=tuple(int(b) for b in d["coeff_mod_bit_sizes"]),
                scale_bits=int(d["scale_bits"]),
                depth=int(d["depth"]),
                int_bits=int(d["int_bits"]),
                value_bound=float(d["value_bound"]),
                estimated_error=float(d["estimated_error"]),
                galois_keys=bool(d["galois_keys"]),
                variant=str(d.get("variant", "default")),
                security_bits=int(d.get("security_bits", SECURITY_BITS)),
                notes=tuple(str(n) for n in d.get("notes", ())),
                choice=str(d.get("choice", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EncryptionError(f"malformed encryption plan: {exc!r}") from exc
        plan.check()
        if "primes" in d and [str(p) for p in plan.primes()] != [str(p) for p in d["primes"]]:
            raise EncryptionError(
                "this TenSEAL/SEAL build picks different primes than the server's for the same plan; "
                "client and server need the same tenseal version"
            )
        return plan

    def check(self) -> None:
        """Raise :class:`EncryptionError` unless the plan is valid at 128-bit security.

        Whether :attr:`variant` is one of the packing's is the packing's to say
        (:meth:`securetrain.encrypted.packing.Packing.check_plan`): the plan is pure data and
        looks nothing up.
        """
        n = self.poly_modulus_degree
        if n not in MAX_COEFF_BITS_128:
            raise EncryptionError(f"poly_modulus_degree must be one of {sorted(MAX_COEFF_BITS_128)}, got {n}")
        bits = self.coeff_mod_bit_sizes
        if len(bits) != self.depth + 2:
            raise EncryptionError(f"a depth-{self.depth} plan needs {self.depth + 2} primes, got {len(bits)}")
        if any(not 20 <= b <= MAX_PRIME_BITS for b in bits):
            raise EncryptionError(f"every prime must have 20 to {MAX_PRIME_BITS} bits, got {list(bits)}")
        if self.total_bits > self.max_bits:
            raise EncryptionError(
                f"the modulus chain {list(bits)} has {self.total_bits} bits; 128-bit security allows {self.max_bits} at N={n}"
            )
        if self.security_bits != SECURITY_BITS:
            raise EncryptionError(f"only {SECURITY_BITS}-bit security is supported, got {self.security_bits}")


__all__ = ["MAX_COEFF_BITS_128", "MAX_PRIME_BITS", "SECURITY_BITS", "EncryptionPlan", "ckks_primes"]
