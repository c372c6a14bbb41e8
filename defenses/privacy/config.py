"""``PrivacyConfig``: the settings of a :class:`~defenses.privacy.DifferentialPrivacy`, checked once.

Every setting is validated when the config is built (a
:class:`~securetrain.errors.PrivacyError` that says what is wrong and how to fix it; an
:class:`~securetrain.errors.UnknownNameError` listing the choices for an accountant or a
``grad_sample_mode``), and converted to its plain type. The config is frozen: a run's
privacy settings never change after they are given. :meth:`PrivacyConfig.as_dict` is what
``config.json`` stores and what the constructor takes back.

Example:
    >>> from defenses.privacy.config import PrivacyConfig
    >>> cfg = PrivacyConfig(epsilon=3, epochs=5)
    >>> cfg.epsilon, cfg.max_grad_norm, cfg.budget_cap
    (3.0, 1.0, 3.0)
    >>> PrivacyConfig(**cfg.as_dict()) == cfg
    True
    >>> PrivacyConfig(epsilon=0)
    Traceback (most recent call last):
    ...
    securetrain.errors.PrivacyError: epsilon must be positive, got 0; a target epsilon is a positive number such as 1, 3 or 8
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

from defenses.privacy import accounting
from defenses.privacy.augment import AUGMENTATIONS
from defenses.privacy.engines import ENGINES
from securetrain.errors import ConfigurationError, PrivacyError
from securetrain.validation import check_delta, check_number, check_positive

MAX_AUGMULT = 256
"""The most augmented views per sample (De et al. 2022 used up to 32): each physical batch holds
``augmult`` rows per sample, so a larger factor only exhausts memory."""


def _positive(what: str, value: object, hint: str) -> float:
    f = check_number(what, value, error=PrivacyError)
    if math.isnan(f) or not f > 0:
        raise PrivacyError(f"{what} must be positive, got {value}; {hint}")
    return f


def _optional_positive(what: str, value: object, hint: str) -> float | None:
    return None if value is None else _positive(what, value, hint)


def _finite(what: str, value: float | None, hint: str, *, limit: float = math.inf) -> float | None:
    if value is not None and (not math.isfinite(value) or value > limit):
        bound = "a finite number" if limit == math.inf else f"at most {limit:g}"
        raise PrivacyError(f"{what} must be {bound}, got {value}; {hint}")
    return value


def _optional_count(what: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # e.g. a count read back from JSON as 2.0
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise PrivacyError(f"{what} must be at least 1, got {value}")
    return int(value)


def _max_steps(what: str, value: int | None) -> int | None:
    if value is not None and value > accounting.MAX_STEPS:
        raise PrivacyError(
            f"{what} must be at most {accounting.MAX_STEPS:,} (the most steps the accountants analyse), got {value}"
        )
    return value


@dataclass(frozen=True)
class PrivacyConfig:
    """The settings of differential privacy (see :class:`~defenses.privacy.DifferentialPrivacy`).

    ``epsilon``: target epsilon; ``delta``: target delta in (0, 1) (``None``: from the data
    set size); ``max_grad_norm``: per-sample clipping norm; ``noise_multiplier``: fixed noise
    (``None``: calibrated to ``epsilon``); ``accountant``: ``prv``, ``rdp`` or ``gdp``;
    ``max_epsilon``: hard cap; ``poisson_sampling``; ``physical_batch_size``; ``max_memory_mb``:
    memory budget of a step that picks the physical batch when ``physical_batch_size`` is not given;
    ``grad_sample_mode``: ``auto`` or an engine name; ``epochs`` / ``steps``: the planned
    length; ``batch_size``: expected logical batch; ``seed``; ``fix_model``; ``ema_decay``:
    decay of the exponential moving average of the parameters that replaces them at the end
    (post-processing: no privacy cost; ``None``: no average); ``augmult``: augmented views per
    sample whose gradients are averaged before clipping (1: none); ``augment``: the registered
    augmentation of those views (``None``: the default for the data's image size, see
    :mod:`defenses.privacy.augment`).
    """

    epsilon: float | None = None
    delta: float | None = None
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None
    accountant: str = "prv"
    max_epsilon: float | None = None
    poisson_sampling: bool = True
    physical_batch_size: int | None = None
    grad_sample_mode: str = "auto"
    epochs: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    fix_model: bool = True
    ema_decay: float | None = None
    max_memory_mb: float | None = None
    augmult: int = 1
    augment: str | None = None

    def __post_init__(self) -> None:
        epsilon = _optional_positive("epsilon", self.epsilon, "a target epsilon is a positive number such as 1, 3 or 8")
        no_cap = "for a run without an epsilon budget give noise_multiplier= alone"
        epsilon = _finite("epsilon", epsilon, no_cap, limit=accounting.MAX_EPSILON)
        max_epsilon = _optional_positive("max_epsilon", self.max_epsilon, "it is a hard cap on the epsilon spent")
        max_epsilon = _finite("max_epsilon", max_epsilon, "leave it out for no cap", limit=accounting.MAX_EPSILON)
        delta = None if self.delta is None else check_delta(self.delta, error=PrivacyError)
        max_grad_norm = _positive("max_grad_norm", self.max_grad_norm, "it is the per-sample clipping norm, e.g. 1.0")
        _finite("max_grad_norm", max_grad_norm, "it is the per-sample clipping norm, e.g. 1.0")
        sigma = None
        if self.noise_multiplier is not None:
            sigma = check_positive("noise_multiplier", self.noise_multiplier, error=PrivacyError, allow_zero=True)
            _finite("noise_multiplier", sigma, "it is the noise standard deviation over max_grad_norm, e.g. 1.0")
            if 0 < sigma < accounting.PRV_MIN_NOISE and self.accountant in ("prv", "gdp"):
                raise PrivacyError(
                    f"noise_multiplier {sigma:g} is below {accounting.PRV_MIN_NOISE}, the smallest the "
                    f"{self.accountant} accountant takes (its analysis would need unbounded memory); use "
                    "accountant='rdp' or a larger noise_multiplier"
                )
        if epsilon is None and sigma is None:
            raise PrivacyError(
                "give a target epsilon (epsilon=...) or a noise_multiplier; differential privacy needs one of them"
            )
        if sigma == 0 and (epsilon is not None or max_epsilon is not None):
            raise PrivacyError(
                "noise_multiplier=0 spends an infinite epsilon, so no epsilon budget can be met; use a positive noise_multiplier"
            )
        if max_epsilon is not None and epsilon is not None and sigma is None and max_epsilon < epsilon:
            raise PrivacyError(
                f"max_epsilon ({max_epsilon}) is below the target epsilon ({epsilon}); lower the target instead"
            )
        accounting.ACCOUNTANTS.get(self.accountant)
        if self.grad_sample_mode != "auto":
            ENGINES.get(self.grad_sample_mode)
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral)):
            raise PrivacyError(f"seed must be an integer, got {self.seed!r}")
        ema = self.ema_decay
        if ema is not None:
            if isinstance(ema, bool) or not isinstance(ema, numbers.Real) or not 0.0 < float(ema) < 1.0:
                raise PrivacyError(
                    f"ema_decay must be a number in (0, 1), such as 0.999, got {ema!r}; leave it out for no average"
                )
            ema = float(ema)
        max_memory = _optional_positive("max_memory_mb", self.max_memory_mb, "it is a memory budget in MB, e.g. 512")
        _finite("max_memory_mb", max_memory, "it is a memory budget in MB, e.g. 512")
        if max_memory is not None and self.physical_batch_size is not None:
            raise ConfigurationError(
                "give max_memory_mb or physical_batch_size, not both: max_memory_mb picks the physical batch"
            )
        if max_memory is not None and not self.poisson_sampling:
            raise PrivacyError(
                "max_memory_mb needs poisson_sampling=True (it picks the physical batch of Poisson batches)"
            )
        augmult = _optional_count("augmult", self.augmult)
        if augmult is None:
            raise PrivacyError("augmult must be at least 1, got None; 1 means one view per sample (no multiplicity)")
        if augmult > MAX_AUGMULT:
            raise PrivacyError(
                f"augmult must be at most {MAX_AUGMULT} views per sample, got {augmult}: every physical batch holds "
                "augmult rows per sample (De et al. 2022 used up to 32)"
            )
        if self.augment is not None:
            if not isinstance(self.augment, str):
                raise PrivacyError(
                    f"augment must be the name of a registered augmentation, got {self.augment!r}; register it in "
                    "defenses.privacy.AUGMENTATIONS first"
                )
            AUGMENTATIONS.get(self.augment)
        if augmult > 1 and max_memory is not None:
            raise ConfigurationError(
                "max_memory_mb does not measure augmentation multiplicity (K views per sample); give "
                "physical_batch_size instead (it counts samples, each of augmult rows)"
            )
        converted: dict[str, Any] = {
            "augmult": augmult,
            "max_memory_mb": max_memory,
            "ema_decay": ema,
            "epsilon": epsilon,
            "max_epsilon": max_epsilon,
            "delta": delta,
            "max_grad_norm": max_grad_norm,
            "noise_multiplier": sigma,
            "physical_batch_size": _optional_count("physical_batch_size", self.physical_batch_size),
            "epochs": _max_steps("epochs", _optional_count("epochs", self.epochs)),
            "steps": _max_steps("steps", _optional_count("steps", self.steps)),
            "batch_size": _optional_count("batch_size", self.batch_size),
            "seed": None if self.seed is None else int(self.seed),
            "poisson_sampling": bool(self.poisson_sampling),
            "fix_model": bool(self.fix_model),
        }
        for key, value in converted.items():
            object.__setattr__(self, key, value)

    @property
    def budget_cap(self) -> float | None:
        """The epsilon no step may exceed: the smaller of ``epsilon`` and ``max_epsilon``."""
        caps = [e for e in (self.epsilon, self.max_epsilon) if e is not None]
        return min(caps) if caps else None

    @property
    def cap_name(self) -> str:
        """What :attr:`budget_cap` is called in messages: ``target epsilon`` or ``max_epsilon``."""
        return "target epsilon" if self.epsilon is not None and self.budget_cap == self.epsilon else "max_epsilon"

    def as_dict(self) -> dict[str, Any]:
        """The settings by constructor keyword (for ``config.json``)."""
        return asdict(self)


__all__ = ["PrivacyConfig"]
