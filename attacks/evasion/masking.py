"""Gradient-masking checks: signs that a robustness figure is an artefact of broken gradients.

A model can look robust because its gradients are useless (non-differentiable or saturating
layers, randomness), not because it is (Athalye et al. 2018; Carlini et al. 2019, "On
evaluating adversarial robustness"). Each check returns a :class:`MaskingCheck`; a fired
check becomes a flag in the report's robustness section saying what was seen and what it
suggests.

* ``unbounded``: an attack allowed to reach any point of the input box must drive robust
  accuracy to (near) zero; if it stays above chance, the gradients lead nowhere.
* ``blackbox_beats_gradient``: score-based (Square), decision-based or random attacks fool
  samples on which every gradient attack failed at the same epsilon; gradient attacks should
  dominate them (AutoAttack's check on Square).
* ``targeted_beats_untargeted``: targeted gradient attacks (APGD-T) fool samples on which every
  untargeted gradient attack failed: the untargeted losses are stuck (e.g. a saturated softmax
  or a model whose wrong-class scores all sit far below the top one), so an audit without the
  targeted attacks would overstate robustness.
* ``zero_gradients``: the input gradient of the margin loss is all zero or not finite on a
  notable share of samples.
* ``nondeterministic``: two forward passes in eval mode give different outputs.
* ``non_monotone``: an attack's robust accuracy rises with epsilon.

Example:
    >>> import torch
    >>> from attacks.evasion.masking import check_determinism
    >>> check_determinism(torch.nn.Linear(3, 2), torch.rand(4, 3)).fired
    False
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from attacks.evasion.base import attacking
from attacks.evasion.losses import loss_and_input_grad, margin
from attacks.evasion.norms import Norm, diameter

ZERO_GRADIENT_SHARE = 0.05
BLACKBOX_SHARE = 0.02
MONOTONE_TOLERANCE = 0.01
TARGETED_RELATIVE = 0.1


@dataclass(frozen=True)
class MaskingCheck:
    """The outcome of one check: ``fired`` means the message goes into the report's flags."""

    name: str
    fired: bool
    value: float
    threshold: float
    message: str
    skipped: bool = False

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        if isinstance(self.value, float) and not math.isfinite(self.value):
            d["value"] = None
        return d


def check_unbounded(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: Norm,
    bounds: tuple[float, float],
    num_classes: int,
    steps: int = 100,
    seed: int = 0,
) -> MaskingCheck:
    """PGD (margin loss, no random start) with epsilon = the whole input box must reach ~0."""
    from attacks.evasion.gradient import L2PGD, PGD

    eps = diameter(bounds, x.shape[1:], norm)
    cls = PGD if norm == "linf" else L2PGD
    attack = cls(steps=steps, restarts=1, random_start=False, loss="margin")
    acc = attack(model, x, y, [eps], bounds=bounds, seed=seed).robust_accuracy[0]
    chance = 1.0 / num_classes
    fired = acc > chance
    if fired:
        msg = (
            f"unbounded attack: {cls.name} with eps={eps:.3g} ({norm}; the whole input range, so any input "
            f"is reachable) leaves robust accuracy {acc:.3f}, above chance {chance:.3f}; an unbounded attack "
            "must reach ~0, so the gradients are probably masked (non-differentiable, saturated or "
            "randomised layers): do not trust the robust accuracies above"
        )
    else:
        msg = f"unbounded attack ({cls.name}, eps={eps:.3g}) reaches robust accuracy {acc:.3f} (chance {chance:.3f})"
    return MaskingCheck("unbounded", fired, acc, chance, msg)


def check_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, threshold: float = ZERO_GRADIENT_SHARE
) -> MaskingCheck:
    """Share of samples whose margin-loss input gradient is all zero or not finite."""
    with attacking(model, seed=0) as net:
        _, _, grad = loss_and_input_grad(net, x, y, margin)
    flat = grad.flatten(1)
    nonfinite = ~torch.isfinite(flat).all(1)
    zero = (flat.abs().amax(1) == 0) & ~nonfinite
    n = x.shape[0]
    share = float((zero | nonfinite).float().mean())
    fired = share > threshold
    seen = (
        f"{int(zero.sum())} of {n} samples have an all-zero input gradient and {int(nonfinite.sum())} a non-finite one"
    )
    if fired:
        msg = (
            f"zero gradients: {seen} ({share:.0%}, more than {threshold:.0%}); gradient attacks cannot make "
            "progress there, which suggests a non-differentiable or saturating layer (input quantisation, "
            "thresholding, softmax outputs instead of logits) masking the gradients: check with decision-based "
            "attacks or BPDA"
        )
    else:
        msg = f"input gradients: {seen}"
    return MaskingCheck("zero_gradients", fired, share, threshold, msg)


def check_determinism(model: nn.Module, x: torch.Tensor) -> MaskingCheck:
    """Two forward passes in eval mode on the same inputs must agree."""
    with attacking(model, seed=None) as net, torch.no_grad():
        a = net(x)
        b = net(x)
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    scale = float(a.abs().max()) if a.numel() else 0.0
    tol = 1e-5 * (1.0 + scale)
    fired = not diff <= tol  # NaN differences fire too
    if fired:
        changed = int((a.argmax(1) != b.argmax(1)).sum())
        msg = (
            f"nondeterministic outputs: two forward passes in eval mode differ by up to {diff:.3g} in the logits "
            f"({changed} of {x.shape[0]} predictions change); a randomised model defeats single-sample attacks, so "
            "robust accuracy is overstated: attack the expectation over the randomness (EOT) before trusting it"
        )
    else:
        msg = f"outputs are deterministic in eval mode (max difference {diff:.3g})"
    return MaskingCheck("nondeterministic", fired, diff, tol, msg)


def check_blackbox_vs_gradient(
    success: Mapping[str, torch.Tensor],
    kinds: Mapping[str, str],
    epsilons: Sequence[float],
    *,
    threshold: float = BLACKBOX_SHARE,
) -> MaskingCheck:
    """Samples fooled by a decision-based or random attack but by no gradient attack, per epsilon."""
    grad = [k for k in success if kinds[k] == "gradient"]
    other = [k for k in success if kinds[k] != "gradient"]
    if not grad or not other:
        return MaskingCheck(
            "blackbox_beats_gradient",
            False,
            float("nan"),
            threshold,
            "black-box vs gradient: skipped (needs at least one gradient attack and one decision-based or random attack)",
            skipped=True,
        )
    g = torch.stack([success[k] for k in grad]).any(0)
    o = torch.stack([success[k] for k in other]).any(0)
    only_other = o & ~g  # (E, N)
    counts = only_other.sum(1)
    n = only_other.shape[1]
    e = int(counts.argmax())
    count = int(counts[e])
    share = count / n if n else 0.0
    need = max(2, math.ceil(threshold * n))
    fired = count >= need
    if fired:
        winners = [k for k in other if bool((success[k][e] & ~g[e]).any())]
        msg = (
            f"black-box beats gradient: at eps={epsilons[e]:g}, {', '.join(winners)} fooled {count} of {n} samples "
            f"({share:.1%}) on which every gradient attack ({', '.join(grad)}) failed; gradient attacks should "
            "dominate decision-based and random ones, so the gradients are probably masked (obfuscated)"
        )
    else:
        msg = f"black-box vs gradient: at most {count} of {n} samples fooled only by {', '.join(other)}"
    return MaskingCheck("blackbox_beats_gradient", fired, share, threshold, msg)


def check_targeted_vs_untargeted(
    success: Mapping[str, torch.Tensor],
    kinds: Mapping[str, str],
    targeted: Collection[str],
    epsilons: Sequence[float],
    *,
    threshold: float = BLACKBOX_SHARE,
    relative: float = TARGETED_RELATIVE,
) -> MaskingCheck:
    """Samples fooled by a targeted gradient attack but by no untargeted gradient attack: fires
    when they are at least ``max(2, threshold * n)`` and at least ``relative`` of the samples the
    untargeted attacks left robust (a few such samples are normal for weak untargeted settings;
    a large share of the supposedly robust ones is not)."""
    untargeted = [k for k in success if kinds[k] == "gradient" and k not in targeted]
    aimed = [k for k in success if kinds[k] == "gradient" and k in targeted]
    if not untargeted or not aimed:
        return MaskingCheck(
            "targeted_beats_untargeted",
            False,
            float("nan"),
            threshold,
            "targeted vs untargeted: skipped (needs at least one untargeted and one targeted gradient attack)",
            skipped=True,
        )
    u = torch.stack([success[k] for k in untargeted]).to(torch.uint8).cummax(1).values.bool().any(0)
    t = torch.stack([success[k] for k in aimed]).any(0)
    only = t & ~u
    counts = only.sum(1)
    left = (~u).sum(1).clamp_min(1)  # samples the untargeted attacks left robust
    n = only.shape[1]
    need = max(2, math.ceil(threshold * n))
    fires = (counts >= need) & (counts.double() >= relative * left.double())
    e = int(torch.where(fires, counts, -1).argmax()) if bool(fires.any()) else int(counts.argmax())
    count = int(counts[e])
    share = count / n if n else 0.0
    fired = bool(fires[e])
    if fired:
        msg = (
            f"targeted beats untargeted: at eps={epsilons[e]:g}, {', '.join(aimed)} fooled {count} of {n} samples "
            f"({share:.1%}; {count / int(left[e]):.0%} of the {int(left[e])} they left robust) on which every untargeted "
            f"gradient attack ({', '.join(untargeted)}) failed; the untargeted "
            "losses are stuck there (saturated or masked gradients, or wrong-class scores far below the top one): "
            "the worst case includes the targeted attacks, but robustness measured by untargeted attacks alone "
            "(e.g. adversarial-training curves) is overstated"
        )
    else:
        msg = f"targeted vs untargeted: at most {count} of {n} samples fooled only by {', '.join(aimed)}"
    return MaskingCheck("targeted_beats_untargeted", fired, share, threshold, msg)


def check_monotone(
    robust: Mapping[str, Sequence[float]],
    epsilons: Sequence[float],
    *,
    tolerance: float = MONOTONE_TOLERANCE,
    cumulative: bool = False,
) -> MaskingCheck:
    """Robust accuracy must not rise with epsilon (a larger ball contains the smaller one).

    ``cumulative=True`` (a cascading audit's figures, monotone by construction) skips it."""
    if cumulative:
        return MaskingCheck(
            "non_monotone",
            False,
            float("nan"),
            tolerance,
            "non-monotone: skipped (a cascading audit carries every break to the larger epsilons; "
            "run with cascade=False to check each attack on its own)",
            skipped=True,
        )
    worst = 0.0
    where = ""
    for name, accs in robust.items():
        for i in range(len(accs) - 1):
            rise = accs[i + 1] - accs[i]
            if rise > worst:
                worst = rise
                where = (
                    f"{name} robust accuracy rises from {accs[i]:.3f} at eps={epsilons[i]:g} "
                    f"to {accs[i + 1]:.3f} at eps={epsilons[i + 1]:g}"
                )
    fired = worst > tolerance
    if fired:
        msg = (
            f"non-monotone: {where}; a larger budget contains every smaller perturbation, so the attack is failing "
            "at the larger epsilon (step size, or gradients that are masked or point the wrong way)"
        )
    else:
        msg = f"robust accuracy never rises with epsilon by more than {tolerance:g} (largest rise {worst:.3f})"
    return MaskingCheck("non_monotone", fired, worst, tolerance, msg)
