"""``SequenceClassifier``: a Hugging Face classifier as a plain "token tensor in, logits out" module.

Every part of securetrain (the training loop, ``protect()``, the per-sample gradient
engines and their verification, evaluation, the membership audit) calls a model as
``model(x)`` with one tensor and expects logits. A ``transformers`` model takes keyword
inputs (``input_ids``, ``attention_mask``) and returns a ``ModelOutput``. The adaptor
takes one integer tensor, either token ids ``(B, L)`` or ids and padding mask packed
as ``(B, 2, L)`` (see :func:`pack_inputs`), and returns the logits ``(B, num_labels)``.

The padding mask is handed to the model as an additive 4-D mask ``(B, 1, 1, L)`` (0 where
a token is attended, the dtype's lowest value where it is padding), which ``transformers``
uses as it is: the forward then has no branch on the mask's values, so per-sample
gradients can also be computed with ``torch.func.vmap`` (the ``vmap`` engine), and the
padded positions of one sample never influence its logits.

Example:
    >>> import torch
    >>> ids = torch.tensor([[5, 6, 7], [8, 9, 0]])
    >>> mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    >>> pack_inputs(ids, mask).shape
    torch.Size([2, 2, 3])
    >>> padding_bias(mask, torch.float32)[1, 0, 0]
    tensor([ 0.0000e+00,  0.0000e+00, -3.4028e+38])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from securetrain.errors import DataError, ModelError


def pack_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Token ids ``(B, L)`` and padding mask ``(B, L)`` (1 = token, 0 = padding) as one ``(B, 2, L)`` tensor."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise DataError(f"input_ids must be a (batch, length) tensor, got {_shape(input_ids)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
        raise DataError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got {_shape(attention_mask)}"
        )
    if bool(((attention_mask != 0) & (attention_mask != 1)).any()):
        raise DataError("attention_mask must hold only 0 (padding) and 1 (token)")
    return torch.stack([input_ids.long(), attention_mask.long()], dim=1)


def unpack_inputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` from ids ``(B, L)`` or a packed ``(B, 2, L)`` tensor."""
    if not isinstance(x, torch.Tensor):
        raise DataError(f"expected a tensor of token ids, got {type(x).__name__}")
    x = x.long()
    if x.dim() == 2:
        return x, torch.ones_like(x)
    if x.dim() == 3 and x.shape[1] == 2:
        return x[:, 0], x[:, 1]
    raise DataError(
        f"expected token ids (batch, length) or ids and padding mask packed as (batch, 2, length), "
        f"got shape {tuple(x.shape)}; build the inputs with securetrain.hf.pack_inputs"
    )


def padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive attention mask ``(B, 1, 1, L)``: 0 for tokens, the lowest ``dtype`` value for padding."""
    bias = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
    return bias.masked_fill(attention_mask == 0, torch.finfo(dtype).min)[:, None, None, :]


def output_logits(output: Any) -> torch.Tensor:
    """The logits of a model's output: a tensor as it is, a ``ModelOutput`` (or mapping) by its ``logits``."""
    if isinstance(output, torch.Tensor):
        return output
    logits = output.get("logits") if isinstance(output, Mapping) else None
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ModelError(
        f"the model returned {type(output).__name__} without logits; a classifier must return a tensor or a "
        "transformers ModelOutput with a 'logits' field"
    )


class SequenceClassifier(nn.Module):
    """A ``transformers`` sequence classifier (or a peft model around one) as ``model(x) -> logits``.

    Args:
        model: the classifier, e.g. ``AutoModelForSequenceClassification.from_pretrained(path)``
            or the result of :func:`securetrain.hf.prepare_finetuning`.
        additive_mask: pass the padding mask as an additive 4-D mask (default; keeps the
            forward free of branches on the mask so every per-sample engine works) or, with
            ``False``, as the usual 2-D 0/1 mask (for architectures that accept only that).

    The wrapped model is ``self.model``; its parameters (and their ``requires_grad``) are
    this module's. ``x`` may be of any numeric dtype (it is cast to ``long``).
    """

    def __init__(self, model: nn.Module, *, additive_mask: bool = True) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ModelError(f"SequenceClassifier wraps an nn.Module, got {type(model).__name__}")
        self.model = model
        self.additive_mask = bool(additive_mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_ids, mask = unpack_inputs(x)
        if self.additive_mask:
            dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)
            return output_logits(self.model(input_ids=input_ids, attention_mask=padding_bias(mask, dtype)))
        return output_logits(self.model(input_ids=input_ids, attention_mask=mask))


def _shape(t: object) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


__all__ = ["SequenceClassifier", "output_logits", "pack_inputs", "padding_bias", "unpack_inputs"]
