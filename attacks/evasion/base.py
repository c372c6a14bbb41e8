"""The attack base class and its result type.

An attack is a stateless configuration object (a frozen dataclass); the model is passed at
call time. :meth:`Attack.__call__` does the shared work for every attack, and subclasses
implement only :meth:`Attack.run`:

* checks the inputs, labels, epsilons and bounds, raising typed errors that say how to fix them;
* runs inside :func:`securetrain.modes.attack_mode`, so the model is in eval mode, Opacus
  per-sample-gradient hooks are off, parameter ``.grad`` / ``grad_sample`` are restored exactly,
  and parameters are frozen (no gradient is ever accumulated into them);
* never mutates its input, seeds its randomness without touching the caller's RNG stream;
* projects every candidate into the epsilon ball and the input bounds;
* decides success by the model's prediction, with clean mistakes counting as successes at any
  epsilon (the unperturbed input already is an adversarial example).

Example:
    >>> import torch
    >>> from attacks.evasion import get_attack
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
    >>> result = get_attack("pgd", steps=10, restarts=1)(model, x, y, [0.0, 0.1, 0.5])
    >>> len(result.robust_accuracy), result.success.shape
    (3, torch.Size([3, 8]))
    >>> bool((result.adversarials[1] - x).abs().max() <= 0.1 + 1e-6)
    True
"""

from __future__ import annotations

import logging
import numbers
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeGuard, final

import torch
from torch import nn

from attacks.evasion.norms import Norm, diameter, distance, project
from securetrain.deprecation import deprecated_aliases
from securetrain.errors import AttackError, ModelError
from securetrain.modes import attack_mode, model_device, unwrap
from securetrain.validation import Bounds, check_bounds, check_positive

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = logging.getLogger("attacks.evasion")

AttackKind = Literal["gradient", "score", "decision", "noise"]

#: The settings that say how much work an attack does (see :meth:`Attack.budget`).
BUDGET_KEYS: tuple[str, ...] = (
    "steps",
    "restarts",
    "targets",
    "queries",
    "draws",
    "eot_draws",
    "binary_search_steps",
    "initial_evals",
    "max_evals",
)

_BOUNDS_TOL = 1e-6


@dataclass(frozen=True)
class AttackContext:
    """What :meth:`Attack.run` may use besides the model, inputs and labels."""

    bounds: Bounds
    num_classes: int


@dataclass(frozen=True)
class EvasionResult:
    """What every attack returns, whatever it is.

    ``adversarials[e]`` holds, for epsilon ``epsilons[e]``, one input per sample inside the
    epsilon ball and the bounds: an adversarial example where ``success[e]`` is true (the
    unperturbed input for a sample the model already gets wrong), else the attack's last
    candidate. ``robust_accuracy[e]`` is the share of samples the model still classifies
    correctly after the attack: ``1 - success[e].mean()``.
    """

    attack: str
    norm: Norm
    epsilons: tuple[float, ...]
    adversarials: list[torch.Tensor]
    success: torch.Tensor  # (len(epsilons), N) bool
    clean_correct: torch.Tensor  # (N,) bool
    distances: torch.Tensor  # (len(epsilons), N) norm of each returned perturbation
    time_s: float

    @property
    def robust_accuracy(self) -> list[float]:
        """Robust accuracy per epsilon."""
        return [float(1.0 - s.float().mean()) for s in self.success]

    @property
    def clean_accuracy(self) -> float:
        """Accuracy on the unperturbed inputs."""
        return float(self.clean_correct.float().mean())


class Attack(ABC):
    """Base class of every evasion attack: configuration only, the model comes at call time.

    Subclasses are frozen dataclasses that set the class attributes ``name``, ``norm``
    (``"linf"`` or ``"l2"``; epsilons are measured in it), ``kind`` (``"gradient"``;
    ``"score"`` for black-box attacks that query the logits; ``"decision"`` for those that
    query only the predicted label; ``"noise"``; the gradient-masking checks compare kinds),
    ``targeted`` (the attack aims at chosen wrong classes; the masking checks compare it with
    the untargeted gradient attacks), ``stochastic`` and ``one_run_for_all_epsilons`` (one
    search serves every epsilon, as for minimum-norm attacks: the audit then calls it once),
    and implement :meth:`run`.
    """

    name: ClassVar[str] = ""
    norm: ClassVar[Norm]
    kind: ClassVar[AttackKind]
    stochastic: ClassVar[bool] = False
    targeted: ClassVar[bool] = False
    one_run_for_all_epsilons: ClassVar[bool] = False

    @abstractmethod
    def run(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        epsilons: Sequence[float],
        ctx: AttackContext,
    ) -> list[torch.Tensor]:
        """Return one tensor of candidate adversarial inputs per epsilon (all positive).

        Called by :meth:`__call__` inside :func:`~securetrain.modes.attack_mode` with the
        plain inner module, only on samples the model classifies correctly, with
        parameters frozen and the RNG seeded. Candidates need not lie in the ball or the
        bounds: the caller projects them.
        """

    def generate(
        self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, epsilon: float, ctx: AttackContext
    ) -> torch.Tensor:
        """Candidates for :meth:`perturb` (adversarial training). Defaults to :meth:`run`;
        loss-maximising attacks override it to return their highest-loss point instead of
        the first misclassified one."""
        return self.run(model, inputs, labels, [epsilon], ctx)[0]

    def config(self) -> dict[str, Any]:
        """The attack's name, norm and settings (JSON-ready)."""
        settings = asdict(self) if _is_dataclass_instance(self) else {}
        return {"name": self.name, "norm": self.norm, "kind": self.kind, **settings}

    def budget(self) -> dict[str, int]:
        """How much work the attack does: those of its settings named in :data:`BUDGET_KEYS`
        (steps, restarts, targets, queries, ...), for the report.

        Example:
            >>> from attacks.evasion import get_attack
            >>> get_attack("pgd", steps=20, restarts=2).budget()
            {'steps': 20, 'restarts': 2}
        """
        settings = asdict(self) if _is_dataclass_instance(self) else {}
        return {k: int(v) for k, v in settings.items() if k in BUDGET_KEYS and isinstance(v, int)}

    def with_eot(self, draws: int) -> Attack:
        """This attack averaging its gradients over ``draws`` forward passes (expectation over
        transformation), for models with randomness; attacks that do not support it return
        themselves unchanged."""
        return self

    @final
    def __call__(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        epsilons: float | Sequence[float],
        *,
        bounds: Bounds = (0.0, 1.0),
        num_classes: int | None = None,
        seed: int | None = None,
    ) -> EvasionResult:
        """Attack ``model`` on ``(inputs, labels)`` at every epsilon of ``epsilons``.

        ``inputs`` must lie inside ``bounds`` (the data's input range, e.g.
        ``securetrain.data.get_info(name).bounds``); ``num_classes``, if given, is the
        logit width the model must produce. The same ``seed`` gives the same result; with
        ``seed=None`` one is drawn from torch's global RNG.
        """
        eps = check_epsilons(epsilons)
        lo, hi = check_bounds(bounds, error=AttackError)
        check_inputs(inputs, labels, (lo, hi))
        check_epsilons_representable(eps)
        start = time.perf_counter()
        device = model_device(model)
        x = inputs.detach().to(device=device, dtype=torch.float32).clone()
        y = labels.detach().to(device=device, dtype=torch.long)
        n = x.shape[0]
        with attacking(model, seed) as net:
            with torch.no_grad():
                clean_logits = net(x)
            classes = check_logits(clean_logits, y, num_classes)
            clean_correct = clean_logits.argmax(1) == y
            ctx = AttackContext(bounds=(lo, hi), num_classes=classes)
            active = clean_correct.nonzero().flatten()
            positive = [e for e in eps if e > 0]
            candidates: list[torch.Tensor] = []
            if positive and active.numel():
                xa, ya = x[active], y[active]
                raw = self.run(net, xa, ya, positive, ctx)
                if len(raw) != len(positive):
                    raise AttackError(
                        f"attack {self.name!r} returned {len(raw)} candidate batches for "
                        f"{len(positive)} epsilons; run() must return one per epsilon"
                    )
                candidates = [r.detach() for r in raw]
            advs: list[torch.Tensor] = []
            success = torch.ones(len(eps), n, dtype=torch.bool, device=device)
            k = 0
            for i, e in enumerate(eps):
                adv = x.clone()
                if e > 0 and active.numel():
                    cand = candidates[k]
                    k += 1
                    if cand.shape != xa.shape:
                        raise AttackError(
                            f"attack {self.name!r} returned candidates of shape {tuple(cand.shape)} "
                            f"for inputs of shape {tuple(xa.shape)}"
                        )
                    proj = project(cand.to(x.dtype), xa, e, self.norm).clamp_(lo, hi)
                    with torch.no_grad():
                        still_right = net(proj).argmax(1) == ya
                    adv[active] = proj
                    success[i, active] = ~still_right
                else:
                    success[i] = ~clean_correct
                advs.append(adv.to(inputs.device))
        dists = torch.stack([distance(a, inputs.to(a.dtype), self.norm) for a in advs]) if advs else torch.empty(0, n)
        elapsed = time.perf_counter() - start
        log.debug("%s: %d samples, %d epsilons, %.2fs", self.name, n, len(eps), elapsed)
        return EvasionResult(
            attack=self.name,
            norm=self.norm,
            epsilons=tuple(eps),
            adversarials=advs,
            success=success.to(inputs.device),
            clean_correct=clean_correct.to(inputs.device),
            distances=dists,
            time_s=elapsed,
        )

    @final
    def perturb(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        epsilon: float,
        *,
        bounds: Bounds = (0.0, 1.0),
        seed: int | None = None,
    ) -> torch.Tensor:
        """Adversarial inputs for one batch at one epsilon: the fast path for adversarial training.

        Same guarantees as :meth:`__call__` (attack mode, Opacus hooks off, gradients and
        mode restored, input untouched, result inside the ball and the bounds, detached),
        but no success bookkeeping: every sample is attacked, and gradient attacks return
        their highest-loss point.

        Example:
            >>> import torch
            >>> from attacks.evasion import get_attack
            >>> _ = torch.manual_seed(0)
            >>> model = torch.nn.Linear(4, 3)
            >>> x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
            >>> x_adv = get_attack("fgsm").perturb(model, x, y, 0.1)
            >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6), x_adv.requires_grad
            (True, False)
        """
        (e,) = check_epsilons([epsilon])
        lo, hi = check_bounds(bounds, error=AttackError)
        check_inputs(inputs, labels, (lo, hi))
        check_epsilons_representable([e])
        device = model_device(model)
        x = inputs.detach().to(device=device, dtype=torch.float32)
        y = labels.detach().to(device=device, dtype=torch.long)
        if e == 0:
            return x.clone().to(inputs.device)
        with attacking(model, seed) as net:
            with torch.no_grad():
                probe = net(x[:1])
            # one sample's logits, broadcast over the batch: checks the width against every label
            width = check_logits(probe.expand(y.shape[0], -1) if probe.dim() == 2 else probe, y, None)
            ctx = AttackContext(bounds=(lo, hi), num_classes=width)
            cand = self.generate(net, x, y, e, ctx).detach()
            out = project(cand.to(x.dtype), x, e, self.norm).clamp_(lo, hi)
        return out.to(inputs.device)

    def __repr__(self) -> str:
        if _is_dataclass_instance(self):
            args = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
            return f"{type(self).__name__}({args})"
        return f"{type(self).__name__}()"


def _is_dataclass_instance(obj: object) -> TypeGuard[DataclassInstance]:
    return hasattr(type(obj), "__dataclass_fields__")


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring gradients inside the block (restored after): attacks then
    compute input gradients only, faster and with nothing accumulated in ``.grad``."""
    frozen = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(False)
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


@contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[int]:
    """Fork torch's RNG (the caller's stream is untouched) and seed it."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        # Seed only the generators in use: torch.manual_seed would also queue lazy seeding
        # of every accelerator backend, which costs more than a small attack step.
        torch.default_generator.manual_seed(int(seed))
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(int(seed))
        yield int(seed)


@contextmanager
def attacking(model: nn.Module, seed: int | None = None) -> Iterator[nn.Module]:
    """Attack mode (see :func:`securetrain.modes.attack_mode`) plus frozen parameters and a
    seeded, forked RNG; yields the plain inner module to run forward passes on."""
    with attack_mode(model):
        net = unwrap(model)
        with frozen_parameters(model), seeded(seed, model_device(model)):
            yield net


Try = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""One try of an attack on the samples ``idx`` not yet fooled: ``(candidates, fooled)`` for them."""


def retry_unfooled(
    inputs: torch.Tensor, epsilons: Sequence[float], tries: Callable[[float], Iterable[Try]]
) -> list[torch.Tensor]:
    """Per epsilon, run ``tries(eps)`` in turn, each only on the samples no earlier try fooled.

    A sample keeps the candidate of the last try that ran on it: the fooling one, or the last
    failure. The tries stop early once every sample is fooled (restarts, targets, draws).

    Example:
        >>> import torch
        >>> x = torch.zeros(3, 2)
        >>> def nudge(idx):  # fools sample 0 only
        ...     return x[idx] + 1, idx == 0
        >>> [a[:, 0].tolist() for a in retry_unfooled(x, [0.1], lambda eps: [nudge, nudge])]
        [[1.0, 1.0, 1.0]]
    """
    out = []
    for eps in epsilons:
        best = inputs.clone()
        found = torch.zeros(inputs.shape[0], dtype=torch.bool, device=inputs.device)
        for attempt in tries(eps):
            idx = (~found).nonzero().flatten()
            if idx.numel() == 0:
                break
            best[idx], found[idx] = attempt(idx)
        out.append(best)
    return out


def check_epsilons(epsilons: float | Sequence[float]) -> list[float]:
    """Epsilons as a list of finite, non-negative floats; :class:`AttackError` otherwise."""
    if isinstance(epsilons, torch.Tensor):
        epsilons = epsilons.flatten().tolist()
    if isinstance(epsilons, numbers.Real):
        epsilons = [float(epsilons)]
    if isinstance(epsilons, (str, bytes)) or not isinstance(epsilons, Sequence):
        raise AttackError(f"epsilons must be a number or a sequence of numbers, got {type(epsilons).__name__}")
    if len(epsilons) == 0:
        raise AttackError("epsilons is empty; give at least one perturbation size, e.g. [0.1]")
    out: list[float] = []
    for e in epsilons:
        if isinstance(e, bool) or not isinstance(e, numbers.Real):
            raise AttackError(f"epsilons must be numbers, got {e!r}")
        out.append(check_positive("epsilon", e, error=AttackError, allow_zero=True))
    return out


_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def check_epsilons_representable(epsilons: Sequence[float]) -> None:
    """Raise :class:`AttackError` for an epsilon that does not fit in float32 (attacks compute in float32).

    An epsilon beyond the input range is allowed here (it means "unbounded"); the audit refuses
    it (:func:`check_epsilons_in_box`).

    Example:
        >>> check_epsilons_representable([0.1, 1e6])
        >>> check_epsilons_representable([1e308])
        Traceback (most recent call last):
        ...
        securetrain.errors.AttackError: epsilon 1e+308 is too large for float32 inputs (at most 3.40282e+38); use epsilons in input units, e.g. 0.1
    """
    for e in epsilons:
        if e > _FLOAT32_MAX:
            raise AttackError(
                f"epsilon {e:g} is too large for float32 inputs (at most {_FLOAT32_MAX:g}); "
                "use epsilons in input units, e.g. 0.1"
            )


def check_epsilons_in_box(epsilons: Sequence[float], bounds: Bounds, sample_shape: Sequence[int], norm: Norm) -> None:
    """Raise :class:`AttackError` for an epsilon larger than the input box's diameter in ``norm``.

    A perturbation of the diameter already reaches every input of the box, so a larger one
    measures nothing more (and a huge one overflows float32): it is a unit mistake.

    Example:
        >>> check_epsilons_in_box([0.1, 1.0], (0.0, 1.0), (4,), "linf")
        >>> check_epsilons_in_box([1e308], (0.0, 1.0), (4,), "linf")
        Traceback (most recent call last):
        ...
        securetrain.errors.AttackError: epsilon 1e+308 is larger than the input range allows: inputs lie in [0, 1], so a linf perturbation of 1 already reaches every input; use epsilons in [0, 1]
    """
    top = diameter(bounds, tuple(int(s) for s in sample_shape), norm)
    too_big = [e for e in epsilons if e > top * (1 + 1e-9)]
    if too_big:
        lo, hi = bounds
        raise AttackError(
            f"epsilon {too_big[0]:g} is larger than the input range allows: inputs lie in [{lo:g}, {hi:g}], so a "
            f"{norm} perturbation of {top:.6g} already reaches every input; use epsilons in [0, {top:.6g}]"
        )


def check_inputs(inputs: Any, labels: Any, bounds: Bounds) -> None:
    """Raise :class:`AttackError` unless ``inputs``/``labels`` are a valid batch inside ``bounds``."""
    if not isinstance(inputs, torch.Tensor):
        raise AttackError(
            f"inputs must be a torch.Tensor, got {type(inputs).__name__}; convert with torch.as_tensor(x, dtype=torch.float32)"
        )
    if not isinstance(labels, torch.Tensor):
        raise AttackError(
            f"labels must be a torch.Tensor, got {type(labels).__name__}; convert with torch.as_tensor(y, dtype=torch.long)"
        )
    if not inputs.is_floating_point():
        raise AttackError(f"inputs must be floating point, got dtype {inputs.dtype}; use inputs.float()")
    if inputs.dim() < 2:
        raise AttackError(f"inputs must be a batch of shape (N, ...), got shape {tuple(inputs.shape)}")
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise AttackError(
            f"labels must be a 1-D tensor of integer class indices, got shape {tuple(labels.shape)} and dtype {labels.dtype}"
        )
    if inputs.shape[0] != labels.shape[0]:
        raise AttackError(f"{inputs.shape[0]} inputs but {labels.shape[0]} labels; give one label per input")
    if inputs.shape[0] == 0:
        raise AttackError("the batch is empty; give at least one input")
    if labels.min() < 0:
        raise AttackError(f"labels must be class indices >= 0, found {int(labels.min())}")
    if not torch.isfinite(inputs).all():
        raise AttackError("inputs contain NaN or infinite values; clean or drop them first")
    lo, hi = bounds
    xmin, xmax = float(inputs.min()), float(inputs.max())
    if xmin < lo - _BOUNDS_TOL or xmax > hi + _BOUNDS_TOL:
        raise AttackError(
            f"inputs lie in [{xmin:.4g}, {xmax:.4g}], outside the declared bounds [{lo:g}, {hi:g}]; "
            "pass the data's bounds (securetrain.data.get_info(name).bounds) or rescale the inputs"
        )


def check_logits(logits: Any, labels: torch.Tensor, num_classes: int | None) -> int:
    """The logit width; :class:`ModelError` unless ``logits`` are ``(N, C)`` scores covering the labels."""
    n = labels.shape[0]
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != n:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelError(
            f"the model must return logits of shape (batch, num_classes) = ({n}, C), got {shape}; "
            "attacks need one score per class"
        )
    width = int(logits.shape[1])
    if num_classes is not None and width != int(num_classes):
        raise ModelError(
            f"the model returns {width} logits per sample but the data has {num_classes} classes; "
            "build the model for this data set"
        )
    if width < 2:
        raise ModelError(f"the model returns {width} logit per sample; a classifier needs at least 2 (one per class)")
    top = int(labels.max())
    if top >= width:
        raise ModelError(
            f"labels go up to {top} but the model returns only {width} logits per sample; "
            "labels must lie in [0, num_classes - 1]"
        )
    if not torch.isfinite(logits).all():
        raise ModelError("the model returns NaN or infinite logits on the clean inputs")
    return width


__getattr__ = deprecated_aliases(__name__, {"AttackResult": "EvasionResult"})
