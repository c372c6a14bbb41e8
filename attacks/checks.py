"""Input checks shared by the membership attacks and the privacy audits.

Every check raises :class:`~securetrain.errors.AttackError` with a message that says what was
expected, what was given and, where it helps, how to fix it. Number, count, fraction and delta
checks come from :mod:`securetrain.validation` (the library's one implementation); this module
holds the checks specific to membership inference: score arrays, ``(x, y)`` sets, disjointness,
false-positive rates, confidence levels and the number of shadow models.

Example:
    >>> import torch
    >>> from attacks.checks import as_scores, check_disjoint, check_fprs, check_xy
    >>> as_scores([0.5, 1.0], "member scores")
    array([0.5, 1. ])
    >>> check_fprs([0.001, 0.01])
    (0.001, 0.01)
    >>> x, y = check_xy((torch.zeros(3, 2), torch.zeros(3)), "members")
    >>> y.dtype
    torch.int64
    >>> check_disjoint((x, y), (x, y))
    Traceback (most recent call last):
    ...
    securetrain.errors.AttackError: members and non-members overlap: 1 example(s) appear in both sets; the membership ground truth must be two disjoint sets
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from securetrain.data.validate import row_keys
from securetrain.errors import AttackError
from securetrain.validation import check_delta, check_fraction


def as_scores(scores: object, what: str) -> np.ndarray:
    """``scores`` as a 1-D float64 array; refuses empty or non-finite input."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise AttackError(f"{what} must be a 1-D array of scores, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise AttackError(f"{what} is empty; membership inference needs at least one member and one non-member")
    if not np.all(np.isfinite(arr)):
        bad = int((~np.isfinite(arr)).sum())
        raise AttackError(f"{what} contains {bad} non-finite scores (NaN or inf); check the model's outputs")
    return arr


def check_fprs(fprs: Iterable[float]) -> tuple[float, ...]:
    """The false-positive rates at which TPR is reported; each must lie strictly in (0, 1)."""
    out = [check_fraction("FPR", f, error=AttackError, closed_low=False) for f in fprs]
    if not out:
        raise AttackError("fprs is empty; give at least one false-positive rate in (0, 1), e.g. (0.001, 0.01)")
    return tuple(out)


def check_alpha(alpha: object, what: str = "alpha (1 - confidence)") -> float:
    """An error level (or, with ``what="confidence"``, a confidence level) strictly inside (0, 1).

    Example:
        >>> check_alpha(0.05)
        0.05
    """
    return check_fraction(what, alpha, error=AttackError, closed_low=False)


def check_audit_delta(delta: object) -> float:
    """The delta of an audited (epsilon, delta) claim: in ``[0, 1)`` (0 for pure epsilon-DP).

    Example:
        >>> check_audit_delta(0)
        0.0
    """
    return check_delta(delta, error=AttackError, allow_zero=True, hint="use the run's delta (e.g. 1e-5)")


def check_num_models(num_models: int) -> int:
    """The number of shadow models: an integer of at least 1."""
    if isinstance(num_models, bool) or not isinstance(num_models, (int, np.integer)):
        raise AttackError(f"the number of shadow models must be an integer, got {num_models!r}")
    if num_models < 1:
        raise AttackError(
            f"the number of shadow models must be at least 1, got {num_models}; "
            "LiRA offline needs 1 or more, LiRA online 2 or more (4 to 16 is typical)"
        )
    return int(num_models)


def check_xy(xy: Sequence[torch.Tensor], what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` as tensors with the same, non-zero number of rows."""
    if not isinstance(xy, (tuple, list)) or len(xy) != 2:
        raise AttackError(f"{what} must be a pair (x, y) of tensors")
    x, y = xy
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise AttackError(f"{what} must be a pair (x, y) of torch tensors, got {type(x).__name__}, {type(y).__name__}")
    if x.shape[0] == 0:
        raise AttackError(f"{what} is empty; membership inference needs at least one member and one non-member")
    if x.shape[0] != y.shape[0]:
        raise AttackError(f"{what}: x has {x.shape[0]} rows but y has {y.shape[0]}")
    return x, y.long()


def check_disjoint(members: tuple[torch.Tensor, torch.Tensor], nonmembers: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Refuse member and non-member sets that share an example (same input and label)."""
    shared = set(row_keys(*members)) & set(row_keys(*nonmembers))
    if shared:
        raise AttackError(
            f"members and non-members overlap: {len(shared)} example(s) appear in both sets; "
            "the membership ground truth must be two disjoint sets"
        )


__all__ = [
    "as_scores",
    "check_alpha",
    "check_audit_delta",
    "check_disjoint",
    "check_fprs",
    "check_num_models",
    "check_xy",
    "row_keys",
]
