"""An exponential moving average of the parameters of a private run (post-processing, no privacy cost).

De et al. (2022) found that averaging the noisy DP-SGD iterates gains accuracy for free:
every iterate is already released by the private mechanism, so any function of them (here
an exponential moving average) spends no further privacy budget. The training itself is
untouched (the optimizer keeps stepping the raw iterates); the average replaces the
model's parameters when training ends.

The decay warms up as ``min(decay, (1 + t) / (10 + t))`` after ``t`` updates, so the
first iterates (far from the optimum) are forgotten quickly.

Example:
    >>> import torch
    >>> from defenses.privacy.ema import ParameterAverage
    >>> p = torch.nn.Parameter(torch.zeros(2))
    >>> avg = ParameterAverage([p], decay=0.5)
    >>> with torch.no_grad():
    ...     _ = p.add_(1.0)
    >>> avg.update([p])          # warm-up: min(0.5, 2/11) of the old average is kept
    >>> [round(v, 4) for v in avg.shadow[0].tolist()]
    [0.8182, 0.8182]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from securetrain.errors import CheckpointError


def warmup_decay(decay: float, updates: int) -> float:
    """The decay used at the ``updates``-th update: ``min(decay, (1 + updates) / (10 + updates))``."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class ParameterAverage:
    """The exponential moving average of ``params`` (copies; the parameters are not touched until :meth:`copy_to`)."""

    def __init__(self, params: Sequence[torch.nn.Parameter], decay: float) -> None:
        self.decay = float(decay)
        self.shadow = [p.detach().clone() for p in params]
        self.updates = 0

    @torch.no_grad()
    def update(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Fold the current (released) parameters into the average."""
        self.updates += 1
        d = warmup_decay(self.decay, self.updates)
        for avg, p in zip(self.shadow, params):
            avg.mul_(d).add_(p.detach(), alpha=1.0 - d)

    @torch.no_grad()
    def copy_to(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Replace the parameters' values by the average."""
        for avg, p in zip(self.shadow, params):
            p.copy_(avg)

    def state_dict(self) -> dict[str, Any]:
        """The average and its update count (what a resumed run continues from)."""
        return {"updates": self.updates, "shadow": [t.clone() for t in self.shadow]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; refuses an average of other shapes."""
        shadow = list(state.get("shadow", []))
        if len(shadow) != len(self.shadow) or any(a.shape != b.shape for a, b in zip(shadow, self.shadow)):
            raise CheckpointError(
                "cannot resume: the checkpoint's parameter average does not match this model; "
                "resume with the same model and settings or start a new run directory"
            )
        self.updates = int(state.get("updates", 0))
        for dst, src in zip(self.shadow, shadow):
            dst.copy_(src)


__all__ = ["ParameterAverage", "warmup_decay"]
