"""The robustness audit: every attack at every epsilon, the per-sample worst case, masking checks.

A sample counts as robust at epsilon ``e`` only if every attack fails on it at ``e`` and at
every smaller epsilon of the audit (an adversarial example found inside a smaller ball is
inside the larger one too), so the worst case never rises with epsilon.

By default the audit *cascades* (as AutoAttack does): attacks run in order (untargeted gradient
attacks, then targeted ones, then score-based, decision-based and noise attacks), and each runs,
at each epsilon, only on the samples that no attack before it broke at that epsilon or a smaller
one. ``attacks[name]`` is then the robust accuracy after that attack and every one before it
(the last equals the worst case), ``first_broken_by`` counts which attack broke each sample
first, and ``attacked`` how many samples each attack ran on. With ``cascade=False`` every attack
runs on every sample and ``attacks[name]`` is its own robust accuracy, which is what lets the
``non_monotone`` check catch a failing attack.

Example:
    >>> import torch
    >>> from attacks.evasion import audit_robustness
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> x, y = torch.rand(40, 1, 4, 4), torch.randint(0, 3, (40,))
    >>> result = audit_robustness(model, x, y, attacks=["fgsm", "pgd"], epsilons=[0.0, 0.1],
    ...                           preset="quick", checks=False, progress=False)
    >>> sorted(result.to_section())[:5]
    ['attack_budgets', 'attack_configs', 'attacked', 'attacks', 'bounds']
    >>> result.worst_case[0] == result.clean_accuracy
    True
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from attacks.evasion.base import Attack, attacking, check_epsilons, check_epsilons_in_box, check_inputs, check_logits
from attacks.evasion.masking import (
    MaskingCheck,
    check_blackbox_vs_gradient,
    check_determinism,
    check_gradients,
    check_monotone,
    check_targeted_vs_untargeted,
    check_unbounded,
)
from attacks.evasion.norms import Norm, check_norm
from attacks.evasion.presets import DEFAULT_EPSILONS, PRESETS, AuditPreset
from securetrain.errors import AttackError
from securetrain.modes import model_device
from securetrain.report.sections import RobustnessSection
from securetrain.validation import check_bounds, check_count

log = logging.getLogger("attacks.evasion")


@dataclass
class RobustnessResult:
    """Robust accuracy per attack and epsilon, the worst case, and the masking checks.

    ``success[name]`` is a ``(len(epsilons), n_samples)`` bool tensor: the attack fooled the
    model on that sample at that epsilon (clean mistakes included); in a cascade, only on the
    samples it ran on (``attacked``). ``first_broken_by[name][e]`` counts the samples this
    attack was the first (in ``order``) to break at ``epsilons[e]`` or a smaller epsilon.
    """

    norm: Norm
    epsilons: list[float]
    attacks: dict[str, list[float]]
    worst_case: list[float]
    flags: list[str]
    clean_accuracy: float
    n_samples: int
    bounds: tuple[float, float]
    preset: str
    seed: int
    success: dict[str, torch.Tensor]
    worst_case_success: torch.Tensor
    clean_correct: torch.Tensor
    checks: list[MaskingCheck] = field(default_factory=list)
    attack_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped_attacks: dict[str, str] = field(default_factory=dict)
    times_s: dict[str, float] = field(default_factory=dict)
    time_s: float = 0.0
    cascade: bool = False
    order: list[str] = field(default_factory=list)
    attack_budgets: dict[str, dict[str, int]] = field(default_factory=dict)
    attacked: dict[str, list[int]] = field(default_factory=dict)
    first_broken_by: dict[str, list[int]] = field(default_factory=dict)
    eot_draws: int = 1

    def to_section(self) -> RobustnessSection:
        """The report's ``robustness`` section (schema keys first, then details)."""
        return RobustnessSection.from_dict(self._section_dict())

    def _section_dict(self) -> dict[str, Any]:
        return {
            "norm": self.norm,
            "epsilons": list(self.epsilons),
            "attacks": {k: [round(v, 6) for v in accs] for k, accs in self.attacks.items()},
            "worst_case": [round(v, 6) for v in self.worst_case],
            "flags": list(self.flags),
            "clean_accuracy": round(self.clean_accuracy, 6),
            "n_samples": self.n_samples,
            "bounds": list(self.bounds),
            "preset": self.preset,
            "seed": self.seed,
            "attack_configs": self.attack_configs,
            "checks": [c.to_dict() for c in self.checks],
            "skipped_attacks": dict(self.skipped_attacks),
            "times_s": {k: round(v, 3) for k, v in self.times_s.items()},
            "time_s": round(self.time_s, 3),
            "cascade": self.cascade,
            "order": list(self.order),
            "attack_budgets": {k: dict(v) for k, v in self.attack_budgets.items()},
            "attacked": {k: list(v) for k, v in self.attacked.items()},
            "first_broken_by": {k: list(v) for k, v in self.first_broken_by.items()},
            "clean_errors": int((~self.clean_correct).sum()),
            "eot_draws": self.eot_draws,
        }

    def table(self) -> str:
        """A plain-text table of robust accuracy (rows: attacks and worst case; columns: epsilons)."""
        head = f"{'attack':<12}" + "".join(f"{e:>9g}" for e in self.epsilons)
        rows = [head] + [f"{k:<12}" + "".join(f"{v:>9.3f}" for v in accs) for k, accs in self.attacks.items()]
        rows.append(f"{'worst case':<12}" + "".join(f"{v:>9.3f}" for v in self.worst_case))
        return "\n".join(rows)


def resolve_attacks(attacks: Sequence[str | Attack] | None, norm: Norm, preset: AuditPreset) -> list[Attack]:
    """Attack instances for an audit in ``norm``: names are configured by ``preset``."""
    if attacks is None:
        chosen = preset.default_attacks(norm)
    else:
        if isinstance(attacks, (str, Attack)):
            attacks = [attacks]
        chosen = [preset.attack(a) if isinstance(a, str) else a for a in attacks]
    if not chosen:
        raise AttackError("no attacks to run; name at least one, e.g. attacks=['pgd']")
    seen: set[str] = set()
    for a in chosen:
        if not isinstance(a, Attack):
            raise AttackError(f"attacks must be names or Attack instances, got {type(a).__name__}")
        if a.norm != norm:
            raise AttackError(
                f"attack {a.name!r} measures {a.norm} perturbations but this audit's norm is {norm}; "
                f"run it in an audit with norm={a.norm!r} (an audit reports one norm)"
            )
        if a.name in seen:
            raise AttackError(f"attack {a.name!r} is listed twice; each attack runs once per audit")
        seen.add(a.name)
    return chosen


def audit_robustness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attacks: Sequence[str | Attack] | None = None,
    epsilons: Sequence[float] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    norm: str = "linf",
    preset: str = "default",
    num_classes: int | None = None,
    seed: int = 0,
    batch_size: int = 512,
    checks: bool = True,
    progress: bool = True,
    cascade: bool | None = None,
    eot_draws: int | None = None,
) -> RobustnessResult:
    """Audit ``model`` on ``(x, y)``: robust accuracy per attack per epsilon, worst case, flags.

    Works on any ``nn.Module`` that maps a batch to logits, plain or wrapped by Opacus in the
    middle of private training (attacks run in :func:`securetrain.modes.attack_mode`; mode,
    hooks and gradients are restored). ``attacks`` are registry names (configured by
    ``preset``: ``"default"`` or ``"quick"``) or :class:`Attack` instances, all in ``norm``
    (``"linf"`` or ``"l2"``); by default the preset's attacks for ``norm``. ``epsilons``
    (input units; sorted, duplicates dropped) default to
    :data:`~attacks.evasion.presets.DEFAULT_EPSILONS`. ``bounds`` is the data's input range.
    ``cascade`` (default: the preset's, on for both built-in presets) runs each attack only on
    the samples still robust (see the module docstring). ``eot_draws`` averages the gradient
    attacks' gradients over that many forward passes; by default 1, or the preset's
    ``eot_draws`` when the model's outputs are found to be random in eval mode.
    """
    norm_ = check_norm(norm)
    the_preset = PRESETS.get(preset)
    chosen = resolve_attacks(attacks, norm_, the_preset)
    eps = sorted(set(check_epsilons(list(epsilons) if epsilons is not None else list(DEFAULT_EPSILONS[norm_]))))
    lo, hi = check_bounds(bounds, error=AttackError)
    check_inputs(x, y, (lo, hi))
    check_epsilons_in_box(eps, (lo, hi), x.shape[1:], norm_)
    batch_size = check_count("batch_size", batch_size, error=AttackError)
    if eot_draws is not None:
        eot_draws = check_count("eot_draws", eot_draws, error=AttackError)
    use_cascade = the_preset.cascade if cascade is None else bool(cascade)
    n = x.shape[0]
    start = time.perf_counter()
    k = min(n, the_preset.check_samples)
    device = model_device(model)
    x_check, y_check = x[:k].to(device), y[:k].to(device)
    # Decision-based attacks cannot run on a model that answers the same query differently.
    determinism = check_determinism(model, x_check)
    draws = eot_draws if eot_draws is not None else (the_preset.eot_draws if determinism.fired else 1)
    if draws > 1:
        chosen = [a.with_eot(draws) for a in chosen]
    skipped = {
        a.name: "skipped: the model is nondeterministic in eval mode, and decision-based attacks need identical "
        "answers to identical queries"
        for a in chosen
        if a.kind == "decision" and determinism.fired
    }
    runnable = [a for a in chosen if a.name not in skipped]
    if not runnable:
        raise AttackError(
            f"every requested attack was skipped ({', '.join(skipped)}): {determinism.message}; "
            "add a gradient or noise attack, e.g. attacks=['pgd']"
        )
    if use_cascade:
        runnable = sorted(runnable, key=_cascade_rank)
    batches = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    success: dict[str, list[torch.Tensor]] = {a.name: [] for a in runnable}
    attacked = {a.name: torch.zeros(len(eps), dtype=torch.long) for a in runnable}
    times: dict[str, float] = {a.name: 0.0 for a in runnable}
    clean: list[torch.Tensor] = []
    bar = tqdm(total=len(runnable) * len(batches), desc="robustness audit", disable=not progress, leave=False)
    try:
        for b, (i, j) in enumerate(batches):
            if use_cascade:
                ok, own = _cascade_batch(
                    model, x[i:j], y[i:j], eps, runnable, (lo, hi), num_classes, seed, b, bar, attacked, times
                )
                clean.append(ok)
                for name, s in own.items():
                    success[name].append(s)
                continue
            for a in runnable:
                bar.set_postfix_str(a.name)
                r = a(
                    model,
                    x[i:j],
                    y[i:j],
                    eps,
                    bounds=(lo, hi),
                    num_classes=num_classes,
                    seed=_derive_seed(seed, a.name, b),
                )
                success[a.name].append(r.success.cpu())
                attacked[a.name] += torch.tensor([int(r.clean_correct.sum()) if e > 0 else 0 for e in eps])
                times[a.name] += r.time_s
                if a is runnable[0]:
                    clean.append(r.clean_correct.cpu())
                bar.update(1)
    finally:
        bar.close()
    succ = {k: torch.cat(v, dim=1) for k, v in success.items()}
    clean_correct = torch.cat(clean)
    # broken[a]: fooled by attack a at this epsilon or a smaller one
    broken = {k: v.to(torch.uint8).cummax(dim=0).values.bool() for k, v in succ.items()}
    worst_succ = torch.stack(list(broken.values())).any(0)
    worst = [float(1.0 - s.float().mean()) for s in worst_succ]
    if use_cascade:
        robust: dict[str, list[float]] = {}
        so_far = ~clean_correct.expand(len(eps), -1)
        for a in runnable:
            so_far = so_far | broken[a.name]
            robust[a.name] = [float(1.0 - s.float().mean()) for s in so_far]
    else:
        robust = {k: [float(1.0 - s.float().mean()) for s in v] for k, v in succ.items()}
    first = _first_broken_by([a.name for a in runnable], broken, clean_correct)
    for a in runnable:
        log.info("%s: robust accuracy %s in %.2fs", a.name, [round(v, 3) for v in robust[a.name]], times[a.name])

    found: list[MaskingCheck] = [determinism] if determinism.fired else []
    if checks:
        t0 = time.perf_counter()
        found = _run_checks(
            model,
            x_check,
            y_check,
            norm_,
            (lo, hi),
            eps,
            succ,
            runnable,
            robust,
            the_preset,
            num_classes,
            seed,
            determinism,
            use_cascade,
        )
        times["masking_checks"] = time.perf_counter() - t0
    flags = [c.message for c in found if c.fired]
    for f in flags:
        log.warning("robustness flag: %s", f)
    return RobustnessResult(
        norm=norm_,
        epsilons=eps,
        attacks=robust,
        worst_case=worst,
        flags=flags,
        clean_accuracy=float(clean_correct.float().mean()),
        n_samples=n,
        bounds=(lo, hi),
        preset=the_preset.name,
        seed=seed,
        success=succ,
        worst_case_success=worst_succ,
        clean_correct=clean_correct,
        checks=found,
        attack_configs={a.name: a.config() for a in chosen},
        skipped_attacks=skipped,
        times_s=times,
        time_s=time.perf_counter() - start,
        cascade=use_cascade,
        order=[a.name for a in runnable],
        attack_budgets={a.name: a.budget() for a in runnable},
        attacked={k: [int(c) for c in v] for k, v in attacked.items()},
        first_broken_by=first,
        eot_draws=draws,
    )


_KIND_ORDER = {"gradient": 0, "score": 2, "decision": 3, "noise": 4}


def _cascade_rank(a: Attack) -> int:
    """Untargeted gradient attacks first, then targeted ones, then the black-box and noise ones
    (so that a black-box success in the cascade is one every gradient attack missed)."""
    return _KIND_ORDER[a.kind] + (1 if a.kind == "gradient" and a.targeted else 0)


def _cascade_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: list[float],
    runnable: list[Attack],
    bounds: tuple[float, float],
    num_classes: int | None,
    seed: int,
    batch: int,
    bar: Any,
    attacked: dict[str, torch.Tensor],
    times: dict[str, float],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One batch of a cascade: ``(clean_correct, each attack's own successes (E, n))``."""
    with attacking(model, seed=0) as net, torch.no_grad():
        logits = net(x.to(model_device(model), torch.float32))
    check_logits(logits, y.to(logits.device), num_classes)
    clean_correct = (logits.argmax(1).cpu() == y.cpu()).cpu()
    n_eps = len(eps)
    # broken_at[s]: index of the smallest epsilon at which some attack broke s (n_eps: none yet)
    broken_at = torch.where(clean_correct, n_eps, 0)
    positive = [e for e in range(n_eps) if eps[e] > 0]
    own: dict[str, torch.Tensor] = {}
    for a in runnable:
        bar.set_postfix_str(a.name)
        hits = (~clean_correct).expand(n_eps, -1).clone()
        calls: list[list[int]] = [positive] if a.one_run_for_all_epsilons else [[e] for e in positive]
        for group in calls:
            idx = (broken_at > group[0]).nonzero().flatten()
            if idx.numel() == 0:
                continue
            r = a(
                model,
                x[idx],
                y[idx],
                [eps[e] for e in group],
                bounds=bounds,
                num_classes=num_classes,
                seed=_derive_seed(seed, a.name, batch, group[0] if len(group) == 1 else 0),
            )
            times[a.name] += r.time_s
            for k, e in enumerate(group):
                still = broken_at[idx] > e  # robust at e until now: the samples this epsilon attacks
                attacked[a.name][e] += int(still.sum())
                s = r.success[k].cpu() & still
                hits[e, idx] |= s
                newly = idx[s]
                broken_at[newly] = torch.minimum(broken_at[newly], torch.tensor(e))
        own[a.name] = hits
        bar.update(1)
    return clean_correct, own


def _first_broken_by(
    order: list[str], broken: dict[str, torch.Tensor], clean_correct: torch.Tensor
) -> dict[str, list[int]]:
    """Per attack and epsilon: samples it was the first in ``order`` to break (clean mistakes
    excluded; they are ``clean_errors``)."""
    taken = ~clean_correct.expand(next(iter(broken.values())).shape[0], -1)
    out: dict[str, list[int]] = {}
    for name in order:
        new = broken[name] & ~taken
        out[name] = [int(c) for c in new.sum(1)]
        taken = taken | broken[name]
    return out


def _run_checks(
    model: nn.Module,
    xs: torch.Tensor,
    ys: torch.Tensor,
    norm: Norm,
    bounds: tuple[float, float],
    eps: list[float],
    succ: dict[str, torch.Tensor],
    runnable: list[Attack],
    robust: dict[str, list[float]],
    preset: AuditPreset,
    num_classes: int | None,
    seed: int,
    determinism: MaskingCheck,
    cascade: bool,
) -> list[MaskingCheck]:
    classes = num_classes if num_classes is not None else _logit_width(model, xs[:1])
    kinds = {a.name: a.kind for a in runnable}
    return [
        check_unbounded(
            model, xs, ys, norm=norm, bounds=bounds, num_classes=classes, steps=preset.unbounded_steps, seed=seed
        ),
        check_blackbox_vs_gradient(succ, kinds, eps),
        check_targeted_vs_untargeted(succ, kinds, {a.name for a in runnable if a.targeted}, eps),
        check_gradients(model, xs, ys),
        determinism,
        check_monotone(robust, eps, cumulative=cascade),
    ]


def _logit_width(model: nn.Module, x1: torch.Tensor) -> int:
    from attacks.evasion.base import attacking

    with attacking(model, seed=0) as net, torch.no_grad():
        return int(net(x1).shape[1])


def _derive_seed(seed: int, name: str, batch: int, epsilon_index: int = 0) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode()) * 7919 + batch + 104_729 * epsilon_index) % (2**62)
