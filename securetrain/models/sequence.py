"""Sequence classifiers for inputs shaped ``(batch, seq_len, features)``.

Both are built only from layers that Opacus computes per-sample gradients for:
the LSTM uses Opacus's ``DPLSTM`` (a drop-in ``nn.LSTM``), the transformer is
written with ``nn.Linear``/``nn.LayerNorm``/``nn.Embedding`` attention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from securetrain.errors import ConfigurationError
from securetrain.models._shapes import check_width, sequence_shape


class LSTMClassifier(nn.Module):
    """LSTM over the sequence; the last hidden state feeds a linear head.

    Example:
        >>> import torch
        >>> LSTMClassifier(input_shape=(16, 4), num_classes=4)(torch.zeros(2, 16, 4)).shape
        torch.Size([2, 4])
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: int = 32, num_layers: int = 1) -> None:
        super().__init__()
        hidden = check_width("lstm", "hidden", hidden)
        num_layers = check_width("lstm", "num_layers", num_layers)
        from opacus.layers import DPLSTM  # per-sample-gradient friendly drop-in for nn.LSTM

        _, features = sequence_shape("lstm", input_shape)
        self.input_shape = tuple(input_shape)
        self.lstm = DPLSTM(features, hidden, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        logits: torch.Tensor = self.head(out[:, -1, :])
        return logits


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        out = (att @ v).transpose(1, 2).reshape(b, t, d)
        projected: torch.Tensor = self.proj(out)
        return projected


class _EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        result: torch.Tensor = x + self.mlp(self.norm2(x))
        return result


class TransformerClassifier(nn.Module):
    """Linear embedding + learned positions, pre-norm encoder blocks, a linear head on all tokens.

    Example:
        >>> import torch
        >>> TransformerClassifier(input_shape=(16, 4), num_classes=4)(torch.zeros(2, 16, 4)).shape
        torch.Size([2, 4])
    """

    positions: torch.Tensor  # a non-persistent buffer, registered in __init__

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        dim: int = 32,
        heads: int = 4,
        depth: int = 2,
    ) -> None:
        super().__init__()
        dim = check_width("transformer", "dim", dim)
        heads = check_width("transformer", "heads", heads)
        depth = check_width("transformer", "depth", depth)
        if dim % heads:
            raise ConfigurationError(
                f"model 'transformer': option 'dim' ({dim}) must be divisible by 'heads' ({heads}), e.g. dim={heads * max(1, dim // heads)}"
            )
        seq_len, features = sequence_shape("transformer", input_shape)
        self.input_shape = tuple(input_shape)
        self.embed = nn.Linear(features, dim)
        self.pos = nn.Embedding(seq_len, dim)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.blocks = nn.Sequential(*[_EncoderBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(seq_len * dim, num_classes)
        self.register_buffer("positions", torch.arange(seq_len), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Indexed per sample (not broadcast) so that per-sample-gradient engines see the batch.
        pos = self.pos(self.positions[: x.shape[1]].unsqueeze(0).expand(x.shape[0], -1))
        h = self.blocks(self.embed(x) + pos)
        logits: torch.Tensor = self.head(self.norm(h).flatten(1))
        return logits
