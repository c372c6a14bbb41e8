"""Structural types the training core recognises without importing any defense.

A defense package (differential privacy) owns its concrete classes; the core and the
other defenses only need to *recognise* them, which these ``runtime_checkable``
protocols allow with an ``isinstance`` check instead of probing attributes.

Example:
    >>> import torch
    >>> from securetrain.training import PrivateOptimizer
    >>> plain = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    >>> isinstance(plain, PrivateOptimizer)
    False
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class PrivateOptimizer(Protocol):
    """An optimizer that clips, noises and averages per-sample gradients before stepping.

    ``original_optimizer`` is the user's optimizer that applies the (private) update;
    ``noise_multiplier`` is the noise standard deviation over ``max_grad_norm``, the
    per-sample clipping norm; ``expected_batch_size`` is the expected logical batch the
    noisy sum is divided by. Opacus's ``DPOptimizer`` is one too.
    """

    original_optimizer: torch.optim.Optimizer
    noise_multiplier: float
    max_grad_norm: float
    expected_batch_size: int | None


__all__ = ["PrivateOptimizer"]
