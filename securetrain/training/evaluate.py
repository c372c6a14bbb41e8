"""Evaluation helpers that never leave the model in the wrong mode."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from securetrain.modes import eval_mode, model_device


def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on ``x``, computed in eval mode without gradients.

    Example:
        >>> import torch
        >>> predict_logits(torch.nn.Linear(3, 2), torch.zeros(5, 3)).shape
        torch.Size([5, 2])
    """
    device = model_device(model)
    outs = []
    with eval_mode(model), torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            outs.append(model(x[i : i + batch_size].to(device)).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``(x, y)``.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(2, 2)
        >>> sorted(evaluate(m, torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)))
        ['accuracy', 'loss']
    """
    logits = predict_logits(model, x, batch_size)
    return {
        "accuracy": float((logits.argmax(1) == y).float().mean()),
        "loss": float(F.cross_entropy(logits, y)),
    }
