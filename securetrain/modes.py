"""Context managers that change a model's state and always restore it.

``attack_mode`` is the one place that knows how to run extra forward/backward passes
(adversarial example generation, robustness evaluation) on a model that may be wrapped
by Opacus: per-sample-gradient hooks off, eval mode, parameter gradients saved and
restored, so nothing leaks into the next optimizer step.

Example:
    >>> from torch import nn
    >>> m = nn.Linear(2, 2).train()
    >>> with eval_mode(m):
    ...     m.training
    False
    >>> m.training
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in model.modules()]


def _restore_modes(saved: list[tuple[nn.Module, bool]]) -> None:
    for m, training in saved:
        m.training = training


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` (every submodule) in eval mode; restore each submodule's mode after."""
    saved = _modes(model)
    try:
        model.eval()
        yield model
    finally:
        _restore_modes(saved)


@contextmanager
def train_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in train mode; restore each submodule's mode after."""
    saved = _modes(model)
    try:
        model.train()
        yield model
    finally:
        _restore_modes(saved)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside an Opacus ``GradSampleModule`` (or DDP) wrapper, else ``model``."""
    inner = model
    while isinstance(wrapped := getattr(inner, "_module", None), nn.Module):
        inner = wrapped
    while isinstance(wrapped := getattr(inner, "module", None), nn.Module) and type(inner).__name__ in {
        "DistributedDataParallel",
        "DataParallel",
        "DPDDP",
    }:
        inner = wrapped
    return inner


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run attacks on ``model`` without side effects on training or privacy accounting.

    Inside the block: eval mode, Opacus per-sample hooks disabled (if the model is a
    ``GradSampleModule``), and parameter gradients set aside. On exit, whatever happened:
    modes restored, hooks re-enabled if they were on, parameter ``.grad`` (and Opacus
    ``grad_sample``) restored exactly as found.
    """
    saved_modes = _modes(model)
    params = list(model.parameters())
    saved_grads = [p.grad for p in params]
    saved_gs = [getattr(p, "grad_sample", None) for p in params]
    hooks_were_on = bool(getattr(model, "hooks_enabled", False))
    try:
        if hooks_were_on:
            model.disable_hooks()  # type: ignore[operator]
        model.eval()
        for p in params:
            p.grad = None
        yield model
    finally:
        for p, g, gs in zip(params, saved_grads, saved_gs):
            p.grad = g
            if hasattr(p, "grad_sample") or gs is not None:
                p.grad_sample = gs  # type: ignore[attr-defined]  # Opacus's per-sample gradients, not a torch attribute
        if hooks_were_on:
            model.enable_hooks()  # type: ignore[operator]
        _restore_modes(saved_modes)


def model_device(model: nn.Module) -> torch.device:
    """Device of the first parameter (CPU for a parameter-free model)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
