"""Choosing the torch device of a single-process run: ``--device cpu|cuda|auto``.

``cpu`` (the default) and ``cuda`` (or ``cuda:N``) are taken as given; ``auto`` is the first
CUDA GPU when torch sees one, else the CPU. Asking for ``cuda`` where torch sees no GPU is a
:class:`~securetrain.errors.ConfigurationError`, not a silent fall-back to the CPU. A
multi-process run (``torchrun``) places each rank by its backend instead (see
:mod:`securetrain.distributed`).

Example:
    >>> from securetrain.devices import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("auto").type in ("cpu", "cuda")
    True
    >>> resolve_device("tpu")
    Traceback (most recent call last):
    ...
    securetrain.errors.ConfigurationError: unknown device 'tpu'; choose one of: cpu, cuda, cuda:N, auto
"""

from __future__ import annotations

import re

import torch

from securetrain.errors import ConfigurationError

DEVICES = ("cpu", "cuda", "auto")
_CUDA_INDEX = re.compile(r"^cuda:(\d+)$")


def check_device_name(name: str) -> str:
    """``name`` if it is ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; :class:`ConfigurationError` otherwise."""
    if not isinstance(name, str) or not (name in DEVICES or _CUDA_INDEX.match(name)):
        raise ConfigurationError(f"unknown device {name!r}; choose one of: cpu, cuda, cuda:N, auto")
    return name


def resolve_device(name: str | None) -> torch.device:
    """The :class:`torch.device` for ``name`` (``None`` means ``cpu``).

    Raises :class:`ConfigurationError` for an unknown name, or for ``cuda`` when torch sees no
    CUDA GPU (or fewer than ``N + 1`` of them for ``cuda:N``).
    """
    name = check_device_name("cpu" if name is None else name)
    if name == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if name == "auto":
        return torch.device("cuda", 0) if available else torch.device("cpu")
    index_match = _CUDA_INDEX.match(name)
    index = int(index_match.group(1)) if index_match else 0
    if not available:
        raise ConfigurationError(
            f"device {name!r} was requested but torch sees no CUDA GPU (torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda or 'no'}); use --device cpu, or --device auto to take a GPU only when "
            "there is one"
        )
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigurationError(f"device {name!r} was requested but torch sees {count} CUDA GPU(s) (cuda:0..)")
    return torch.device("cuda", index)


__all__ = ["DEVICES", "check_device_name", "resolve_device"]
