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
:func:`register_layer`.

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

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from defenses.privacy.engines.base import (
    Engine,
    EngineUnsupported,
    EmptyGrads,
    HookToggle,
    PerSampleGrads,
    StepTap,
    trainable_leaf_modules,
)

DEFAULT_MAX_MATERIALIZE_BYTES = 256 * 2**20
"""Above this many bytes of per-sample gradients for one layer, ``bk`` uses ghost norms."""


# --------------------------------------------------------------------------- blocks


def _sq(x: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of each row of a ``(B, n)`` tensor."""
    return torch.linalg.vecdot(x, x)


class Block(ABC):
    """One layer's contribution to one group of samples (raw: gradients carry the 1/B of a mean loss)."""

    @abstractmethod
    def sq_norms(self) -> torch.Tensor:
        """Raw squared per-sample norms, summed over the layer's parameters, ``(B,)``."""

    @abstractmethod
    def add_weighted(self, w: torch.Tensor, out: dict[nn.Parameter, torch.Tensor]) -> None:
        """``out[p] += sum_i w_i * raw_grad_i(p)``."""

    @abstractmethod
    def implied(self) -> dict[nn.Parameter, torch.Tensor]:
        """``sum_i raw_grad_i(p)``: what autograd puts in ``p.grad``."""

    @abstractmethod
    def materialize(self) -> dict[nn.Parameter, torch.Tensor]:
        """Raw per-sample gradients ``(B, *p.shape)``."""


class OuterBlock(Block):
    """``nn.Linear`` on ``(B, features)`` inputs, called once: sample ``i``'s weight gradient is
    the outer product ``g_i a_i^T``, whose norm is ``|g_i| |a_i|``; nothing per-sample is formed."""

    mode = "outer"

    def __init__(self, weight: nn.Parameter | None, bias: nn.Parameter | None, a: torch.Tensor, g: torch.Tensor) -> None:
        self.weight, self.bias, self.a, self.g = weight, bias, a, g

    def sq_norms(self) -> torch.Tensor:
        g2 = _sq(self.g)
        if self.weight is None:
            return g2
        total = g2 * _sq(self.a)
        return total + g2 if self.bias is not None else total

    def add_weighted(self, w: torch.Tensor, out: dict[nn.Parameter, torch.Tensor]) -> None:
        if self.weight is not None:
            out[self.weight].addmm_(self.g.t(), self.a * w[:, None])
        if self.bias is not None:
            out[self.bias].addmv_(self.g.t(), w)

    def implied(self) -> dict[nn.Parameter, torch.Tensor]:
        res: dict[nn.Parameter, torch.Tensor] = {}
        if self.weight is not None:
            res[self.weight] = self.g.t() @ self.a
        if self.bias is not None:
            res[self.bias] = self.g.sum(0)
        return res

    def materialize(self) -> dict[nn.Parameter, torch.Tensor]:
        res: dict[nn.Parameter, torch.Tensor] = {}
        if self.weight is not None:
            res[self.weight] = self.g[:, :, None] * self.a[:, None, :]
        if self.bias is not None:
            res[self.bias] = self.g
        return res


class MatmulBlock(Block):
    """``W`` of shape ``(O, K)`` (any trailing shape that flattens to it) and an optional bias ``(O,)``.

    ``A``: ``(B, K, L)`` inputs, ``G``: ``(B, O, L)`` output gradients.
    """

    def __init__(
        self,
        weight: nn.Parameter | None,
        bias: nn.Parameter | None,
        A: torch.Tensor,
        G: torch.Tensor,
        policy: str,
        max_bytes: int,
        layer: Layer | None = None,
    ) -> None:
        self.weight, self.bias, self.A, self.G = weight, bias, A, G
        self.layer = layer
        B, K, L = A.shape
        O = G.shape[1]
        self.dims = (B, O, K, L)
        mat_elems, ghost_elems = B * O * K, 2 * B * L * L
        if L == 1:
            self.mode = "outer"
        elif policy == "materialize":
            self.mode = "mat"
        elif policy == "ghost-only":
            self.mode = "ghost"
        elif policy == "ghost" or mat_elems * A.element_size() > max_bytes:
            self.mode = "ghost" if ghost_elems < mat_elems else "mat"  # the one that needs less memory
        else:  # measured on CPU: ghost pays off only when it is much cheaper on paper
            self.mode = "ghost" if 4 * L * L * (O + K) < O * K * L else "mat"
        self._gs: torch.Tensor | None = None
        self._gb: torch.Tensor | None = None

    def _bias_grads(self) -> torch.Tensor:
        if self._gb is None:
            self._gb = self.G.sum(2)  # (B, O)
        return self._gb

    def _per_sample_weight(self) -> torch.Tensor:
        if self._gs is None:
            B, O, K, _ = self.dims
            if self.layer is not None:
                out = self.layer.buffer("gs", (B, O, K), self.G)
                self._gs = torch.bmm(self.G, self.A.transpose(1, 2), out=out)  # (B, O, K)
            else:
                self._gs = torch.bmm(self.G, self.A.transpose(1, 2))
        return self._gs

    def sq_norms(self) -> torch.Tensor:
        A, G = self.A, self.G
        total: torch.Tensor | None = None
        if self.mode == "outer":
            g2 = _sq(G.squeeze(2))
            if self.weight is not None:
                total = g2 * _sq(A.squeeze(2))
            if self.bias is not None:
                total = g2 if total is None else total + g2
            assert total is not None
            return total
        if self.weight is not None:
            if self.mode == "mat":
                total = _sq(self._per_sample_weight().flatten(1))
            else:
                aa = torch.bmm(A.transpose(1, 2), A)
                gg = torch.bmm(G.transpose(1, 2), G)
                total = (aa * gg).flatten(1).sum(1).clamp_(min=0)
        if self.bias is not None:
            gb2 = _sq(self._bias_grads())
            total = gb2 if total is None else total + gb2
        assert total is not None
        return total

    def add_weighted(self, w: torch.Tensor, out: dict[nn.Parameter, torch.Tensor]) -> None:
        A, G = self.A, self.G
        B, O, K, L = self.dims
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

    def implied(self) -> dict[nn.Parameter, torch.Tensor]:
        A, G = self.A, self.G
        B, O, K, L = self.dims
        res: dict[nn.Parameter, torch.Tensor] = {}
        if self.weight is not None:
            res[self.weight] = torch.einsum("bol,bkl->ok", G, A).reshape(self.weight.shape)
        if self.bias is not None:
            res[self.bias] = G.sum((0, 2))
        return res

    def materialize(self) -> dict[nn.Parameter, torch.Tensor]:
        B = self.dims[0]
        res: dict[nn.Parameter, torch.Tensor] = {}
        if self.weight is not None:
            res[self.weight] = torch.bmm(self.G, self.A.transpose(1, 2)).reshape(B, *self.weight.shape)
        if self.bias is not None:
            res[self.bias] = self.G.sum(2)
        return res


class PerSampleBlock(Block):
    """Small per-sample gradients formed directly (normalisation layers)."""

    def __init__(self, grads: dict[nn.Parameter, torch.Tensor]) -> None:
        self.grads = grads

    def sq_norms(self) -> torch.Tensor:
        total = None
        for g in self.grads.values():
            n = _sq(g.flatten(1))
            total = n if total is None else total + n
        assert total is not None
        return total

    def add_weighted(self, w: torch.Tensor, out: dict[nn.Parameter, torch.Tensor]) -> None:
        for p, g in self.grads.items():
            out[p].view(-1).addmv_(g.flatten(1).t(), w)

    def implied(self) -> dict[nn.Parameter, torch.Tensor]:
        return {p: g.sum(0) for p, g in self.grads.items()}

    def materialize(self) -> dict[nn.Parameter, torch.Tensor]:
        return dict(self.grads)


class EmbeddingBlock(Block):
    """``nn.Embedding``: indices ``I`` ``(B, L)``, output gradients ``G`` ``(B, L, D)``; ghost norms."""

    def __init__(self, weight: nn.Parameter, I: torch.Tensor, G: torch.Tensor) -> None:
        self.weight, self.I, self.G = weight, I, G

    def sq_norms(self) -> torch.Tensor:
        I, G = self.I, self.G
        if I.shape[1] == 1:
            return _sq(G.flatten(1))
        same = (I[:, :, None] == I[:, None, :]).to(G.dtype)
        return (same * torch.bmm(G, G.transpose(1, 2))).flatten(1).sum(1).clamp_(min=0)

    def add_weighted(self, w: torch.Tensor, out: dict[nn.Parameter, torch.Tensor]) -> None:
        D = self.G.shape[2]
        out[self.weight].index_add_(0, self.I.reshape(-1), (self.G * w[:, None, None]).reshape(-1, D))

    def implied(self) -> dict[nn.Parameter, torch.Tensor]:
        D = self.G.shape[2]
        z = torch.zeros_like(self.weight)
        return {self.weight: z.index_add_(0, self.I.reshape(-1), self.G.reshape(-1, D))}

    def materialize(self) -> dict[nn.Parameter, torch.Tensor]:
        B, L, D = self.G.shape
        V = self.weight.shape[0]
        idx = (self.I + torch.arange(B, device=self.I.device)[:, None] * V).reshape(-1)
        z = torch.zeros(B * V, D, dtype=self.G.dtype, device=self.G.device)
        return {self.weight: z.index_add_(0, idx, self.G.reshape(-1, D)).view(B, V, D)}


# --------------------------------------------------------------------------- layers


class Layer(ABC):
    """How ``bk`` turns one module's recorded (input, output-gradient) pairs into a :class:`Block`."""

    def __init__(self, module: nn.Module, name: str) -> None:
        self.module = module
        self.name = name
        self._pool: dict[str, torch.Tensor] = {}
        self._taken: set[str] = set()

    @staticmethod
    def check(module: nn.Module) -> str | None:
        """Why this module cannot be handled (``None`` when it can)."""
        return None

    def buffer(self, key: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """A work tensor kept from step to step (large fresh allocations cost page faults on CPU).

        Handed out once per step (:meth:`release` at the end of the step); a second request
        in the same step (accumulated groups, several calls) gets a fresh tensor.
        """
        buf = self._pool.get(key)
        if key in self._taken:
            return torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
        if buf is None or tuple(buf.shape) != tuple(shape) or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
            self._pool[key] = buf
        self._taken.add(key)
        return buf

    def release(self) -> None:
        """The step is over: the work tensors may be handed out again."""
        self._taken.clear()

    def prepare(self, a: torch.Tensor) -> torch.Tensor:
        """What to keep of the input at forward time (default: the input itself, detached)."""
        return a.detach()

    @abstractmethod
    def block(self, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], policy: str, max_bytes: int) -> Block:
        """Combine every call of the module in one group of samples."""

    def _param(self, attr: str) -> nn.Parameter | None:
        p = getattr(self.module, attr, None)
        return p if isinstance(p, nn.Parameter) and p.requires_grad else None


class LinearLayer(Layer):
    def block(self, pairs, policy, max_bytes):  # type: ignore[no-untyped-def]
        m = self.module
        B = pairs[0][0].shape[0]
        if len(pairs) == 1 and pairs[0][0].dim() == 2:
            a, g = pairs[0]
            return OuterBlock(self._param("weight"), self._param("bias"), a, g)
        else:
            A = torch.cat([a.reshape(B, -1, m.in_features) for a, _ in pairs], 1).transpose(1, 2)
            G = torch.cat([g.reshape(B, -1, m.out_features) for _, g in pairs], 1).transpose(1, 2)
        return MatmulBlock(self._param("weight"), self._param("bias"), A, G, policy, max_bytes, self)


def _same_padding(kernel: Sequence[int], dilation: Sequence[int]) -> list[tuple[int, int]]:
    out = []
    for k, d in zip(kernel, dilation):
        total = d * (k - 1)
        out.append((total // 2, total - total // 2))
    return out


class ConvBlock(Block):
    """``nn.Conv1d`` / ``nn.Conv2d`` (as 2-d): inputs ``a`` ``(B, C, H, W)`` zero-padded, output gradients ``g``.

    Norms: *materialised* (patches unfolded by a strided view, one batched product per
    sample) or *ghost*, where the Gram matrix of each sample's patches is assembled from
    the Gram matrix of its padded pixels (one batched product over channels, then one
    shifted window per kernel offset), so no patch matrix is ever formed. Clipped sums
    are convolution weight-gradients of the re-weighted output gradients.
    """

    def __init__(self, layer: ConvLayer, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], policy: str, max_bytes: int) -> None:
        m = layer.module
        self.layer = layer
        self.weight, self.bias = layer._param("weight"), layer._param("bias")
        self.pairs = [(a, g.reshape(a.shape[0], m.out_channels, *g.shape[-2:])) for a, g in pairs]
        a0, g0 = self.pairs[0]
        B, C = a0.shape[:2]
        (kh, kw) = layer.geometry()[0]
        oh, ow = g0.shape[-2:]
        Hp, Wp = layer.padded_hw(a0)
        L, K, O = oh * ow * len(self.pairs), C * kh * kw, m.out_channels
        # Measured on CPU: batched products with small inner sizes and the extra convolution
        # backward make ghost norms slower unless they are much cheaper on paper.
        mat_cost = O * K * L + K * L
        ghost_cost = (Hp * Wp) ** 2 * C + kh * kw * L * L + L * L * O + O * K * L
        mat_elems = B * (O * K + K * L)  # per-sample gradients and patches
        ghost_elems = B * ((Hp * Wp) ** 2 + 2 * L * L)  # pixel Gram, patch Gram, output-gradient Gram
        if len(self.pairs) > 1 or policy == "materialize":
            self.mode = "mat"
        elif policy == "ghost-only":
            self.mode = "ghost"
        elif policy == "ghost" or mat_elems * a0.element_size() > max_bytes:
            self.mode = "ghost" if ghost_elems < mat_elems else "mat"  # the one that needs less memory
        else:  # measured on CPU: ghost pays off only when it is much cheaper on paper
            self.mode = "ghost" if 4 * ghost_cost < mat_cost else "mat"
        self.B, self.O = B, O
        self._gs: torch.Tensor | None = None
        self._gb: torch.Tensor | None = None

    def _bias_grads(self) -> torch.Tensor:
        if self._gb is None:
            gb = None
            for _, g in self.pairs:
                t = g.sum((2, 3))
                gb = t if gb is None else gb + t
            self._gb = gb
        assert self._gb is not None
        return self._gb

    def _per_sample_weight(self) -> torch.Tensor:
        if self._gs is None:
            gs = None
            for a, g in self.pairs:
                A = self.layer.unfold(a)
                if gs is None:
                    out = self.layer.buffer("gs", (self.B, self.O, A.shape[1]), g)
                    gs = torch.bmm(g.reshape(self.B, self.O, -1), A.transpose(1, 2), out=out)
                else:
                    gs = gs + torch.bmm(g.reshape(self.B, self.O, -1), A.transpose(1, 2))
            self._gs = gs
        assert self._gs is not None
        return self._gs

    def _weight_grad(self, g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (dh, dw), _ = self.layer.geometry()
        sym = self.layer.symmetric_padding()
        if sym is None:
            a, sym = self.layer.pad(a), (0, 0)
        weight = self.layer.module.weight.detach().view(self.layer.weight2d_shape())
        return torch.ops.aten.convolution_backward(
            g, a, weight, None, [sh, sw], list(sym), [dh, dw], False, [0, 0], 1, [False, True, False]
        )[1]

    def sq_norms(self) -> torch.Tensor:
        total: torch.Tensor | None = None
        if self.weight is not None:
            if self.mode == "mat":
                total = _sq(self._per_sample_weight().flatten(1))
            else:
                a, g = self.pairs[0]
                aa = self.layer.patch_gram(self.layer.pad(a))
                G = g.reshape(self.B, self.O, -1)
                gg = torch.bmm(G.transpose(1, 2), G)
                total = (aa * gg).flatten(1).sum(1).clamp_(min=0)
        if self.bias is not None:
            gb2 = _sq(self._bias_grads())
            total = gb2 if total is None else total + gb2
        assert total is not None
        return total

    def add_weighted(self, w: torch.Tensor, out: dict[nn.Parameter, torch.Tensor]) -> None:
        if self.weight is not None:
            ow = out[self.weight]
            if self.mode == "mat":
                ow.view(-1).addmv_(self._per_sample_weight().reshape(self.B, -1).t(), w)
            else:
                for a, g in self.pairs:
                    ow.add_(self._weight_grad(g * w[:, None, None, None], a).view_as(ow))
        if self.bias is not None:
            out[self.bias].addmv_(self._bias_grads().t(), w)

    def implied(self) -> dict[nn.Parameter, torch.Tensor]:
        res: dict[nn.Parameter, torch.Tensor] = {}
        if self.weight is not None:
            wg = None
            for a, g in self.pairs:
                t = self._weight_grad(g, a)
                wg = t if wg is None else wg + t
            assert wg is not None
            res[self.weight] = wg.reshape(self.weight.shape)
        if self.bias is not None:
            res[self.bias] = self._bias_grads().sum(0)
        return res

    def materialize(self) -> dict[nn.Parameter, torch.Tensor]:
        res: dict[nn.Parameter, torch.Tensor] = {}
        if self.weight is not None:
            res[self.weight] = self._per_sample_weight().reshape(self.B, *self.weight.shape).clone()
        if self.bias is not None:
            res[self.bias] = self._bias_grads()
        return res


class ConvLayer(Layer):
    """``nn.Conv1d`` / ``nn.Conv2d`` with ``groups=1`` and zero padding (see :class:`ConvBlock`)."""

    @staticmethod
    def check(module: nn.Module) -> str | None:
        if module.groups != 1:
            return f"groups={module.groups} (only groups=1 is supported by bk)"
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r} (only 'zeros' is supported by bk)"
        return None

    def __init__(self, module: nn.Module, name: str) -> None:
        super().__init__(module, name)
        self._geometry = self._compute_geometry()

    def _compute_geometry(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], list[tuple[int, int]]]:
        m = self.module
        two_d = isinstance(m, nn.Conv2d)
        k = tuple(m.kernel_size) if two_d else (1, m.kernel_size[0])
        s = tuple(m.stride) if two_d else (1, m.stride[0])
        d = tuple(m.dilation) if two_d else (1, m.dilation[0])
        if isinstance(m.padding, str):
            pads = [(0, 0), (0, 0)] if m.padding == "valid" else _same_padding(k, d)
        else:
            p = tuple(m.padding) if two_d else (0, m.padding[0])
            pads = [(p[0], p[0]), (p[1], p[1])]
        return k, s, d, pads  # type: ignore[return-value]

    def geometry(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], list[tuple[int, int]]]:
        """``(kernel, stride, dilation, [(top, bottom), (left, right)] padding)`` in 2-d."""
        return self._geometry

    def weight2d_shape(self) -> list[int]:
        (kh, kw) = self._geometry[0]
        m = self.module
        return [m.out_channels, m.in_channels, kh, kw]

    def prepare(self, a: torch.Tensor) -> torch.Tensor:
        """The input as a 2-d batch ``(B, C, H, W)`` (a 1-d convolution gets a height of 1)."""
        a = a.detach()
        return a.unsqueeze(-2) if isinstance(self.module, nn.Conv1d) else a

    def symmetric_padding(self) -> tuple[int, int] | None:
        """``(pad_h, pad_w)`` when padding is the same on both sides, else ``None``."""
        (pt, pb), (pl, pr) = self._geometry[3]
        return (pt, pl) if pt == pb and pl == pr else None

    def pad(self, a: torch.Tensor) -> torch.Tensor:
        (pt, pb), (pl, pr) = self._geometry[3]
        return F.pad(a, (pl, pr, pt, pb)) if (pt or pb or pl or pr) else a

    def padded_hw(self, a: torch.Tensor) -> tuple[int, int]:
        (pt, pb), (pl, pr) = self._geometry[3]
        return a.shape[-2] + pt + pb, a.shape[-1] + pl + pr

    def out_hw(self, a: torch.Tensor) -> tuple[int, int]:
        """Output height and width for a *padded* input ``a``."""
        (kh, kw), (sh, sw), (dh, dw), _ = self._geometry
        H, W = a.shape[-2:]
        return (H - dh * (kh - 1) - 1) // sh + 1, (W - dw * (kw - 1) - 1) // sw + 1

    def unfold(self, a: torch.Tensor) -> torch.Tensor:
        """Patches ``(B, C*kh*kw, L)`` of an (unpadded) input: one strided copy into a kept buffer."""
        (kh, kw), (sh, sw), (dh, dw), ((pt, pb), (pl, pr)) = self._geometry
        if pt or pb or pl or pr:
            B, C, H, W = a.shape
            padded = self.buffer("pad", (B, C, H + pt + pb, W + pl + pr), a)
            if pt:
                padded[:, :, :pt].zero_()
            if pb:
                padded[:, :, H + pt :].zero_()
            if pl:
                padded[:, :, :, :pl].zero_()
            if pr:
                padded[:, :, :, W + pl :].zero_()
            padded[:, :, pt : pt + H, pl : pl + W].copy_(a)
            a = padded
        else:
            a = a.contiguous()
        B, C = a.shape[:2]
        oh, ow = self.out_hw(a)
        st = a.stride()
        view = a.as_strided((B, C, kh, kw, oh, ow), (st[0], st[1], st[2] * dh, st[3] * dw, st[2] * sh, st[3] * sw))
        out = self.buffer("unfold", (B, C * kh * kw, oh * ow), a)
        out.view(B, C, kh, kw, oh, ow).copy_(view)
        return out

    def patch_gram(self, a: torch.Tensor) -> torch.Tensor:
        """``(B, L, L)``: inner products of every pair of a sample's patches (``a`` padded).

        From the Gram matrix of the sample's pixels ``P`` (one batched product over
        channels): ``<patch_l, patch_m> = sum over kernel offsets o of P[l + o, m + o]``,
        read as one strided view of ``P`` and summed.
        """
        (kh, kw), (sh, sw), (dh, dw), _ = self._geometry
        B, C, H, W = a.shape
        oh, ow = self.out_hw(a)
        flat = a.reshape(B, C, H * W)
        pix = torch.bmm(flat.transpose(1, 2), flat).view(B, H, W, H, W)
        st = pix.stride()
        view = pix.as_strided(
            (B, oh, ow, oh, ow, kh, kw),
            (st[0], st[1] * sh, st[2] * sw, st[3] * sh, st[4] * sw, (st[1] + st[3]) * dh, (st[2] + st[4]) * dw),
        )
        return view.sum((5, 6)).reshape(B, oh * ow, oh * ow)

    def block(self, pairs, policy, max_bytes):  # type: ignore[no-untyped-def]
        return ConvBlock(self, pairs, policy, max_bytes)


class LayerNormLayer(Layer):
    def block(self, pairs, policy, max_bytes):  # type: ignore[no-untyped-def]
        m = self.module
        ns = tuple(m.normalized_shape)
        w, b = self._param("weight"), self._param("bias")
        grads: dict[nn.Parameter, torch.Tensor] = {}
        for a, g in pairs:
            B = a.shape[0]
            reduce = tuple(range(1, a.dim() - len(ns)))
            if w is not None:
                xhat = F.layer_norm(a, ns, eps=m.eps)
                gw = (g * xhat).sum(reduce) if reduce else g * xhat
                grads[w] = grads[w] + gw if w in grads else gw
            if b is not None:
                gb = g.sum(reduce) if reduce else g
                grads[b] = grads[b] + gb if b in grads else gb
            del B
        return PerSampleBlock(grads)


class GroupNormLayer(Layer):
    def block(self, pairs, policy, max_bytes):  # type: ignore[no-untyped-def]
        m = self.module
        w, b = self._param("weight"), self._param("bias")
        grads: dict[nn.Parameter, torch.Tensor] = {}
        for a, g in pairs:
            reduce = tuple(range(2, a.dim()))
            if w is not None:
                xhat = F.group_norm(a, m.num_groups, eps=m.eps)
                gw = (g * xhat).sum(reduce) if reduce else g * xhat
                grads[w] = grads[w] + gw if w in grads else gw
            if b is not None:
                gb = g.sum(reduce) if reduce else g
                grads[b] = grads[b] + gb if b in grads else gb
        return PerSampleBlock(grads)


class EmbeddingLayer(Layer):
    @staticmethod
    def check(module: nn.Module) -> str | None:
        if module.max_norm is not None:
            return "max_norm is set (the layer rewrites its weights in forward)"
        if module.sparse:
            return "sparse=True"
        if module.scale_grad_by_freq:
            return "scale_grad_by_freq=True (the gradient depends on the whole batch)"
        return None

    def block(self, pairs, policy, max_bytes):  # type: ignore[no-untyped-def]
        m = self.module
        B = pairs[0][0].shape[0]
        I = torch.cat([a.reshape(B, -1) for a, _ in pairs], 1)
        G = torch.cat([g.reshape(B, -1, m.embedding_dim) for _, g in pairs], 1)
        if m.padding_idx is not None:
            G = G * (I != m.padding_idx).unsqueeze(-1).to(G.dtype)
        return EmbeddingBlock(m.weight, I, G)


LAYERS: dict[type[nn.Module], type[Layer]] = {
    nn.Linear: LinearLayer,
    nn.Conv1d: ConvLayer,
    nn.Conv2d: ConvLayer,
    nn.LayerNorm: LayerNormLayer,
    nn.GroupNorm: GroupNormLayer,
    nn.Embedding: EmbeddingLayer,
}
"""Layer type -> handler; subclasses of a registered type use the parent's handler."""


def register_layer(module_type: type[nn.Module]) -> Callable[[type[Layer]], type[Layer]]:
    """Register a :class:`Layer` handler for ``module_type`` (and its subclasses)."""

    def deco(handler: type[Layer]) -> type[Layer]:
        LAYERS[module_type] = handler
        return handler

    return deco


def layer_for(module: nn.Module) -> type[Layer] | None:
    """The handler for ``module``'s type (exact type first, then the nearest base class)."""
    if type(module) in LAYERS:
        return LAYERS[type(module)]
    for cls in type(module).__mro__[1:]:
        if cls in LAYERS:
            return LAYERS[cls]
    return None


# --------------------------------------------------------------------------- grads


class _Group:
    def __init__(self, batch: int, blocks: list[Block]) -> None:
        self.B = batch
        self.blocks = blocks


class BKGrads(PerSampleGrads):
    """Per-sample gradients of one or more groups of samples, kept as layer blocks."""

    def __init__(self, groups: list[_Group], params: Sequence[nn.Parameter], autograd_writes_grad: bool = True) -> None:
        self._groups = groups
        self._params = list(params)
        self._autograd_writes_grad = autograd_writes_grad
        self.batch_size = sum(g.B for g in groups)
        self.groups = len(groups)

    def sq_norms(self) -> torch.Tensor:
        parts = []
        for grp in self._groups:
            raw = None
            for blk in grp.blocks:
                n = blk.sq_norms()
                raw = n if raw is None else raw + n
            if raw is None:
                raw = torch.zeros(grp.B)
            parts.append(raw * float(grp.B * grp.B))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def add_weighted(self, weights: torch.Tensor, out: dict[nn.Parameter, torch.Tensor]) -> None:
        start = 0
        for grp in self._groups:
            w = weights[start : start + grp.B] * float(grp.B)
            start += grp.B
            for blk in grp.blocks:
                blk.add_weighted(w, out)

    def implied_grads(self) -> dict[nn.Parameter, torch.Tensor | None]:
        res: dict[nn.Parameter, torch.Tensor | None] = {p: torch.zeros_like(p) for p in self._params}
        if not self._autograd_writes_grad:  # autograd computed no batch gradient of these
            return res
        for grp in self._groups:
            for blk in grp.blocks:
                for p, g in blk.implied().items():
                    res[p] = res[p] + g  # type: ignore[operator]
        return res

    def materialize(self) -> dict[nn.Parameter, torch.Tensor]:
        parts: dict[nn.Parameter, list[torch.Tensor]] = {p: [] for p in self._params}
        for grp in self._groups:
            got: dict[nn.Parameter, torch.Tensor] = {}
            for blk in grp.blocks:
                for p, g in blk.materialize().items():
                    got[p] = got[p] + g if p in got else g
            for p in self._params:
                g = got.get(p)
                parts[p].append(g * float(grp.B) if g is not None else torch.zeros((grp.B, *p.shape), dtype=p.dtype, device=p.device))
        return {p: torch.cat(v) for p, v in parts.items()}


# --------------------------------------------------------------------------- engine


class BKModule(HookToggle):
    """The ``bk`` wrapper. With ``skip_param_grads``, a recorded forward pass runs with the
    trained parameters' ``requires_grad`` off and the (floating-point) inputs' on, so the
    backward pass computes the layers' output gradients but not the parameters' batch
    gradients, which DP-SGD replaces by its own clipped sums anyway. ``p.grad`` is then
    left to terms computed outside the per-sample path (the validity check looks for any).
    """

    def __init__(self, module: nn.Module, params: Sequence[nn.Parameter], skip_param_grads: bool) -> None:
        super().__init__(module)
        self._trained = list(params)
        self.skip_param_grads = skip_param_grads

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not (self.skip_param_grads and self.hooks_enabled and self.training and torch.is_grad_enabled()):
            return super().forward(*args, **kwargs)
        floating = [isinstance(a, torch.Tensor) and a.is_floating_point() for a in args]
        if not any(floating):
            return super().forward(*args, **kwargs)
        args = tuple(
            a.detach().requires_grad_(True) if f and not a.requires_grad else a for a, f in zip(args, floating)
        )
        for p in self._trained:
            p.requires_grad_(False)
        try:
            return super().forward(*args, **kwargs)
        finally:
            for p in self._trained:
                p.requires_grad_(True)


class BKEngine(Engine):
    """Per-sample clipping from activations and output gradients (``bk`` and ``ghost`` modes).

    ``policy``: ``"auto"`` picks, per layer, materialised per-sample gradients or ghost norms
    by speed, and the one that needs less memory when materialising would exceed
    ``max_bytes``; ``"ghost"`` always picks the one that needs less memory (memory-lean);
    ``"materialize"`` never uses ghost norms; ``"ghost-only"`` always does (for checks).
    ``skip_param_grads`` (default): autograd does not compute the parameters' batch
    gradients (see :class:`BKModule`); a model with a layer whose input does not come from
    the model's input needs ``skip_param_grads=False`` (the verification finds out).
    """

    name: ClassVar[str] = "bk"
    description: ClassVar[str] = "book-keeping: norms from activations and output gradients, one backward"

    def __init__(
        self, policy: str = "auto", max_bytes: int = DEFAULT_MAX_MATERIALIZE_BYTES, *, skip_param_grads: bool = True
    ) -> None:
        super().__init__()
        if policy not in ("auto", "ghost", "materialize", "ghost-only"):
            raise ValueError(f"policy must be auto, ghost, materialize or ghost-only, got {policy!r}")
        self.policy = policy
        self.max_bytes = int(max_bytes)
        self.skip_param_grads = bool(skip_param_grads)
        self._lost: set[str] = set()
        self._records: list[list[Any]] = []
        self._handles: list[Any] = []
        self._layers: list[Layer] = []
        self._unbatched: dict[str, tuple[int, ...]] = {}
        self.tap: StepTap | None = None

    @classmethod
    def unsupported(cls, model: nn.Module) -> dict[str, str]:
        """``{module name: reason}`` for every trainable module ``bk`` cannot handle."""
        bad: dict[str, str] = {}
        for name, m in trainable_leaf_modules(model):
            handler = layer_for(m)
            if handler is None:
                bad[name or "(root)"] = f"{type(m).__name__} has no bk handler"
                continue
            why = handler.check(m)
            if why:
                bad[name or "(root)"] = f"{type(m).__name__}: {why}"
        return bad

    def attach(self, model: nn.Module) -> nn.Module:
        bad = self.unsupported(model)
        if bad:
            raise EngineUnsupported(
                "bk cannot compute per-sample gradients of: " + "; ".join(f"{k} ({v})" for k, v in bad.items()),
                list(bad),
            )
        self.plain = model
        trained = [p for _, m in trainable_leaf_modules(model) for p in m.parameters(recurse=False) if p.requires_grad]
        wrapper = BKModule(model, trained, self.skip_param_grads)
        self.wrapped = wrapper
        self.tap = wrapper.tap
        for name, m in trainable_leaf_modules(model):
            handler = layer_for(m)
            assert handler is not None
            layer = handler(m, name)
            self._layers.append(layer)
            self._handles.append(m.register_forward_hook(self._make_hook(layer)))
        return wrapper

    def _make_hook(self, layer: Layer) -> Callable[..., None]:
        records = self._records
        unbatched = self._unbatched

        lost = self._lost

        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            tap = self.tap
            if tap is None or not tap.recording or not isinstance(output, torch.Tensor):
                return
            a = inputs[0]
            expected = tap.group_batch.get(tap.group)
            if expected is None or a.dim() == 0 or a.shape[0] != expected:
                unbatched[layer.name] = tuple(a.shape)
                return
            if not output.requires_grad:
                if self.skip_param_grads:
                    lost.add(layer.name)  # its input does not depend on the model's input
                return
            rec = [layer, layer.prepare(a), None, tap.group]

            def on_grad(g: torch.Tensor) -> None:
                rec[2] = g if rec[2] is None else rec[2] + g

            output.register_hook(on_grad)
            records.append(rec)

        return hook

    def detach(self) -> nn.Module:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.clear()
        assert self.plain is not None
        return self.plain

    def clear(self) -> None:
        self._records.clear()
        for layer in self._layers:
            layer.release()
        if self.tap is not None:
            self.tap.reset()

    def collect(self) -> PerSampleGrads:
        if self._unbatched:
            names = sorted(self._unbatched)
            detail = ", ".join(f"{n} got input of shape {self._unbatched[n]}" for n in names)
            self._unbatched.clear()
            self._lost.clear()
            raise EngineUnsupported(
                f"per-sample gradients need every trainable layer to see the batch dimension first; {detail}. "
                "Index such layers with a batched tensor (e.g. self.pos(positions.expand(x.shape[0], -1)))",
                names,
            )
        if self._lost:
            names = sorted(self._lost)
            self._lost.clear()
            raise EngineUnsupported(
                f"with skip_param_grads, layers whose input does not depend on the model's input get no gradient: "
                f"{', '.join(names)}; use BKEngine(skip_param_grads=False)",
                names,
            )
        assert self.tap is not None
        params = self.params()
        by_group: dict[int, dict[Layer, list[tuple[torch.Tensor, torch.Tensor]]]] = {}
        for layer, a, g, group in self._records:
            if g is not None:
                by_group.setdefault(group, {}).setdefault(layer, []).append((a, g))
        groups: list[_Group] = []
        policy, max_bytes = self.policy, self.max_bytes
        for gid, layers in sorted(by_group.items()):
            batch = self.tap.group_batch.get(gid, 0)
            if batch:
                groups.append(_Group(batch, [layer.block(pairs, policy, max_bytes) for layer, pairs in layers.items()]))
        if not groups:
            device = params[0].device if params else torch.device("cpu")
            return EmptyGrads(params, device)
        return BKGrads(groups, params, autograd_writes_grad=not self.skip_param_grads)


class GhostEngine(BKEngine):
    """``bk`` that always picks, per layer, the norm computation needing less memory (memory-lean)."""

    name: ClassVar[str] = "ghost"
    description: ClassVar[str] = "book-keeping with the least memory per layer"

    def __init__(self, max_bytes: int = DEFAULT_MAX_MATERIALIZE_BYTES, *, skip_param_grads: bool = True) -> None:
        super().__init__(policy="ghost", max_bytes=max_bytes, skip_param_grads=skip_param_grads)
