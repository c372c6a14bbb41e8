"""The DP-SGD step: clip each sample's gradient, sum, add Gaussian noise, average, step.

:class:`DPSGDOptimizer` wraps the user's optimizer (it is no subclass of any optimizer:
it owns the private step and hands the result to the wrapped one, which keeps its
``param_groups``, ``state`` and ``state_dict``). It is a
:class:`securetrain.training.PrivateOptimizer`. Per-sample gradients come from any engine
of :mod:`defenses.privacy.engines`. Per step it asks the engine for per-sample norms,
turns them into clip factors ``min(1, C / (norm + 1e-6))`` (Opacus's formula), adds the
clipped sum into one flat buffer, and on the last physical batch of a logical batch adds
``N(0, (sigma * C)^2)`` noise drawn in one call from its own generator, divides by the
expected logical batch size and steps the wrapped optimizer.

A learning-rate scheduler is attached to ``original_optimizer`` (the two share their
``param_groups``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.engines import make_engine
    >>> from defenses.privacy.optimizer import DPSGDOptimizer
    >>> from securetrain.training import PrivateOptimizer
    >>> engine = make_engine("bk")
    >>> model = engine.attach(nn.Linear(3, 2))
    >>> opt = DPSGDOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), engine=engine,
    ...                      noise_multiplier=0.0, max_grad_norm=1.0, expected_batch_size=4)
    >>> model(torch.randn(4, 3)).sum().div(4).backward()
    >>> opt.step()
    >>> opt.logical_steps, isinstance(opt, PrivateOptimizer)
    (1, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from defenses.privacy.augmult import AveragedViews
from defenses.privacy.canary import WithDiracRows
from defenses.privacy.engines.base import Engine, PerSampleGrads
from securetrain.errors import PrivacyBudgetExhausted
from securetrain.training.canaries import GradientCanaries

CLIP_EPS = 1e-6
"""Added to per-sample norms before dividing, as Opacus does."""


class DPSGDOptimizer:
    """Clip, noise and average per-sample gradients from ``engine``, then step ``optimizer``.

    ``skip_next`` is set by the Poisson loader before every physical batch that is not the
    last of its logical batch; such steps only clip and accumulate. ``inspect`` (the
    validity monitor) sees every physical step's per-sample gradients before clipping and
    before ``p.grad`` is overwritten. ``budget(groups)`` returns a reason string when one
    more noisy step, whose samples went through ``groups`` groups of hooked passes (the
    rate the accountant will charge it), would exceed the privacy budget; the step then raises
    :class:`~securetrain.errors.PrivacyBudgetExhausted` instead of releasing anything.
    ``on_release(self)`` runs after each noisy step (the accountant). ``canaries`` (audits
    only, :mod:`securetrain.training.canaries`) replace the gradients of canary rows by Dirac
    canaries before clipping. ``views`` > 1 (augmentation multiplicity,
    :mod:`defenses.privacy.augmult`): the engine's gradients are of ``views`` consecutive rows
    per sample, averaged into the sample's gradient before anything else sees them.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        engine: Engine,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int,
        generator: torch.Generator | None = None,
        inspect: Callable[[PerSampleGrads], None] | None = None,
        budget: Callable[[int], str | None] | None = None,
        on_release: Callable[[DPSGDOptimizer], None] | None = None,
        canaries: GradientCanaries | None = None,
        views: int = 1,
    ) -> None:
        self.original_optimizer: torch.optim.Optimizer = optimizer
        self.noise_multiplier: float = float(noise_multiplier)
        self.max_grad_norm: float = float(max_grad_norm)
        self.expected_batch_size: int | None = int(expected_batch_size)
        self.generator = generator
        self.engine = engine
        self.inspect = inspect
        self.budget = budget
        self.on_release = on_release
        self.skip_next = False
        self.views = int(views)
        self.draws_noise = True
        """False on every rank but one of a distributed run: the noise is drawn once per global step."""
        self.logical_steps = 0
        self.physical_steps = 0
        self.last_groups = 1
        self.last_clip_factors: torch.Tensor | None = None
        self._groups_in_batch = 1
        engine_params: list[nn.Parameter] = engine.params()
        ref = engine_params[0] if engine_params else None
        self._summed = torch.zeros(
            sum(p.numel() for p in engine_params),
            dtype=ref.dtype if ref is not None else torch.float32,
            device=ref.device if ref is not None else None,
        )
        self._views = _split(self._summed, engine_params)
        self._noise = torch.empty_like(self._summed)
        self._grad_flat = torch.empty_like(self._summed)
        grad_views = _split(self._grad_flat, engine_params)
        self._assign = [(p, grad_views.get(p)) for p in self.params]
        self._engine_params = engine_params
        self.canaries = canaries
        if canaries is not None:
            canaries.bind(engine_params, self.max_grad_norm)

    # ------------------------------------------------------------------ the wrapped optimizer

    @property
    def params(self) -> list[nn.Parameter]:
        """The trainable parameters of the wrapped optimizer, in order."""
        return [p for group in self.original_optimizer.param_groups for p in group["params"] if p.requires_grad]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's parameter groups (learning rates live here)."""
        return self.original_optimizer.param_groups

    @property
    def state(self) -> Any:
        """The wrapped optimizer's state (momentum buffers, ...)."""
        return self.original_optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:
        """The wrapped optimizer's default settings."""
        return self.original_optimizer.defaults

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state dict (the privacy state is the defense's)."""
        return self.original_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the wrapped optimizer's state dict."""
        self.original_optimizer.load_state_dict(state_dict)

    def __repr__(self) -> str:
        return f"DPSGDOptimizer({self.original_optimizer!r})"

    # ------------------------------------------------------------------ the private step

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear ``p.grad`` and the engine's captures (the clipped sum of a logical batch is kept)."""
        self.engine.clear()
        self.original_optimizer.zero_grad(set_to_none)

    def clip_and_accumulate(self) -> None:
        """Clip this physical batch's per-sample gradients and add them to the running sum."""
        psg = self.engine.collect()
        if self.views > 1 and psg.batch_size > 0:
            psg = AveragedViews(psg, self.views)
        if self.inspect is not None:
            self.inspect(psg)
        if self.canaries is not None:
            planted = self.canaries.take(psg.batch_size)
            if planted is not None and planted.count:
                psg = WithDiracRows(psg, planted, self._engine_params)
        self.physical_steps += 1
        if psg.batch_size > 0:
            self.accumulate(psg)
        self._groups_in_batch = max(self._groups_in_batch, psg.groups)
        self.engine.clear()

    def accumulate(self, psg: PerSampleGrads) -> None:
        """Clip every per-sample gradient of ``psg`` to ``max_grad_norm`` and add it to the running sum."""
        norms = psg.sq_norms().sqrt()
        clip = (self.max_grad_norm / (norms + CLIP_EPS)).clamp(max=1.0)
        self.last_clip_factors = clip
        psg.add_weighted(clip.to(self._summed.dtype), self._views)

    def add_noise(self) -> None:
        """Noise the clipped sum, average it, and put it in ``p.grad``."""
        std = float(self.noise_multiplier) * float(self.max_grad_norm)
        flat = self._grad_flat
        if std > 0 and self.draws_noise:
            self._noise.normal_(0.0, std, generator=self.generator)
            torch.add(self._summed, self._noise, out=flat)
        else:
            flat.copy_(self._summed)
        flat.div_(float(self.expected_batch_size or 1) * self._groups_in_batch)
        for p, view in self._assign:
            p.grad = view if view is not None else torch.zeros_like(p)
        self._summed.zero_()

    def pre_step(self) -> bool:
        """Clip and accumulate; on the last physical batch, noise the sum: True when the wrapped optimizer may step."""
        self.clip_and_accumulate()
        if self.skip_next:
            return False
        if self.budget is not None:
            reason = self.budget(self._groups_in_batch)
            if reason is not None:
                self._summed.zero_()
                self._groups_in_batch = 1
                raise PrivacyBudgetExhausted(reason)
        self.add_noise()
        self.last_groups = self._groups_in_batch
        self._groups_in_batch = 1
        self.logical_steps += 1
        if self.on_release is not None:
            self.on_release(self)
        return True

    def step(self, closure: Callable[[], float] | None = None) -> Any:
        """One physical step: a noisy step of the wrapped optimizer at the end of a logical batch."""
        if closure is not None:
            with torch.enable_grad():
                closure()
        if self.pre_step():
            return self.original_optimizer.step()
        return None


def _split(flat: torch.Tensor, params: list[nn.Parameter]) -> dict[nn.Parameter, torch.Tensor]:
    views: dict[nn.Parameter, torch.Tensor] = {}
    start = 0
    for p in params:
        views[p] = flat[start : start + p.numel()].view_as(p)
        start += p.numel()
    return views


__all__ = ["CLIP_EPS", "DPSGDOptimizer"]
