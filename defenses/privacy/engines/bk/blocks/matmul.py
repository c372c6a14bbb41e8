"""Matrix-product block: a weight ``W`` ``(O, K)`` applied at ``L`` positions of each sample.

Sample ``i``'s gradient is ``G_i A_i^T`` with ``A_i`` its inputs (``K x L``) and ``G_i``
its output gradients (``O x L``). Its norm is computed by materialising it (``O*K``
numbers per sample) or by ghost norms ``<A_i^T A_i, G_i^T G_i>`` (``L*L`` numbers per
sample), as :func:`~defenses.privacy.engines.bk.chooser.choose_mode` decides; with one
position it is an outer product. The clipped sum is one product of ``G * c`` with ``A``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines.bk.blocks.matmul import MatmulBlock
    >>> layer = nn.Linear(3, 2)
    >>> A, G = torch.randn(4, 3, 5), torch.randn(4, 2, 5)  # 4 samples, 5 positions
    >>> ghost = MatmulBlock(layer.weight, layer.bias, A, G, "ghost-only", 0)
    >>> mat = MatmulBlock(layer.weight, layer.bias, A, G, "materialize", 0)
    >>> ghost.mode, mat.mode
    ('ghost', 'mat')
    >>> torch.allclose(ghost.sq_norms(), mat.sq_norms(), atol=1e-5)
    True
"""

from __future__ import annotations

import torch
from torch import nn

from defenses.privacy.engines.bk.blocks.base import (
    Block,
    Mode,
    ParamGrads,
    plus,
    sq_rows,
)
from defenses.privacy.engines.bk.chooser import NormCost, Policy, choose_mode
from defenses.privacy.engines.bk.workspace import Workspace


class MatmulBlock(Block):
    """``W`` of shape ``(O, K)`` (any trailing shape that flattens to it) and an optional bias ``(O,)``.

    ``A``: ``(B, K, L)`` inputs, ``G``: ``(B, O, L)`` output gradients. ``workspace``
    (optional) keeps the materialised per-sample gradients' memory from step to step.
    """

    def __init__(
        self,
        weight: nn.Parameter | None,
        bias: nn.Parameter | None,
        A: torch.Tensor,
        G: torch.Tensor,
        policy: Policy,
        max_bytes: int,
        workspace: Workspace | None = None,
    ) -> None:
        self.weight, self.bias, self.A, self.G = weight, bias, A, G
        self.workspace = workspace
        B, K, L = A.shape
        O = G.shape[1]
        self.dims = (B, O, K, L)
        self.mode: Mode = (
            "outer" if L == 1 else choose_mode(NormCost.matmul(B, O, K, L), policy, max_bytes, A.element_size())
        )
        self._gs: torch.Tensor | None = None
        self._gb: torch.Tensor | None = None

    def _bias_grads(self) -> torch.Tensor:
        if self._gb is None:
            self._gb = self.G.sum(2)  # (B, O)
        return self._gb

    def _per_sample_weight(self) -> torch.Tensor:
        if self._gs is None:
            B, O, K, _ = self.dims
            if self.workspace is not None:
                out = self.workspace.buffer("gs", (B, O, K), self.G)
                self._gs = torch.bmm(self.G, self.A.transpose(1, 2), out=out)  # (B, O, K)
            else:
                self._gs = torch.bmm(self.G, self.A.transpose(1, 2))
        return self._gs

    def sq_norms(self) -> torch.Tensor:
        A, G = self.A, self.G
        total: torch.Tensor | None = None
        if self.mode == "outer":
            g2 = sq_rows(G.squeeze(2))
            if self.weight is not None:
                total = g2 * sq_rows(A.squeeze(2))
            if self.bias is not None:
                total = plus(total, g2)
            assert total is not None
            return total
        if self.weight is not None:
            if self.mode == "mat":
                total = sq_rows(self._per_sample_weight().flatten(1))
            else:
                aa = torch.bmm(A.transpose(1, 2), A)
                gg = torch.bmm(G.transpose(1, 2), G)
                total = (aa * gg).flatten(1).sum(1).clamp_(min=0)
        if self.bias is not None:
            total = plus(total, sq_rows(self._bias_grads()))
        assert total is not None
        return total

    def add_weighted(self, w: torch.Tensor, out: ParamGrads) -> None:
        A, G = self.A, self.G
        B, O, K, _ = self.dims
        if self.weight is not None:
            ow = out[self.weight].view(O, K)
            if self.mode == "outer":
                ow.addmm_((G.squeeze(2) * w[:, None]).t(), A.squeeze(2))
            elif self.mode == "mat":
                ow.view(-1).addmv_(self._per_sample_weight().reshape(B, O * K).t(), w)
            else:
                ow.add_(torch.einsum("bol,bkl->ok", G * w[:, None, None], A))
        if self.bias is not None:
            out[self.bias].addmv_(self._bias_grads().t(), w)

    def implied(self) -> ParamGrads:
        res: ParamGrads = {}
        if self.weight is not None:
            res[self.weight] = torch.einsum("bol,bkl->ok", self.G, self.A).reshape(self.weight.shape)
        if self.bias is not None:
            res[self.bias] = self.G.sum((0, 2))
        return res

    def materialize(self) -> ParamGrads:
        B = self.dims[0]
        res: ParamGrads = {}
        if self.weight is not None:
            res[self.weight] = torch.bmm(self.G, self.A.transpose(1, 2)).reshape(B, *self.weight.shape)
        if self.bias is not None:
            res[self.bias] = self.G.sum(2)
        return res
