"""Known answers on linear classifiers: the smallest flipping perturbation is exact.

Binary: for logits ``(0, w.x + b)`` the smallest Linf perturbation that flips ``x`` is
``|w.x + b| / ||w||_1`` (L2: ``/ ||w||_2``). Multiclass: ``min_j (z_y - z_j) / ||w_y - w_j||_1``
(L2: ``||.||_2``), as long as the optimal point stays inside the input bounds (checked).
No attack may ever succeed below that size; exact-gradient attacks must succeed just above it,
decision-based ones not much above it.
"""

from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from attacks.evasion import available_attacks, get_attack
from securetrain import data

pytestmark = pytest.mark.usefixtures("one_thread")

BOUNDS = (-12.0, 12.0)
N = 15
BELOW = 0.999
# attack -> (factor of d* at which every sample must be flipped, factor the median must reach)
ABOVE: dict[str, tuple[float, float]] = {
    "fgsm": (1.01, 1.01),
    "pgd": (1.01, 1.01),
    "deepfool": (1.01, 1.01),
    "pgd-l2": (1.1, 1.01),  # the orthogonal part of the random start decays only by projection
    "cw-l2": (1.25, 1.25),  # binary search over the constant with 5 x 100 steps
    "hsj": (2.0, 1.5),
    "hsj-l2": (2.0, 1.5),
    "boundary": (4.0, 2.0),
    "apgd-ce": (1.01, 1.01),
    "apgd-t": (1.01, 1.01),
    "apgd-ce-l2": (1.1, 1.01),
    "apgd-t-l2": (1.1, 1.01),
    "fmn": (1.05, 1.01),
    "fmn-l2": (1.05, 1.01),
}
# Lighter settings where the registry default would only cost time here (the linear optimum is
# found in a few steps); Square's random search is checked only for never going below d* here
# (tests/attacks/test_evasion_apgd.py has its known answer).
KNOWN_SETTINGS: dict[str, dict[str, int]] = {
    "apgd-ce": {"steps": 20},
    "apgd-ce-l2": {"steps": 20},
    "apgd-t": {"steps": 20},
    "apgd-t-l2": {"steps": 20},
    "fmn": {"steps": 50},
    "fmn-l2": {"steps": 50},
    "square": {"queries": 200},
}
LIGHT_SAMPLES = 8  # samples (so epsilons) for the attacks in KNOWN_SETTINGS: they cost more per epsilon
DUAL = {"linf": 1.0, "l2": 2.0}


@pytest.fixture(scope="module")
def binary_linear() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A logistic regression fitted by scikit-learn on breast_cancer, as a 2-logit torch model."""
    x, y = data.load("breast_cancer", "train")
    xt, yt = data.load("breast_cancer", "test")
    clf = LogisticRegression(max_iter=5000).fit(x.numpy(), y.numpy())
    w = torch.tensor(clf.coef_[0], dtype=torch.float32)
    b = torch.tensor(clf.intercept_[0], dtype=torch.float32)
    model = nn.Linear(30, 2)
    with torch.no_grad():
        model.weight.copy_(torch.stack([torch.zeros(30), w]))
        model.bias.copy_(torch.stack([torch.zeros(()), b]))
    margin = xt.double() @ w.double() + b.double()
    correct = (margin > 0).long() == yt
    keep = (correct & (margin.abs() > 0.05)).nonzero().flatten()[:N]
    assert keep.numel() == N
    return model.eval(), xt[keep], yt[keep], margin[keep].abs()


def _first_success_factor(success: torch.Tensor, eps: torch.Tensor, dstar: torch.Tensor) -> torch.Tensor:
    """Per sample: smallest epsilon (as a multiple of d*) at which the attack succeeded (inf if never)."""
    big = torch.full_like(success, float("inf"), dtype=torch.float64)
    hits = torch.where(success, eps[:, None].double().expand_as(big), big)
    return hits.min(0).values / dstar


@pytest.mark.parametrize("name", available_attacks())
def test_binary_linear_exact_minimum(name: str, binary_linear) -> None:
    model, x, y, margin = binary_linear
    attack = get_attack(name, **KNOWN_SETTINGS.get(name, {}))
    if name in KNOWN_SETTINGS:
        x, y, margin = x[:LIGHT_SAMPLES], y[:LIGHT_SAMPLES], margin[:LIGHT_SAMPLES]
    w = model.weight[1].detach().double()
    dstar = margin / w.norm(p=DUAL[attack.norm])
    # the optimal perturbation must stay inside the bounds for d* to be the true minimum
    if attack.norm == "linf":
        reach = x.double().abs() + dstar[:, None]
    else:
        reach = x.double().abs() + dstar[:, None] * w.abs()[None, :] / w.norm()
    assert float(reach.max()) < BOUNDS[1]
    every, typical = ABOVE.get(name, (None, None))
    factors = [BELOW] + ([every, typical] if every and typical else [])
    eps = sorted({float(d * f) for d in dstar for f in factors})
    r = attack(model, x, y, eps, bounds=BOUNDS, num_classes=2, seed=0)
    assert bool(r.clean_correct.all())
    eps_t = torch.tensor(r.epsilons, dtype=torch.float64)
    below = eps_t[:, None] < dstar[None, :] * 0.9999
    assert not bool((r.success & below).any()), f"{name} flipped a sample below the exact minimum perturbation"
    if every is not None:
        found = _first_success_factor(r.success, eps_t, dstar)
        assert float(found.max()) <= every * (1 + 1e-6), f"{name}: found factors {found.tolist()}"
        assert float(found.median()) <= typical * (1 + 1e-6)


def test_binary_linear_minimization_distance_is_near_exact(binary_linear) -> None:
    """DeepFool's unclipped perturbation on a linear model is the exact minimum (plus its overshoot)."""
    model, x, y, margin = binary_linear
    w = model.weight[1].detach().double()
    dstar = margin / w.norm(p=2)
    r = get_attack("deepfool", overshoot=0.02)(model, x, y, [100.0], bounds=BOUNDS, seed=0)
    ratio = r.distances[0].double() / dstar
    assert bool(r.success[0].all())
    assert float(ratio.min()) >= 1.0 and float(ratio.max()) <= 1.03


@pytest.fixture(scope="module")
def multiclass_linear() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A random 4-class linear model on inputs in the middle of the unit box, labelled by itself."""
    g = torch.Generator().manual_seed(0)
    model = nn.Linear(20, 4)
    with torch.no_grad():
        model.weight.copy_(torch.randn(4, 20, generator=g) * 0.5)
        model.bias.copy_(torch.randn(4, generator=g) * 0.1)
    x = 0.4 + 0.2 * torch.rand(40, 20, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model.eval(), x, y


def _multiclass_dstar(model: nn.Module, x: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    w, b = model.weight.detach().double(), model.bias.detach().double()
    z = x.double() @ w.T + b
    out = []
    for i in range(x.shape[0]):
        yi = int(y[i])
        d = [(z[i, yi] - z[i, j]) / (w[yi] - w[j]).norm(p=p) for j in range(w.shape[0]) if j != yi]
        out.append(min(d))
    return torch.stack(out)


@pytest.mark.parametrize("name", available_attacks())
def test_multiclass_linear_never_below_minimum(name: str, multiclass_linear) -> None:
    model, x, y = multiclass_linear
    attack = get_attack(name, **KNOWN_SETTINGS.get(name, {}))
    if name in KNOWN_SETTINGS:
        x, y = x[:LIGHT_SAMPLES], y[:LIGHT_SAMPLES]
    dstar = _multiclass_dstar(model, x, y, DUAL[attack.norm])
    assert float(dstar.max()) < 0.4  # the optimum stays inside [0, 1] (inputs lie in [0.4, 0.6])
    factors = [BELOW, 1.01] if name == "deepfool" else [BELOW]
    eps = sorted({float(d * f) for d in dstar for f in factors})
    r = attack(model, x, y, eps, bounds=(0.0, 1.0), seed=0)
    eps_t = torch.tensor(r.epsilons, dtype=torch.float64)
    below = eps_t[:, None] < dstar[None, :] * 0.9999
    assert not bool((r.success & below).any()), f"{name} flipped a sample below the exact minimum perturbation"
    if name == "deepfool":
        found = _first_success_factor(r.success, eps_t, dstar)
        assert float(found.max()) <= 1.01 * (1 + 1e-6)
