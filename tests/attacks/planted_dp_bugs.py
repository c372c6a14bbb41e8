"""Broken DP-SGD implementations, planted through test-only subclasses (the library is not patched).

Each class is a :class:`~defenses.privacy.DifferentialPrivacy` (or its optimizer) with one bug a
real implementation could have; the white-box audit must flag every one of them. They are
registered in ``DEFENSES`` only for the duration of a test (``DEFENSES.temporarily``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from defenses.privacy import DifferentialPrivacy
from defenses.privacy.engines.base import PerSampleGrads
from defenses.privacy.optimizer import CLIP_EPS, DPSGDOptimizer
from defenses.privacy.schedule import calibrate
from securetrain.distributed.context import DistributedContext
from securetrain.distributed.role import DistributedRole
from securetrain.training import TrainingSession

NON_PRIVATE_STEPS = 20
"""Steps the "resumed from a non-private checkpoint" run takes without noise and without accounting."""


class HalfNoiseOptimizer(DPSGDOptimizer):
    """Adds noise of standard deviation ``0.5 * sigma * C`` (the accountant is told ``sigma``)."""

    def __init__(self, *args: Any, noise_multiplier: float, **kwargs: Any) -> None:
        super().__init__(*args, noise_multiplier=0.5 * noise_multiplier, **kwargs)


class HalfNoise(DifferentialPrivacy):
    name: ClassVar[str] = "privacy-bug-half-noise"
    optimizer_class = HalfNoiseOptimizer


class UnclippedFirstLayerOptimizer(DPSGDOptimizer):
    """Clips every parameter but the first one (a layer whose clipping was forgotten)."""

    def accumulate(self, psg: PerSampleGrads) -> None:
        super().accumulate(psg)  # every layer clipped ...
        first = self._engine_params[0]
        assert self.last_clip_factors is not None
        rest = {p: torch.zeros_like(p) for p in self._engine_params}
        psg.add_weighted((1.0 - self.last_clip_factors).to(self._summed.dtype), rest)
        self._views[first].add_(rest[first])  # ... then the first layer's clipping undone


class UnclippedFirstLayer(DifferentialPrivacy):
    name: ClassVar[str] = "privacy-bug-unclipped-layer"
    optimizer_class = UnclippedFirstLayerOptimizer


class HalfSampleRate(DifferentialPrivacy):
    """Calibrates and accounts at half the sample rate the Poisson sampler really uses."""

    name: ClassVar[str] = "privacy-bug-half-rate"

    def setup(self, session: TrainingSession) -> None:
        super().setup(session)
        assert self.schedule is not None and self.optimizer is not None
        self.schedule = dataclasses.replace(self.schedule, sample_rate=self.schedule.sample_rate / 2)
        self.budget = calibrate(self.settings, self.schedule)
        self.optimizer.noise_multiplier = self.budget.noise_multiplier


class NonPrivateStartOptimizer(DPSGDOptimizer):
    """The first steps are non-private (no noise) and never reach the accountant: a run resumed
    from a checkpoint that was trained without differential privacy."""

    def __init__(self, *args: Any, on_release: Any = None, **kwargs: Any) -> None:
        self._accountant = on_release
        super().__init__(*args, on_release=self._release, **kwargs)

    def _release(self, opt: DPSGDOptimizer) -> None:
        if self.logical_steps > NON_PRIVATE_STEPS and self._accountant is not None:
            self._accountant(opt)

    def add_noise(self) -> None:
        private = self.logical_steps >= NON_PRIVATE_STEPS
        draws = self.draws_noise
        self.draws_noise = draws and private
        try:
            super().add_noise()
        finally:
            self.draws_noise = draws


class NonPrivateStart(DifferentialPrivacy):
    name: ClassVar[str] = "privacy-bug-non-private-start"
    optimizer_class = NonPrivateStartOptimizer


class NoNoiseOnAnyRank(DifferentialPrivacy):
    """On two processes, the rank meant to draw the noise skips it too: no rank adds noise."""

    name: ClassVar[str] = "privacy-bug-noise-skipped"

    def distribute(self, session: TrainingSession, ctx: DistributedContext) -> DistributedRole | None:
        role = super().distribute(session, ctx)
        assert self.optimizer is not None
        self.optimizer.draws_noise = False
        return role


class SplitNoiseOnEveryRank(DifferentialPrivacy):
    """On ``W`` processes every rank adds its own noise of ``sigma * C / W`` (standard deviations
    added as if they were variances: the sum has ``sigma * C / sqrt(W)``)."""

    name: ClassVar[str] = "privacy-bug-noise-duplicated"

    def distribute(self, session: TrainingSession, ctx: DistributedContext) -> DistributedRole | None:
        role = super().distribute(session, ctx)
        opt, gen = self.optimizer, self.noise_generator
        assert opt is not None and gen is not None
        opt.draws_noise = True
        opt.noise_multiplier = opt.noise_multiplier / ctx.world_size
        gen.manual_seed(gen.initial_seed() + 7 * ctx.rank)  # each rank its own noise
        return role


BUGS: dict[str, type[DifferentialPrivacy]] = {
    "half-noise": HalfNoise,
    "unclipped-layer": UnclippedFirstLayer,
    "half-sample-rate": HalfSampleRate,
    "non-private-start": NonPrivateStart,
}
"""Single-process bugs, by test id."""

DISTRIBUTED_BUGS: dict[str, type[DifferentialPrivacy]] = {
    "noise-skipped": NoNoiseOnAnyRank,
    "noise-duplicated": SplitNoiseOnEveryRank,
}
"""Bugs that only exist on several processes."""

__all__ = ["BUGS", "CLIP_EPS", "DISTRIBUTED_BUGS", "NON_PRIVATE_STEPS"]
