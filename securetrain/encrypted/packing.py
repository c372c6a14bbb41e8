"""The packing protocol, its layout cost and the registry of packings.

A packing is how samples are laid out in ciphertext slots. Two ship, each registering
itself in :data:`PACKINGS` when its module is imported (importing
:mod:`securetrain.encrypted` imports both): ``"throughput"``
(:mod:`securetrain.encrypted.throughput`: the batch across the slots, one ciphertext per
feature) and ``"latency"`` (:mod:`securetrain.encrypted.latency`: one sample per
ciphertext). A packing tells the planner in one :meth:`Packing.cost` what laying a model
out at a ring size costs (a :class:`LayoutCost`: depth, keys, noise terms, or why it does
not fit), gives the client a public layout (JSON), encrypts and decrypts on the client,
and compiles a :class:`Program` that a server runs on ciphertexts.

Example:
    >>> get_packing("throughput").name
    'throughput'
    >>> sorted(PACKINGS)
    ['latency', 'throughput']
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from securetrain.errors import EncryptionError
from securetrain.registry import Registry

if TYPE_CHECKING:
    from securetrain.encrypted.compiler import CompiledModel
    from securetrain.encrypted.params import EncryptionPlan


@dataclass
class Group:
    """Ciphertexts evaluated together: a chunk of ``samples`` samples (throughput: one vector
    per feature; latency: one vector holding one sample)."""

    samples: int
    vectors: list[Any] = field(default_factory=list)


class Program(ABC):
    """A compiled model for one packing and one plan, run by the server on ciphertexts."""

    @abstractmethod
    def run(self, context: Any, group: Group) -> Group:
        """Evaluate one group; ``context`` is the (public) TenSEAL context."""


@dataclass(frozen=True)
class LayoutCost:
    """What laying out one model with one packing and variant costs at a slot count: everything
    the planner needs, worked out once.

    Example:
        >>> cost = LayoutCost(depth=3, galois_keys=False, notes=("one chunk",))
        >>> cost.fits, cost.rotation_amplification
        (True, 0.0)
    """

    depth: int
    """Levels the evaluation consumes."""
    galois_keys: bool
    """Whether rotations (Galois keys) are needed."""
    reason: str | None = None
    """Why the model cannot be laid out with these slots, or None if it can."""
    extra_first_level: bool = False
    """Whether the first affine map costs an extra level (for the error estimate)."""
    key_switches: tuple[int, ...] = ()
    """Approximate key switches per affine map (for the error estimate)."""
    rescales_per_output: tuple[int, ...] = ()
    """Per affine map: how many separately rescaled products are summed into one output (each
    rescale adds its own rounding noise; for the error estimate). Missing entries count as 1."""
    rotation_amplification: float = 0.0
    """How many times the noise of one key switch done *after* a rescale is multiplied
    (rotate-and-sum doubles the accumulated noise at every step); 0 if there is none. The
    planner sizes the special prime so that this noise stays below the scale's."""
    product_widths: tuple[int, ...] = ()
    """Per affine map: how many slots each plaintext product multiplies (for the error estimate:
    every slot carries the encoding's rounding times whatever value it holds, zero weights
    included). Missing entries: the map's input features."""
    notes: tuple[str, ...] = ()
    """Human-readable remarks recorded in the plan."""
    operations: tuple[tuple[str, int], ...] = ()
    """Operation counts per request ``(name, count)``, for the planner's choice by estimated cost
    (:func:`securetrain.encrypted.costmodel.relative_seconds`); empty: no cost model (the planner then
    takes the first variant that fits)."""

    @property
    def fits(self) -> bool:
        return self.reason is None


class Packing(ABC):
    """Layout of samples in ciphertexts; see the module docstring."""

    name: str = ""
    variants: tuple[str, ...] = ("default",)
    """Ways to lay out a model, in order of preference at a given ring size."""

    @abstractmethod
    def cost(self, compiled: CompiledModel, slots: int, variant: str) -> LayoutCost:
        """What laying ``compiled`` out as ``variant`` with ``slots`` slots costs (or why it cannot)."""

    def check_plan(self, plan: EncryptionPlan) -> None:
        """Raise :class:`EncryptionError` unless ``plan`` was made for this packing and one of its variants."""
        if plan.mode != self.name:
            raise EncryptionError(f"the plan is for the {plan.mode} packing, not {self.name}")
        if plan.variant not in self.variants:
            raise EncryptionError(
                f"{self.name} packing has no variant {plan.variant!r}; choose one of {', '.join(self.variants)}"
            )

    @abstractmethod
    def layout(self, compiled: CompiledModel, plan: EncryptionPlan) -> dict[str, Any]:
        """The public, JSON-ready layout a client needs to encrypt inputs and read outputs."""

    @abstractmethod
    def program(self, compiled: CompiledModel, plan: EncryptionPlan) -> Program:
        """The server-side program."""

    @abstractmethod
    def encrypt(
        self, context: Any, layout: dict[str, Any], x: np.ndarray, *, chunk_size: int | None = None
    ) -> list[Group]:
        """Client side: encrypt ``x`` of shape ``(B, features)`` into groups."""

    @abstractmethod
    def decrypt(self, context: Any, layout: dict[str, Any], groups: list[Group]) -> np.ndarray:
        """Client side: decrypt result groups into ``(B, outputs)``."""

    def check_layout(self, layout: dict[str, Any], plan: EncryptionPlan) -> None:
        """Client side: raise :class:`EncryptionError` unless a layout received in a spec is well formed."""
        try:
            ok = (
                layout["kind"] == self.name
                and int(layout["slots"]) == plan.slots
                and 1 <= int(layout["features"])
                and 1 <= int(layout["outputs"])
            )
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise EncryptionError(f"malformed {self.name} layout in the spec (kind, slots, features, outputs)")

    @abstractmethod
    def check_group(self, layout: dict[str, Any], group: Group) -> None:
        """Server side: raise :class:`EncryptionError` if a request group does not fit the layout."""


PACKINGS: Registry[Packing] = Registry("packing")


def get_packing(name: str) -> Packing:
    """The registered packing ``name`` (``"throughput"`` or ``"latency"``)."""
    return PACKINGS.get(name)


def fresh_level_check(vector: Any, depth: int, scale: float, what: str) -> None:
    """Raise unless ``vector`` is one fresh ciphertext at the top level with the plan's scale."""
    cts = vector.ciphertext()
    if len(cts) != 1:
        raise EncryptionError(f"{what} spans {len(cts)} ciphertexts; each must fit in one")
    ct = cts[0]
    if ct.coeff_modulus_size() != depth + 1:
        raise EncryptionError(
            f"{what} is at the wrong level ({ct.coeff_modulus_size() - 1} levels left, the plan needs {depth}); "
            "send freshly encrypted inputs"
        )
    if not np.isclose(float(ct.scale), scale, rtol=1e-9):
        raise EncryptionError(
            f"{what} has scale 2^{np.log2(float(ct.scale)):.2f}, the plan uses 2^{np.log2(scale):.0f}"
        )


def next_pow2(n: int) -> int:
    """The smallest power of two ``>= n`` (1 for ``n <= 1``)."""
    return 1 << max(0, int(n) - 1).bit_length()


__all__ = ["PACKINGS", "Group", "LayoutCost", "Packing", "Program", "fresh_level_check", "get_packing", "next_pow2"]
