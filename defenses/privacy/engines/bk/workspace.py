"""Work tensors a layer keeps from step to step (large fresh allocations cost page faults on CPU).

Example:
    >>> import torch
    >>> from defenses.privacy.engines.bk.workspace import Workspace
    >>> ws, like = Workspace(), torch.zeros(1)
    >>> first = ws.buffer("gs", (2, 3), like)
    >>> ws.buffer("gs", (2, 3), like) is first  # a second request in the same step: a fresh tensor
    False
    >>> ws.release()
    >>> ws.buffer("gs", (2, 3), like) is first  # the next step reuses it
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class Workspace:
    """Named work tensors, each handed out at most once per step."""

    def __init__(self) -> None:
        self._pool: dict[str, torch.Tensor] = {}
        self._taken: set[str] = set()

    def buffer(self, key: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` with ``like``'s dtype and device.

        Handed out once per step (:meth:`release` at the end of the step); a second request
        in the same step (accumulated groups, several calls) gets a fresh tensor.
        """
        buf = self._pool.get(key)
        if key in self._taken:
            return torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
        if buf is None or tuple(buf.shape) != tuple(shape) or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
            self._pool[key] = buf
        self._taken.add(key)
        return buf

    def constant(self, key: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """A zero tensor of ``shape`` (``like``'s dtype and device), kept and shared: never write to it."""
        key = "const:" + key
        buf = self._pool.get(key)
        if buf is None or tuple(buf.shape) != tuple(shape) or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.zeros(tuple(shape), dtype=like.dtype, device=like.device)
            self._pool[key] = buf
        return buf

    def release(self) -> None:
        """The step is over: the work tensors may be handed out again."""
        self._taken.clear()
