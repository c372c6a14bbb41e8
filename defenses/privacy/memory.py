"""The physical batch that fits a memory budget, from the measured peak memory of private steps.

``DifferentialPrivacy(max_memory_mb=...)`` (``securetrain train --dp --max-memory-mb``) runs the
forward pass, backward pass, per-sample norms and clipped sum of a private step on two small
probe batches of the training data (:data:`PROBE_SIZES`), measures the peak memory each one
adds (on CUDA ``torch.cuda.max_memory_allocated``; on the CPU the allocations recorded by
``torch.profiler``), and fits ``peak(b) = fixed + b * per_sample``. The physical batch is the
largest ``b`` with ``fixed + b * per_sample`` within :data:`SAFETY` of the budget. The probes
leave the model's parameters, gradients, buffers and torch's random generators as they were.

The budget bounds the memory a step adds on top of what the model and optimizer already hold
(parameters, optimizer state).

Example:
    >>> from defenses.privacy.memory import MemoryFit
    >>> fit = MemoryFit(fixed_mb=2.0, per_sample_mb=0.5)
    >>> fit.physical_batch(12.0)  # 0.9 * 12 = 10.8 MB: 2 + 17 * 0.5 = 10.5 fits, 18 does not
    17
    >>> fit.physical_batch(2.2)
    Traceback (most recent call last):
    ...
    securetrain.errors.ConfigurationError: max_memory_mb 2.2 is below what a private step on one sample needs: 2.5 MB measured (2 MB fixed + 0.5 MB per sample), 2.778 MB with the 10% safety margin; give at least 2.778
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sized
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from defenses.privacy.engines.base import Engine, first_tensor
from securetrain.errors import ConfigurationError

MB = 1024 * 1024
PROBE_SIZES = (1, 4)
"""The probe batch sizes the linear fit is measured at."""
SAFETY = 0.1
"""The share of the budget kept free for what the fit does not see (allocator rounding, noise)."""


@dataclass(frozen=True)
class MemoryFit:
    """Peak step memory as ``fixed_mb + batch * per_sample_mb`` (measured by :func:`measure_step_memory`)."""

    fixed_mb: float
    per_sample_mb: float

    def peak_mb(self, batch: int) -> float:
        """The predicted peak memory (MB) of a step on ``batch`` samples."""
        return self.fixed_mb + batch * self.per_sample_mb

    def physical_batch(self, max_memory_mb: float, *, limit: int | None = None) -> int:
        """The largest batch whose predicted peak fits ``(1 - SAFETY) * max_memory_mb`` (at most ``limit``).

        Raises :class:`~securetrain.errors.ConfigurationError` when not even one sample fits.
        """
        usable = (1.0 - SAFETY) * max_memory_mb
        one = self.peak_mb(1)
        if one > usable:
            need = one / (1.0 - SAFETY)
            raise ConfigurationError(
                f"max_memory_mb {max_memory_mb:g} is below what a private step on one sample needs: {one:.4g} MB "
                f"measured ({self.fixed_mb:.4g} MB fixed + {self.per_sample_mb:.4g} MB per sample), {need:.4g} MB "
                f"with the {SAFETY:.0%} safety margin; give at least {need:.4g}"
            )
        batch = 1 if self.per_sample_mb <= 0 else int(math.floor((usable - self.fixed_mb) / self.per_sample_mb))
        batch = max(1, batch)
        return min(batch, limit) if limit is not None else batch


def cpu_peak_bytes(fn: Callable[[], None]) -> int:
    """Peak of the running sum of CPU allocations and frees recorded by ``torch.profiler`` while ``fn`` runs
    (also what the benchmarks report as a step's peak memory)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    points = []
    for e in prof.events():
        if e.name == "[memory]":
            points.append((e.time_range.start, e.cpu_memory_usage))
        elif e.self_cpu_memory_usage:
            at = e.time_range.end if e.cpu_children else e.time_range.start
            points.append((at, e.self_cpu_memory_usage))
    points.sort(key=lambda t: t[0])
    current = peak = 0
    for _, delta in points:
        current += delta
        peak = max(peak, current)
    return peak


def cuda_peak_bytes(fn: Callable[[], None], device: torch.device) -> int:
    """Peak CUDA memory that ``fn`` allocates on ``device`` above what was allocated before it ran
    (``torch.cuda.max_memory_allocated``, its peak statistics reset first; the GPU counterpart of
    :func:`cpu_peak_bytes`)."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device)) - before


def _probe_batch(dataset: Dataset[Any], size: int, device: torch.device) -> Any:
    items = [dataset[i] for i in range(size)]
    xs = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
    if all(isinstance(x, torch.Tensor) for x in xs):
        return torch.stack(xs).to(device)
    if all(isinstance(x, Mapping) for x in xs):
        keys = [k for k, v in xs[0].items() if isinstance(v, torch.Tensor)]
        if keys:
            return {str(k): torch.stack([x[k] for x in xs]).to(device) for k in keys}
    raise ConfigurationError(
        "max_memory_mb needs samples whose input is a tensor or a mapping of tensors to measure a step on; "
        "give physical_batch_size instead"
    )


def step_peak_mb(wrapped: nn.Module, engine: Engine, dataset: Dataset[Any], size: int) -> float:
    """Peak memory (MB) a private step (forward, backward, norms, clipped sum) adds on the first ``size`` samples.

    ``wrapped`` is the model with ``engine`` attached. Parameters' gradients, buffers and
    torch's random generators are restored afterwards.
    """
    params = engine.params()
    device = params[0].device if params else torch.device("cpu")
    saved_grads = [p.grad for p in params]
    saved_buffers = [(b, b.detach().clone()) for b in wrapped.buffers()]
    x = _probe_batch(dataset, size, device)

    def step() -> None:
        engine.clear()
        for p in params:
            p.grad = None
        out = first_tensor(wrapped(**x) if isinstance(x, Mapping) else wrapped(x))
        if out is None:
            raise ConfigurationError("max_memory_mb: the model's output has no tensor to measure a step on")
        torch.autograd.backward(out.float().sum())
        grads = engine.collect()
        norms = grads.sq_norms().sqrt()
        total = {p: torch.zeros_like(p) for p in params}
        grads.add_weighted((1.0 / (norms + 1e-6)).clamp(max=1.0), total)
        engine.clear()

    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            peak = cuda_peak_bytes(step, device) if device.type == "cuda" else cpu_peak_bytes(step)
    finally:
        engine.clear()
        for p, g in zip(params, saved_grads):
            p.grad = g
        with torch.no_grad():
            for b, value in saved_buffers:
                b.copy_(value)
    return peak / MB


def measure_step_memory(wrapped: nn.Module, engine: Engine, dataset: Dataset[Any] | None) -> MemoryFit:
    """Fit ``fixed + batch * per_sample`` to :func:`step_peak_mb` at :data:`PROBE_SIZES` samples.

    The per-sample cost is taken as at least half the mean cost per sample of the larger probe
    (a guard against a slope lost in measurement noise: it errs towards smaller batches).
    """
    n = len(dataset) if isinstance(dataset, Sized) else 0
    if dataset is None or n < 2:
        raise ConfigurationError("max_memory_mb needs a map-style training set of at least 2 samples to measure on")
    b1, b2 = sorted({min(s, n) for s in PROBE_SIZES})
    p1, p2 = (step_peak_mb(wrapped, engine, dataset, b) for b in (b1, b2))
    per_sample = max((p2 - p1) / (b2 - b1), p2 / b2 / 2.0, 0.0)
    return MemoryFit(fixed_mb=max(p2 - b2 * per_sample, 0.0), per_sample_mb=per_sample)


__all__ = ["cpu_peak_bytes", "MB", "PROBE_SIZES", "SAFETY", "MemoryFit", "measure_step_memory", "step_peak_mb"]
