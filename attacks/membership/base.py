"""The membership-attack protocol: stateless configuration, the model passed at call time.

A subclass writes only :meth:`MembershipAttack.scores` (higher means "more likely a member").
The base class's ``__call__`` does the shared work: it checks the member and non-member sets
(non-empty, disjoint), scores both, and computes the metrics.

Example:
    >>> import torch
    >>> from attacks.membership import LossThreshold
    >>> model = torch.nn.Linear(4, 2)
    >>> members = (torch.rand(20, 4), torch.randint(0, 2, (20,)))
    >>> nonmembers = (torch.rand(20, 4), torch.randint(0, 2, (20,)))
    >>> result = LossThreshold()(model, members, nonmembers)
    >>> result.name, 0.0 <= result.metrics.auc <= 1.0
    ('loss', True)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, final

import numpy as np
import torch
from torch import nn

from attacks.checks import check_disjoint, check_fprs, check_xy
from attacks.membership.metrics import (
    DEFAULT_FPRS,
    MembershipMetrics,
    membership_metrics,
)
from securetrain.deprecation import deprecated_aliases
from securetrain.modes import eval_mode


@dataclass(frozen=True)
class MembershipResult:
    """Scores of members and non-members under one attack, and the resulting metrics."""

    name: str
    member_scores: np.ndarray = field(repr=False)
    nonmember_scores: np.ndarray = field(repr=False)
    metrics: MembershipMetrics
    notes: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        """``{auc, tpr_at_fpr, advantage, ...}`` for a report."""
        out = self.metrics.to_dict()
        if self.notes:
            out["notes"] = list(self.notes)
        return out


class MembershipAttack:
    """Base class: subclasses implement :meth:`scores`; ``__call__`` is shared and final."""

    name: ClassVar[str] = "membership"

    def scores(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """One score per example of ``(x, y)``; higher means more likely a training member."""
        raise NotImplementedError

    def notes(self) -> tuple[str, ...]:
        """Caveats about the last call (e.g. fallbacks), copied into the result."""
        return ()

    @final
    def __call__(
        self,
        model: nn.Module,
        members: tuple[torch.Tensor, torch.Tensor],
        nonmembers: tuple[torch.Tensor, torch.Tensor],
        *,
        fprs: Iterable[float] = DEFAULT_FPRS,
    ) -> MembershipResult:
        """Score ``members`` and ``non-members`` against ``model`` and measure the separation.

        Raises :class:`securetrain.errors.AttackError` if a set is empty, the sets overlap, or
        an FPR is outside (0, 1). The model's train/eval mode is restored.
        """
        targets = check_fprs(fprs)
        mx, my = check_xy(members, "members")
        nx, ny = check_xy(nonmembers, "non-members")
        check_disjoint((mx, my), (nx, ny))
        with eval_mode(model):
            both = self.scores(model, torch.cat([mx, nx]), torch.cat([my, ny]))
        both = np.asarray(both, dtype=np.float64)
        pos, neg = both[: mx.shape[0]], both[mx.shape[0] :]
        return MembershipResult(
            name=self.name,
            member_scores=pos,
            nonmember_scores=neg,
            metrics=membership_metrics(pos, neg, targets),
            notes=self.notes(),
        )


__getattr__ = deprecated_aliases(__name__, {"AttackResult": "MembershipResult"})

__all__ = ["MembershipAttack", "MembershipResult"]
