"""Does the reported epsilon bound this run? Checks of the accounting assumptions.

The accountants analyse one mechanism: each step takes a Poisson sample of the data,
every sample's gradient is computed once from that sample alone, clipped, summed, noised
and applied. :class:`ValidityMonitor` watches a run for the ways a pipeline silently
leaves that mechanism, and the report marks the epsilon ``valid: false`` with the reason:

=====================  ===================================================================
``non_poisson``        batches are not Poisson-sampled (fixed-size shuffled, weighted, ...)
``multiple_forward``   more forward passes with per-sample hooks per step than declared
``accumulation``       gradients of several backward passes accumulated into one step
``outside_loss``       ``p.grad`` differs from the sum of per-sample gradients: a loss term
                       was computed outside the per-sample path
``foreign_batches``    a step used samples that did not come from the Poisson sampler (no batch
                       drawn since the last step, or not as many rows as it drew)
``no_noise``           the noise multiplier is 0: nothing is private
=====================  ===================================================================

A defense that re-uses the *same* samples in extra hooked forward passes of one loss
(TRADES: a clean and an adversarial pass) declares it with a class attribute
``forward_passes_per_step = 2``; a hand-written loop calls
``session.declare_forward_passes(2)`` (or :func:`declare_forward_passes`). Those passes
are accounted (each sample's total gradient is still clipped once) and do not invalidate
the guarantee.

Example:
    >>> m = ValidityMonitor()
    >>> m.flag("non_poisson", "shuffled fixed-size batches", step=0)
    >>> m.valid, m.codes()
    (False, ['non_poisson'])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

from defenses.privacy.engines.base import PerSampleGrads, StepTap

if TYPE_CHECKING:
    from securetrain.training import TrainingSession

MESSAGES: dict[str, str] = {
    "non_poisson": (
        "batches are not Poisson-sampled ({detail}); the accountant assumes every sample joins each batch "
        "independently with probability sample_rate, so the reported epsilon does not bound this run. "
        "Use poisson_sampling=True (the default)"
    ),
    "multiple_forward": (
        "{detail} forward passes with per-sample hooks contributed to one step (first at step {step}); the "
        "accountant assumes each sample is used once per step. If the extra passes re-use the same samples "
        "(as TRADES does), declare them (forward_passes_per_step on the defense, or "
        "session.declare_forward_passes(n) in a hand-written loop); otherwise run them inside "
        "securetrain.modes.attack_mode"
    ),
    "accumulation": (
        "gradients of several backward passes were accumulated into one optimizer step (first at step {step}); "
        "each pass was a different batch, so the step used more than one Poisson sample and the accountant's "
        "sample rate is wrong. Call step() after every backward pass; for logical batches larger than memory "
        "use physical_batch_size="
    ),
    "outside_loss": (
        "the gradient of {detail} differs from the sum of the per-sample gradients (first at step {step}): a "
        "loss term was computed outside the per-sample path (e.g. a penalty on the parameters added to the "
        "loss, or a model call with hooks off). DP-SGD trains on the clipped per-sample gradients only, so "
        "that term was dropped, and if it depends on the data the guarantee does not cover it. Use the "
        "optimizer's weight_decay for regularisation, or make the term part of the per-sample loss"
    ),
    "no_noise": (
        "the noise multiplier is 0, so the run is not differentially private (epsilon is infinite); give a "
        "target epsilon or a positive noise_multiplier"
    ),
    "foreign_batches": (
        "a step used samples that did not come from session.train_loader (first at step {step}{detail}); the "
        "accountant covers only batches drawn by the Poisson sampler. Iterate session.train_loader and train on "
        "its batches as they are"
    ),
}


@dataclass
class Finding:
    """One broken assumption: its code, the message for the report, when first seen, how often."""

    code: str
    message: str
    first_step: int
    count: int = 1


@runtime_checkable
class TappedEngine(Protocol):
    """An engine that counts the hooked forward passes of each step (every built-in engine, once attached)."""

    @property
    def tap(self) -> StepTap | None: ...


def engine_tap(engine: object) -> StepTap | None:
    """The forward-pass tap of an attached engine (``None``: the engine keeps none, the pass checks are off)."""
    return engine.tap if isinstance(engine, TappedEngine) else None


class BatchSource(Protocol):
    """A loader that counts the batches it has yielded (the Poisson sampler, a counted loader)."""

    @property
    def batches_drawn(self) -> int: ...


def declare_forward_passes(session: TrainingSession, passes: int) -> None:
    """Declare that each step makes ``passes`` hooked forward passes of the *same* samples.

    For hand-written loops; the same as ``session.declare_forward_passes(passes)`` (a
    defense declares it with its ``forward_passes_per_step`` class attribute instead).
    """
    session.declare_forward_passes(passes)


def rows_match(batch_size: int, groups: int, rows: list[int]) -> bool:
    """Whether ``batch_size`` per-sample gradients in ``groups`` groups can come from the sampler's ``rows``.

    The step may use the last batch yielded, or the last few together (accumulation, flagged
    on its own), each sample once or once per group (the same batch backpropagated again).

    Example:
        >>> rows_match(20, 1, [20]), rows_match(25, 1, [20]), rows_match(40, 2, [20]), rows_match(39, 1, [17, 22])
        (True, False, True, True)
    """
    total = 0
    for r in reversed(rows):
        total += int(r)
        if any(total * k == batch_size for k in range(1, max(1, int(groups)) + 1)):
            return True
    return False


class ValidityMonitor:
    """Collects :class:`Finding` s over a run; ``inspect`` is called by the optimizer every step.

    ``check_first`` / ``check_every``: the comparison of ``p.grad`` with the per-sample sum
    runs on the first physical steps and then every ``check_every`` steps (it costs about
    one extra matrix product per layer). ``rtol``: relative difference that counts as a
    mismatch (float32 summation error is about 1e-6).
    """

    def __init__(
        self, *, allowed_forwards: int = 1, check_first: int = 3, check_every: int = 20, rtol: float = 1e-4
    ) -> None:
        self.allowed_forwards = int(allowed_forwards)
        self.check_first = int(check_first)
        self.check_every = int(check_every)
        self.rtol = float(rtol)
        self.findings: dict[str, Finding] = {}
        self.tap: StepTap | None = None
        self.loader: BatchSource | None = None
        self.params: list[nn.Parameter] = []
        self.names: dict[int, str] = {}
        self.steps_seen = 0
        self.checks_run = 0
        self._last_drawn = 0

    @property
    def valid(self) -> bool:
        """True while no assumption is known to be broken."""
        return not self.findings

    def codes(self) -> list[str]:
        """Codes of every finding, sorted."""
        return sorted(self.findings)

    def warnings(self) -> list[str]:
        """The messages of every finding, in the order first seen."""
        return [f.message for f in sorted(self.findings.values(), key=lambda f: (f.first_step, f.code))]

    def flag(self, code: str, detail: str = "", *, step: int) -> None:
        """Record that assumption ``code`` broke at ``step``."""
        if code in self.findings:
            self.findings[code].count += 1
            return
        self.findings[code] = Finding(code, MESSAGES[code].format(detail=detail, step=step), step)

    def watch(
        self, *, tap: StepTap | None, loader: BatchSource, params: list[nn.Parameter], names: dict[int, str]
    ) -> None:
        """What to watch: the model's forward passes, the loader, the trained parameters."""
        self.tap, self.loader, self.params, self.names = tap, loader, list(params), dict(names)
        self._last_drawn = int(loader.batches_drawn)

    def inspect(self, psg: PerSampleGrads) -> None:
        """Check one physical step (called before clipping, while ``p.grad`` is autograd's)."""
        self.steps_seen += 1
        step = self.steps_seen
        tap = self.tap
        if tap is not None:
            if tap.accumulated:
                self.flag("accumulation", step=step)
            elif tap.contributing > self.allowed_forwards:
                self.flag("multiple_forward", str(tap.contributing), step=step)
        if self.loader is not None:
            drawn = int(self.loader.batches_drawn)
            take = getattr(self.loader, "take_rows", None)
            rows: list[int] | None = take() if callable(take) else None
            if psg.batch_size > 0:
                if drawn == self._last_drawn:
                    self.flag("foreign_batches", step=step)
                elif rows is not None and not rows_match(psg.batch_size, psg.groups, rows):
                    drew = " + ".join(str(r) for r in rows)
                    self.flag(
                        "foreign_batches",
                        f": {psg.batch_size} per-sample gradients where the sampler yielded {drew} rows",
                        step=step,
                    )
            self._last_drawn = drawn
        if step <= self.check_first or step % self.check_every == 0:
            self._check_grads(psg, step)

    @torch.no_grad()
    def _check_grads(self, psg: PerSampleGrads, step: int) -> None:
        self.checks_run += 1
        implied = psg.implied_grads()
        pairs = []
        for p in self.params:
            want = implied.get(p)
            if want is None and psg.batch_size > 0:
                continue
            got = p.grad
            pairs.append(
                (p, got if got is not None else torch.zeros_like(p), want if want is not None else torch.zeros_like(p))
            )
        # float32 summation noise scales with the whole gradient: a bias that a normalisation
        # layer cancels has a true gradient of 0 computed as +-1e-7
        total = math.sqrt(sum(float(w.pow(2).sum()) for _, _, w in pairs))
        bad: list[tuple[str, float]] = []
        for p, got_t, want_t in pairs:
            diff = float((got_t - want_t).norm())
            scale = max(float(got_t.norm()), float(want_t.norm()))
            if diff > self.rtol * scale + 1e-5 * total + 1e-12:
                bad.append((self.names.get(id(p), "a parameter"), diff / max(scale, 1e-30)))
        if bad:
            names = ", ".join(f"{n} (relative difference {r:.2g})" for n, r in bad[:5])
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            self.flag("outside_loss", names + more, step=step)

    def state_dict(self) -> dict[str, Any]:
        """Findings and counters, for resume."""
        return {
            "findings": [asdict(f) for f in self.findings.values()],
            "steps_seen": self.steps_seen,
            "checks_run": self.checks_run,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.findings = {f["code"]: Finding(**f) for f in state.get("findings", [])}
        self.steps_seen = int(state.get("steps_seen", 0))
        self.checks_run = int(state.get("checks_run", 0))
