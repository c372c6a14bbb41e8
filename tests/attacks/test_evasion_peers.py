"""The default audit against peer implementations: its worst case is never above what
torchattacks' APGD-T (100 steps, 9 targets, the reference strength) and FAB-T find together.

Two digits CNNs, trained here: a plain one and a PGD-trained one. The audit and the peers
attack the same first ``N`` test images (a subset, for time) at Linf 0.05, 0.1 and 0.2; the
audit's worst case may exceed the union of the peers' successes by at most 0.5 points.
torchattacks is a test-only reference (installed with ``--no-deps``; it needs no torchvision for
these attacks).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from attacks.evasion import PGD, audit_robustness
from securetrain import data
from securetrain.models import build_model

torchattacks = pytest.importorskip("torchattacks")

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

N = 100
EPS = [0.05, 0.1, 0.2]
TOLERANCE = 0.005  # 0.5 points


def _pgd_trained() -> nn.Module:
    """A digits CNN trained on PGD examples (Linf 0.1, 5 steps), by a plain loop."""
    torch.manual_seed(1)
    x, y = data.load("digits", "train")
    model = build_model("cnn", (1, 8, 8), 10)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    attack = PGD(steps=5, restarts=1, loss="ce")
    g = torch.Generator().manual_seed(1)
    for epoch in range(4):
        perm = torch.randperm(x.shape[0], generator=g)
        for b in range(0, x.shape[0], 64):
            idx = perm[b : b + 64]
            xa = attack.perturb(model, x[idx], y[idx], 0.1, seed=epoch * 1000 + b)
            model.train()
            opt.zero_grad()
            nn.functional.cross_entropy(model(xa), y[idx]).backward()
            opt.step()
    return model.eval()


def _peer_union(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Samples that torchattacks' APGD-T or FAB-T fools (clean mistakes included)."""
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    broken = torch.zeros(x.shape[0], dtype=torch.bool)
    with torch.no_grad():
        broken |= model(x).argmax(1) != y
    peers = [
        torchattacks.APGDT(model, norm="Linf", eps=eps, steps=100, n_restarts=1, n_classes=10, seed=0),
        torchattacks.FAB(model, norm="Linf", eps=eps, multi_targeted=True, n_classes=10, n_restarts=1, seed=0),
    ]
    for peer in peers:
        adv = peer(x, y).detach()
        assert float((adv - x).abs().max()) <= eps + 1e-5
        with torch.no_grad():
            broken |= model(adv).argmax(1) != y
    return broken


@pytest.fixture(scope="module")
def models(frozen_cnn: nn.Module) -> dict[str, nn.Module]:
    return {"plain": frozen_cnn, "pgd-trained": _pgd_trained()}


@pytest.mark.parametrize("which", ["plain", "pgd-trained"])
def test_default_audit_is_at_least_as_strong_as_the_peers(which: str, models, digits_test) -> None:
    model = models[which]
    x, y = digits_test
    x, y = x[:N], y[:N]
    audit = audit_robustness(model, x, y, epsilons=EPS, preset="default", seed=0, progress=False, checks=False)
    for e, eps in enumerate(EPS):
        peer = 1.0 - float(_peer_union(model, x, y, eps).float().mean())
        assert audit.worst_case[e] <= peer + TOLERANCE, (
            f"{which}: at eps={eps} the audit's worst case {audit.worst_case[e]:.3f} is above the peers' "
            f"{peer:.3f} (first broken by: {audit.first_broken_by})"
        )
    assert audit.worst_case[-1] < audit.clean_accuracy  # the attacks bite
