"""The bridge to Foolbox 3: lazy import, model wrapping, starting points for decision attacks.

Foolbox traps handled here (measured on Foolbox 3.3.4): it is imported only when needed (its import
raises a scipy DeprecationWarning); it takes torch tensors only; it never changes the model's
mode and accumulates gradients into parameters (the base class runs attacks in attack mode with
parameters frozen); ``HopSkipJumpAttack`` clips to [0, 1] whatever the model's bounds, so it is
run on a model rescaled to the unit box.
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any

import torch
from torch import nn

from attacks.evasion.norms import Norm

_FB: ModuleType | None = None


def foolbox() -> ModuleType:
    """The ``foolbox`` module, imported on first use without leaking its import-time warning."""
    global _FB
    if _FB is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import foolbox as fb
        _FB = fb
    return _FB


def fmodel(model: nn.Module, bounds: tuple[float, float], device: torch.device) -> Any:
    """``foolbox.PyTorchModel`` over ``model`` (already in eval mode inside attack mode)."""
    return foolbox().PyTorchModel(model, bounds=bounds, device=device)


def misclassification(labels: torch.Tensor) -> Any:
    """Foolbox's untargeted criterion for ``labels``."""
    return foolbox().criteria.Misclassification(labels)


class UnitBox(nn.Module):
    """``z -> model(lo + (hi - lo) * z)``: the model seen on the unit box [0, 1]."""

    def __init__(self, model: nn.Module, bounds: tuple[float, float]) -> None:
        super().__init__()
        self.model = model
        self.lo, self.hi = float(bounds[0]), float(bounds[1])
        self.training = False  # only this wrapper; the wrapped model's modes are left alone

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(self.lo + (self.hi - self.lo) * z)
        return out

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)

    def from_unit(self, z: torch.Tensor) -> torch.Tensor:
        return self.lo + (self.hi - self.lo) * z


@torch.no_grad()
def starting_points(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    bounds: tuple[float, float],
    norm: Norm,
    *,
    draws: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """An adversarial starting point per sample and a mask of the samples that have one.

    For sample ``i``: the nearest input of the batch that the model assigns to a class other
    than ``y[i]``; failing that, uniform noise over the input box (up to ``draws`` tries).
    """
    lo, hi = bounds
    pred = model(x).argmax(1)
    flat = x.flatten(1)
    dist = torch.cdist(flat, flat, p=float("inf") if norm == "linf" else 2.0)
    dist = dist.masked_fill(pred[None, :] == y[:, None], float("inf"))
    nearest = dist.argmin(1)
    ok = torch.isfinite(dist.gather(1, nearest[:, None]).squeeze(1))
    start = x[nearest].clone()
    for _ in range(draws):
        missing = (~ok).nonzero().flatten()
        if missing.numel() == 0:
            break
        noise = torch.empty_like(x[missing]).uniform_(lo, hi)
        hit = model(noise).argmax(1) != y[missing]
        start[missing[hit]] = noise[hit]
        ok[missing[hit]] = True
    start[~ok] = x[~ok]
    return start, ok
