"""A per-sample loss for models that return a ``transformers`` ``ModelOutput``.

The training loop and ``protect()`` train on ``loss_fn(model, x, y) -> (B,)`` per-sample
losses; the default calls ``model(x)`` and expects logits. :func:`model_output_loss` is
the same contract for a Hugging Face model used as it is:

* ``x`` may be a tensor (passed positionally) or a mapping of tensors such as
  ``{"input_ids": ..., "attention_mask": ...}`` (passed as keyword arguments, the way a
  ``transformers`` collator batches them);
* the output may be logits or a ``ModelOutput`` (its ``logits`` are used; no ``labels``
  are passed, so the model computes no batch-averaged loss of its own);
* sequence logits ``(B, C)`` give the cross-entropy of each sample; token logits
  ``(B, L, C)`` against labels ``(B, L)`` give, for each sample, the mean over its own
  counted positions: labels other than ``-100`` and, when ``x`` has an
  ``attention_mask``, positions the mask marks as tokens. Padding never enters a
  sample's loss, and one sample's length never rescales another's loss.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Tagger(nn.Module):
    ...     def forward(self, input_ids, attention_mask):
    ...         return {"logits": torch.nn.functional.one_hot(input_ids, 3).float() * 5}
    >>> x = {"input_ids": torch.tensor([[0, 1, 2], [2, 2, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}
    >>> y = torch.tensor([[0, 1, 2], [2, 2, 1]])  # the padded third label of sample 2 is wrong, and ignored
    >>> model_output_loss(Tagger(), x, y) < 0.02
    tensor([True, True])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from securetrain.errors import DataError
from securetrain.hf.adapter import output_logits

IGNORE_INDEX = -100
"""Labels with this value are not counted (the ``transformers`` convention)."""


def call_model(model: nn.Module, x: Any) -> Any:
    """``model(**x)`` for a mapping of inputs, ``model(x)`` otherwise."""
    if isinstance(x, Mapping):
        return model(**x)
    return model(x)


def model_output_loss(model: nn.Module, x: Any, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy ``(B,)`` of ``model`` on ``x`` against ``y`` (see the module doc)."""
    logits = output_logits(call_model(model, x))
    if logits.dim() == 2:
        if y.dim() != 1 or y.shape[0] != logits.shape[0]:
            raise DataError(f"sequence labels must have shape ({logits.shape[0]},), got {tuple(y.shape)}")
        return F.cross_entropy(logits, y.long(), reduction="none")
    if logits.dim() != 3 or y.shape != logits.shape[:2]:
        raise DataError(
            f"token logits {tuple(logits.shape)} need labels of shape {tuple(logits.shape[:2])}, got {tuple(y.shape)}"
        )
    y = y.long()
    counted = y != IGNORE_INDEX
    mask = x.get("attention_mask") if isinstance(x, Mapping) else None
    if isinstance(mask, torch.Tensor) and mask.shape == y.shape:
        counted = counted & (mask != 0)
    per_token = F.cross_entropy(logits.flatten(0, 1), torch.where(counted, y, 0).flatten(), reduction="none").view_as(y)
    per_token = per_token * counted
    return per_token.sum(1) / counted.sum(1).clamp(min=1)


__all__ = ["IGNORE_INDEX", "call_model", "model_output_loss"]
