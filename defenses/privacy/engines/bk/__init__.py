"""Book-keeping per-sample clipping: norms from activations and output gradients.

For a layer ``y = W a`` applied at ``L`` positions (time steps, pixels, repeated calls),
sample ``i``'s gradient is ``G_i A_i^T`` with ``A_i`` the inputs (``K x L``) and ``G_i`` the
output gradients (``O x L``). DP-SGD needs only its norm and the clipped sum
``sum_i c_i G_i A_i^T``. The norm is computed either by *materialising* ``G_i A_i^T``
(``O*K`` numbers per sample) or by the *ghost* identity
``||G_i A_i^T||^2 = <A_i^T A_i, G_i^T G_i>`` (``L*L`` numbers per sample), whichever is
cheaper (Li et al. 2021, Bu et al. 2023); the clipped sum is one matrix product of
``G * c`` with ``A``. Nothing runs a second backward pass and, for ``nn.Linear`` on
``(batch, features)`` inputs, no per-sample gradient is ever formed.

Supported layers: ``nn.Linear`` (any ``(batch, ..., features)`` input, Opacus's
``RNNLinear`` in ``DPLSTM`` included), ``nn.Conv1d`` / ``nn.Conv2d`` (``groups=1``, zero
padding), ``nn.LayerNorm``, ``nn.GroupNorm`` and ``nn.Embedding``. Add a layer with
:func:`register_layer`. Frozen parameters (``requires_grad=False``) are left alone, and a
module whose trained parameters all sit in children (peft's LoRA layer: a frozen base
layer with trained ``lora_A`` / ``lora_B`` linears) is handled through those children.

Where the materialised per-sample gradients are small (convolutions: ``B*O*C*kh*kw``
numbers, formed by one grouped convolution whose groups are the samples; normalisation
layers: ``B`` times the parameters), a layer forms them as soon as its output gradient
arrives (:meth:`Layer.reduce`) and the gradient is not kept, so a step's peak memory stays
close to a non-private step's.

The package, one concept per module:

=================  ======================================================================
``engine``         :class:`BKEngine` / :class:`GhostEngine`: attach, record, collect
``wrapper``        :class:`BKModule`: keeps autograd from computing batch gradients
``capture``        :class:`Capture`: one recorded call (kept input, output gradient)
``grads``          :class:`BKGrads`: the blocks of a step, per group of samples
``chooser``        :func:`choose_mode`: materialised gradients or ghost norms, per layer
``blocks``         :class:`Block` s: one layer's per-sample norms and clipped sums
``layer``          :class:`Layer`: turns a module's calls into a block
``registry``       :data:`BK_LAYERS`, :func:`register_layer`, :func:`layer_for`
``linear`` ...     one module per layer family: ``linear``, ``conv``, ``norm``, ``embedding``
=================  ======================================================================

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk import BKEngine
    >>> engine = BKEngine()
    >>> model = engine.attach(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    >>> x = torch.randn(5, 3)
    >>> model(x).sum().div(5).backward()
    >>> engine.collect().sq_norms().shape
    torch.Size([5])
"""

from __future__ import annotations

from defenses.privacy.engines.bk.blocks import (
    Block,
    Call,
    ConvBlock,
    ConvGeometry,
    EmbeddingBlock,
    MatmulBlock,
    OuterBlock,
    PerSampleBlock,
)
from defenses.privacy.engines.bk.capture import Capture
from defenses.privacy.engines.bk.chooser import (
    DEFAULT_MAX_MATERIALIZE_BYTES,
    POLICIES,
    NormCost,
    Policy,
    choose_mode,
)
from defenses.privacy.engines.bk.conv import ConvLayer
from defenses.privacy.engines.bk.embedding import EmbeddingLayer
from defenses.privacy.engines.bk.engine import BKEngine, GhostEngine
from defenses.privacy.engines.bk.grads import BKGrads, BlockGroup
from defenses.privacy.engines.bk.layer import Layer
from defenses.privacy.engines.bk.linear import LinearLayer
from defenses.privacy.engines.bk.norm import (
    AffineNormLayer,
    GroupNormLayer,
    LayerNormLayer,
)
from defenses.privacy.engines.bk.registry import (
    BK_LAYERS,
    layer_for,
    layer_key,
    register_layer,
)
from defenses.privacy.engines.bk.workspace import Workspace
from defenses.privacy.engines.bk.wrapper import BKModule
from securetrain.errors import EngineUnsupported

__all__ = [
    "BK_LAYERS",
    "DEFAULT_MAX_MATERIALIZE_BYTES",
    "POLICIES",
    "AffineNormLayer",
    "BKEngine",
    "BKGrads",
    "BKModule",
    "Block",
    "BlockGroup",
    "Call",
    "Capture",
    "ConvBlock",
    "ConvGeometry",
    "ConvLayer",
    "EmbeddingBlock",
    "EmbeddingLayer",
    "EngineUnsupported",
    "GhostEngine",
    "GroupNormLayer",
    "Layer",
    "LayerNormLayer",
    "LinearLayer",
    "MatmulBlock",
    "NormCost",
    "OuterBlock",
    "PerSampleBlock",
    "Policy",
    "Workspace",
    "choose_mode",
    "layer_for",
    "layer_key",
    "register_layer",
]
