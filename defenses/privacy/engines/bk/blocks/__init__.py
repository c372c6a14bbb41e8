"""Blocks: one layer's per-sample gradients for one group of samples, without a second backward.

=================  ====================================================================
``OuterBlock``     ``nn.Linear`` on ``(B, features)``: norms ``|g_i| |a_i|``, nothing per-sample
``MatmulBlock``    a weight applied at ``L`` positions: materialised or ghost norms
``ConvBlock``      2-d convolutions: materialised (strided patches) or ghost (pixel Gram)
``PerSampleBlock`` small per-sample gradients formed directly (normalisation layers)
``EmbeddingBlock`` ghost norms from the looked-up indices
=================  ====================================================================

Example:
    >>> from defenses.privacy.engines.bk.blocks import Block, MatmulBlock
    >>> issubclass(MatmulBlock, Block)
    True
"""

from __future__ import annotations

from defenses.privacy.engines.bk.blocks.base import (
    Block,
    Call,
    Mode,
    ParamGrads,
    sq_rows,
)
from defenses.privacy.engines.bk.blocks.conv import ConvBlock
from defenses.privacy.engines.bk.blocks.embedding import EmbeddingBlock
from defenses.privacy.engines.bk.blocks.matmul import MatmulBlock
from defenses.privacy.engines.bk.blocks.outer import OuterBlock
from defenses.privacy.engines.bk.blocks.patches import ConvGeometry
from defenses.privacy.engines.bk.blocks.per_sample import PerSampleBlock

__all__ = [
    "Block",
    "Call",
    "ConvBlock",
    "ConvGeometry",
    "EmbeddingBlock",
    "MatmulBlock",
    "Mode",
    "OuterBlock",
    "ParamGrads",
    "PerSampleBlock",
    "sq_rows",
]
