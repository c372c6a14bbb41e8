"""Keeping the replicas one model: parameter broadcast, gradient all-reduce, replica checks.

:class:`GradientSync` hooks a plain ``torch.optim.Optimizer`` with
``register_step_pre_hook`` / ``register_step_post_hook``: the session's optimizer, or the
one a defense names in its :class:`~securetrain.distributed.role.DistributedRole` (the
privacy defense names the optimizer its DP-SGD wrapper steps):

* **gradient sums** (``gradient_sum=True``, DP-SGD): by the time the inner optimizer
  steps, each rank's ``p.grad`` is ``(clipped sum of its share [+ noise]) / B`` with ``B``
  the *global* expected batch. Noise is drawn on rank 0 only (the privacy defense decides
  that in its ``distribute`` hook), and the all-reduce **sums**, so the
  update is ``(clipped sum over the global batch + one N(0, sigma^2 C^2) draw) / B``:
  noise once per global step, exactly as Opacus's ``DistributedDPOptimizer`` does
  (``add_noise`` on rank 0 only, then ``all_reduce``).
* **non-private**: each rank's gradient is the mean over its share; the all-reduce
  weights it by the share's size, giving the mean over the global batch (shares of
  different sizes, even empty ones, are exact).

After every step, floating-point buffers (batch-norm statistics) are averaged over ranks
and, every ``verify_every`` steps, a fingerprint of the parameters' bits is compared
across ranks: replicas that drifted apart stop the job with :class:`DistributedError`
instead of training silently on different models.

Gradient averaging is done here rather than by ``DistributedDataParallel`` on purpose:
DDP all-reduces during *every* backward pass, including the extra backward passes that
generate adversarial examples, and its hooks do not know per-sample gradients; Opacus's
own ``DifferentiallyPrivateDistributedDataParallel`` likewise only broadcasts the
parameters and leaves the reduction to the optimizer.

Example (a single process: nothing to synchronise, the fingerprint is still defined):
    >>> import torch
    >>> from securetrain.distributed.sync import parameter_fingerprint
    >>> m = torch.nn.Linear(3, 2)
    >>> bool(torch.equal(parameter_fingerprint(m), parameter_fingerprint(m)))
    True
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from securetrain.deprecation import deprecated_aliases
from securetrain.distributed.context import DistributedContext
from securetrain.distributed.errors import DistributedError

log = logging.getLogger("securetrain")

LOST_PEER_HINT = (
    "another worker probably failed or was stopped (its launcher, torchrun, names it); the last checkpoint "
    "written by rank 0 is intact: run the same command again with --resume (on any number of processes)"
)


def _collective(ctx: DistributedContext, fn: Callable[[], Any], what: str) -> Any:
    try:
        return fn()
    except RuntimeError as exc:  # gloo/nccl report a lost peer as RuntimeError (DistBackendError)
        raise DistributedError(
            f"rank {ctx.rank} lost contact with the other ranks while {what}: {exc}; {LOST_PEER_HINT}"
        ) from exc


def _small_device(ctx: DistributedContext) -> torch.device:
    """Where small bookkeeping tensors travel: CPU on gloo (or a gloo side group), else the GPU."""
    if ctx.backend == "nccl" and ctx.cpu_group is None:
        return ctx.device
    return torch.device("cpu")


def all_reduce_sum(values: list[float], ctx: DistributedContext, what: str = "summing figures") -> list[float]:
    """Sum ``values`` over ranks (float64); returns them unchanged for a single process."""
    if not ctx.active:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=_small_device(ctx))
    group = ctx.cpu_group if t.device.type == "cpu" else None
    _collective(ctx, lambda: dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group), what)
    return [float(v) for v in t.cpu().tolist()]


def broadcast_module(module: nn.Module, ctx: DistributedContext, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers into every rank's ``module`` (in place)."""
    if not ctx.active:
        return
    tensors = [p.data for p in module.parameters()] + [b for b in module.buffers()]

    def run() -> None:
        for t in tensors:
            dist.broadcast(t, src)

    with torch.no_grad():
        _collective(ctx, run, "copying the initial model from rank 0")


def broadcast_generator(generator: torch.Generator, ctx: DistributedContext, src: int = 0) -> None:
    """Give every rank ``src``'s state of a (CPU) random generator, so they all draw the same numbers."""
    if not ctx.active:
        return
    state = generator.get_state()
    device = _small_device(ctx)
    t = state.to(device)
    group = ctx.cpu_group if device.type == "cpu" else None
    _collective(ctx, lambda: dist.broadcast(t, src, group=group), "sharing the sampler's random state")
    generator.set_state(t.cpu())


@torch.no_grad()
def parameter_fingerprint(module: nn.Module) -> torch.Tensor:
    """Three int64 checksums of the exact bits of ``module``'s parameters and buffers.

    Two modules have equal fingerprints if their tensors are bitwise equal; a difference
    in any element changes it (with overwhelming probability).
    """
    s1 = torch.zeros((), dtype=torch.int64)
    s2 = torch.zeros((), dtype=torch.int64)
    s3 = torch.zeros((), dtype=torch.int64)
    for i, t in enumerate([*module.parameters(), *module.buffers()]):
        raw = t.detach().contiguous().reshape(-1).view(torch.uint8)
        ints = raw.view(torch.int32).to(torch.int64) if raw.numel() % 4 == 0 else raw.to(torch.int64)
        a = ints.sum().cpu()
        s1 += a
        s2 += (ints * ints).sum().cpu()
        s3 += a * (i + 1)
    return torch.stack([s1, s2, s3])


def replicas_identical(module: nn.Module, ctx: DistributedContext) -> bool:
    """True when every rank's ``module`` is bitwise the same (a collective: call it on every rank)."""
    if not ctx.active:
        return True
    f = parameter_fingerprint(module).to(_small_device(ctx))
    both = torch.cat([f, -f])
    group = ctx.cpu_group if both.device.type == "cpu" else None
    _collective(ctx, lambda: dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group), "comparing the replicas")
    return bool(torch.equal(both[:3], -both[3:]))


class GradientSync:
    """All-reduce gradients before each optimizer step; average buffers and check replicas after.

    One synchronous all-reduce per step carries every gradient plus the bookkeeping (this
    rank's sample count, which parameters have a gradient). The replica check after step
    ``k`` is an asynchronous all-reduce that completes while step ``k + 1`` computes; it is
    awaited before the next update is applied (and by :meth:`finish`), so a mismatch stops
    training before a second diverged step.

    Args:
        optimizer: the plain ``torch.optim.Optimizer`` whose ``step`` applies the update.
        model: the plain model (buffers are averaged and fingerprinted from it).
        ctx: this process's :class:`DistributedContext`.
        gradient_sum: gradients are per-rank sums already divided by the global batch
            (DP-SGD); they are summed. Otherwise each rank's mean is weighted by ``count``.
        count: without ``gradient_sum``, the number of samples in this rank's share of
            the current batch (the gradient is weighted by it).
        verify_every: compare the replicas' fingerprints every this many steps (0: never).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: nn.Module,
        ctx: DistributedContext,
        *,
        gradient_sum: bool = False,
        count: Callable[[], int] | None = None,
        verify_every: int = 1,
    ) -> None:
        if int(verify_every) < 0:
            raise DistributedError(f"verify_every must be >= 0, got {verify_every}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise DistributedError(f"GradientSync needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.inner = optimizer
        self.private = bool(gradient_sum)
        if not self.private and count is None:
            raise DistributedError("non-private gradient synchronisation needs count=, the size of this rank's share")
        self.model = model
        self.ctx = ctx
        self.count = count
        self.verify_every = int(verify_every)
        self.params: list[nn.Parameter] = [p for g in self.inner.param_groups for p in g["params"] if p.requires_grad]
        self.steps = 0
        self.checks = 0
        self._handles: list[Any] = []
        self._pending: tuple[Any, torch.Tensor, int] | None = None

    # ------------------------------------------------------------------ attach / detach

    def attach(self) -> GradientSync:
        """Install the hooks."""
        if self._handles or not self.ctx.active:
            return self
        self._handles = [
            self.inner.register_step_pre_hook(self._before_step),
            self.inner.register_step_post_hook(self._after_step),
        ]
        return self

    def finish(self) -> None:
        """Wait for the last replica check and raise if the replicas differ."""
        self._complete_check()

    def detach(self) -> None:
        """Remove the hooks (pending checks are dropped)."""
        if self._pending is not None:
            work, self._pending = self._pending[0], None
            try:
                work.wait()
            except RuntimeError:
                pass  # the peer is gone; the error that stopped training is already on its way
        for h in self._handles:
            h.remove()
        self._handles = []

    # ------------------------------------------------------------------ hooks

    @torch.no_grad()
    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._complete_check()
        self.steps += 1
        ctx = self.ctx
        n_local = 0.0 if self.private else float(self.count())  # type: ignore[misc]
        what = f"synchronising gradients at step {self.steps}"
        groups: dict[tuple[torch.device, torch.dtype], list[nn.Parameter]] = {}
        for p in self.params:
            groups.setdefault((p.device, p.dtype), []).append(p)
        # the bookkeeping rides on the first float32/float64 group (exact for counts below 2**24)
        carrier = next((k for k in groups if k[1] in (torch.float32, torch.float64)), None)
        scale = 1.0 if self.private else n_local
        flats: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        for key, params in groups.items():
            parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
            if key == carrier:  # [has-gradient flags..., 1], scaled with the gradients below
                parts.append(
                    torch.tensor(
                        [1.0 if p.grad is not None else 0.0 for p in self.params] + [1.0], dtype=key[1], device=key[0]
                    )
                )
            flat = torch.cat(parts)
            if scale != 1.0:
                flat.mul_(scale)
            flats[key] = flat
        if carrier is None:  # no float32/float64 parameter: the bookkeeping travels on its own
            tail_values = all_reduce_sum([0.0 if p.grad is None else scale for p in self.params] + [scale], ctx, what)
        for flat in flats.values():
            _collective(ctx, functools.partial(dist.all_reduce, flat, op=dist.ReduceOp.SUM), what)
        if carrier is not None:
            tail_values = flats[carrier][-(len(self.params) + 1) :].tolist()
        # a parameter keeps a gradient if some rank with samples produced one; for non-private
        # training the last entry is the global sample count (each rank sent its count)
        present = [v > 0 for v in tail_values[:-1]]
        n_total = float(tail_values[-1])
        has_grad = dict(zip(map(id, self.params), present))
        for key, params in groups.items():
            flat = flats[key]
            if not self.private:
                flat.div_(max(n_total, 1.0))
            offset = 0
            for p in params:
                k = p.numel()
                p.grad = flat[offset : offset + k].view_as(p) if has_grad[id(p)] else None
                offset += k

    @torch.no_grad()
    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        ctx = self.ctx
        floats = [b for b in self.model.buffers() if b.is_floating_point()]
        others = [b for b in self.model.buffers() if not b.is_floating_point()]
        if floats or others:

            def sync_buffers() -> None:
                for b in floats:
                    dist.all_reduce(b, op=dist.ReduceOp.SUM)
                    b.div_(ctx.world_size)
                for b in others:
                    dist.broadcast(b, 0)

            _collective(ctx, sync_buffers, f"averaging buffers at step {self.steps}")
        if self.verify_every and self.steps % self.verify_every == 0:
            f = parameter_fingerprint(self.model).to(_small_device(ctx))
            both = torch.cat([f, -f])
            group = ctx.cpu_group if both.device.type == "cpu" else None
            work = _collective(
                ctx,
                lambda: dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group, async_op=True),
                f"comparing the replicas after step {self.steps}",
            )
            self._pending = (work, both, self.steps)

    def _complete_check(self) -> None:
        if self._pending is None:
            return
        work, both, step = self._pending
        self._pending = None
        _collective(self.ctx, work.wait, f"comparing the replicas after step {step}")
        self.checks += 1
        if not torch.equal(both[:3], -both[3:]):
            raise DistributedError(
                f"the model replicas differ after step {step}: the ranks no longer train the same model "
                "(a rank saw different data or hyper-parameters, or ran non-deterministic code); the job stops "
                "rather than report a model that was never trained as one"
            )


__getattr__ = deprecated_aliases(__name__, {"fingerprint": "parameter_fingerprint"})
