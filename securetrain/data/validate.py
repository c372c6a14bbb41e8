"""Checks on user data and models, raising typed errors that say how to fix things."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import nn

from securetrain.errors import DataError, ModelError
from securetrain.modes import eval_mode, model_device


def validate_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int | None = None,
    bounds: tuple[float, float] | None = None,
    what: str = "data",
) -> None:
    """Raise :class:`DataError` for non-finite values, mismatched sizes or bad labels.

    Example:
        >>> import torch
        >>> validate_batch(torch.zeros(2, 3), torch.tensor([0, 1]), num_classes=2)
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise DataError(
            f"{what}: inputs and labels must be torch tensors, got {type(x).__name__} and {type(y).__name__}"
        )
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{what}: {x.shape[0]} inputs but {y.shape[0]} labels; they must have the same length")
    if x.shape[0] == 0:
        raise DataError(f"{what}: the data set is empty")
    if y.dim() != 1:
        raise DataError(f"{what}: labels must be a 1-D tensor of class indices, got shape {tuple(y.shape)}")
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise DataError(f"{what}: labels must be integer class indices")
    if x.is_floating_point() and not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
        raise DataError(f"{what}: {bad} input(s) contain NaN or infinite values; clean or drop them first")
    if num_classes is not None:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise DataError(
                f"{what}: labels must lie in [0, {num_classes - 1}] for {num_classes} classes, "
                f"found values in [{lo}, {hi}]"
            )
    if bounds is not None and x.is_floating_point():
        lo_b, hi_b = bounds
        xmin, xmax = float(x.min()), float(x.max())
        if xmin < lo_b - 1e-6 or xmax > hi_b + 1e-6:
            raise DataError(
                f"{what}: inputs lie in [{xmin:.4g}, {xmax:.4g}], outside the declared bounds "
                f"[{lo_b}, {hi_b}]; rescale the inputs or declare the right bounds"
            )


def row_keys(x: torch.Tensor, y: torch.Tensor | None = None) -> list[bytes]:
    """A content hash of every sample: its input (float32 bytes) and, when ``y`` is given, its label.

    Equal samples get equal keys, so sets of keys show the samples two data sets share.

    Example:
        >>> import torch
        >>> x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [0.0, 1.0]])
        >>> keys = row_keys(x)
        >>> keys[0] == keys[2], keys[0] == keys[1], row_keys(x, torch.tensor([0, 1, 1]))[0] == keys[0]
        (True, False, False)
    """
    xs = x.detach().cpu().float().contiguous().reshape(x.shape[0], -1).numpy()
    if y is None:
        return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in xs]
    ys = y.detach().cpu().long().numpy()
    return [hashlib.blake2b(xs[i].tobytes() + ys[i].tobytes(), digest_size=16).digest() for i in range(xs.shape[0])]


def check_model_fits(model: nn.Module, input_shape: Sequence[int], num_classes: int) -> None:
    """Run one forward pass on zeros; raise :class:`ModelError` if shapes do not fit.

    Example:
        >>> from torch import nn
        >>> check_model_fits(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), (4,), 3)
    """
    probe = torch.zeros(2, *input_shape, device=model_device(model))
    with eval_mode(model), torch.no_grad():
        try:
            out = model(probe)
        except (RuntimeError, ValueError, IndexError) as exc:
            raise ModelError(
                f"the model does not accept inputs of shape {tuple(input_shape)}: {exc}. "
                "Build the model for this data set's input shape"
            ) from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"the model must return logits of shape (batch, {num_classes}) for this data set, got {shape}")
