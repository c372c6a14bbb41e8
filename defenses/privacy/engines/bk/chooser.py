"""The one rule that picks, per layer, materialised per-sample gradients or ghost norms.

A layer's per-sample gradient norms can be computed by *materialising* each sample's
gradient or by the *ghost* identity ``||G_i A_i^T||^2 = <A_i^T A_i, G_i^T G_i>``. A
block describes what each costs as a :class:`NormCost`; :func:`choose_mode` applies the
engine's ``policy``:

==============  =====================================================================
``materialize`` always materialise
``ghost-only``  always ghost norms (for checks)
``ghost``       whichever holds fewer numbers at once (memory-lean)
``auto``        the one that holds fewer numbers when materialising would exceed
                ``max_bytes``; otherwise ghost norms only when they are at least
                :data:`GHOST_SPEEDUP` times cheaper on paper (measured on CPU)
==============  =====================================================================

A block where ghost norms are not implemented (``ghost_possible=False``) always
materialises.

Example:
    >>> from defenses.privacy.engines.bk.chooser import NormCost, choose_mode
    >>> wide = NormCost.matmul(batch=8, out_features=512, in_features=512, positions=4)
    >>> choose_mode(wide, "auto", max_bytes=2**30, element_size=4)
    'ghost'
    >>> choose_mode(wide, "materialize", max_bytes=2**30, element_size=4)
    'mat'
    >>> long = NormCost.matmul(batch=8, out_features=16, in_features=16, positions=64)
    >>> choose_mode(long, "auto", max_bytes=2**30, element_size=4)
    'mat'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from securetrain.errors import ConfigurationError

Policy = Literal["auto", "ghost", "materialize", "ghost-only"]
"""How :func:`choose_mode` decides (see the module's table)."""

POLICIES: tuple[Policy, ...] = ("auto", "ghost", "materialize", "ghost-only")

NormMode = Literal["mat", "ghost"]
"""Materialised per-sample gradients or ghost norms."""

DEFAULT_MAX_MATERIALIZE_BYTES = 256 * 2**20
"""Above this many bytes of per-sample gradients for one layer, ``bk`` uses ghost norms."""

GHOST_SPEEDUP = 4
"""Under ``auto``, ghost norms must be this many times cheaper on paper to be picked (measured on CPU)."""


@dataclass(frozen=True)
class NormCost:
    """What each way of computing one layer's norms costs for one group of samples.

    ``*_elems``: numbers held at once for the whole batch (memory); ``*_flops``: work per
    sample on paper (speed); ``ghost_possible``: whether the block implements ghost norms.
    """

    mat_elems: int
    ghost_elems: int
    mat_flops: int
    ghost_flops: int
    ghost_possible: bool = True

    @classmethod
    def matmul(cls, batch: int, out_features: int, in_features: int, positions: int) -> NormCost:
        """``W`` ``(O, K)`` applied at ``L`` positions: per-sample ``O*K`` gradients or two ``L*L`` Grams."""
        B, O, K, L = batch, out_features, in_features, positions
        return cls(mat_elems=B * O * K, ghost_elems=2 * B * L * L, mat_flops=O * K * L, ghost_flops=L * L * (O + K))

    @classmethod
    def conv(
        cls,
        batch: int,
        out_channels: int,
        in_channels: int,
        kernel: tuple[int, int],
        positions: int,
        padded_pixels: int,
        calls: int = 1,
    ) -> NormCost:
        """A 2-d convolution; ghost norms assemble the patch Gram from the padded pixels' Gram.

        Batched products with small inner sizes and the extra convolution backward make
        ghost norms slower than their count of multiplications suggests; the flops below
        include them. Ghost norms are implemented for a convolution called once only.
        """
        B, O, P = batch, out_channels, padded_pixels
        kh, kw = kernel
        L, K = positions, in_channels * kh * kw
        return cls(
            mat_elems=B * O * K,  # per-sample gradients (one grouped convolution, no patches formed)
            ghost_elems=B * (P**2 + 2 * L * L),  # pixel Gram, patch Gram, output-gradient Gram
            mat_flops=O * K * L,
            ghost_flops=P**2 * in_channels + kh * kw * L * L + L * L * O + O * K * L,
            ghost_possible=calls == 1,
        )


def choose_mode(cost: NormCost, policy: Policy, max_bytes: int, element_size: int) -> NormMode:
    """``"mat"`` or ``"ghost"`` for a layer of ``cost`` under ``policy`` (see the module's table)."""
    if not cost.ghost_possible or policy == "materialize":
        return "mat"
    if policy == "ghost-only":
        return "ghost"
    if policy == "ghost" or cost.mat_elems * element_size > max_bytes:
        return "ghost" if cost.ghost_elems < cost.mat_elems else "mat"  # the one that needs less memory
    return "ghost" if GHOST_SPEEDUP * cost.ghost_flops < cost.mat_flops else "mat"


def check_policy(policy: str) -> Policy:
    """``policy`` if it is one of :data:`POLICIES`, else :class:`~securetrain.errors.ConfigurationError`."""
    if policy not in POLICIES:
        raise ConfigurationError(f"policy must be auto, ghost, materialize or ghost-only, got {policy!r}")
    return policy
