"""The shared suite every registered attack must pass (like scikit-learn's parametrize_with_checks).

Each attack runs once (with its registry defaults) on 64 digits test images against the trained
CNN, put beforehand in train mode with known parameter gradients; the tests then check the run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from attacks.evasion import EvasionResult, available_attacks, get_attack

pytestmark = pytest.mark.usefixtures("one_thread")

N = 64
EPS = {"linf": [0.0, 0.1, 0.2], "l2": [0.0, 1.0, 1.5]}
MODERATE = 2  # index into EPS: the epsilon at which accuracy must drop
RETRIES = 3  # stochastic attacks get at most this many seeds to lower accuracy
# Lighter settings for the slowest attacks: the properties checked here do not depend on
# strength; strength is covered by test_evasion_audit.py and benchmarks/bench_attacks.py.
SUITE_SETTINGS: dict[str, dict[str, int]] = {
    "hsj": {"steps": 6, "initial_evals": 25, "max_evals": 200},
    "hsj-l2": {"steps": 6, "initial_evals": 25, "max_evals": 200},
    "boundary": {"steps": 300},
    "cw-l2": {"binary_search_steps": 3, "steps": 50},
    "apgd-t": {"steps": 20, "targets": 2},
    "apgd-t-l2": {"steps": 20, "targets": 2},
    "apgd-ce": {"steps": 20},
    "apgd-ce-l2": {"steps": 20},
    "fmn": {"steps": 30},
    "fmn-l2": {"steps": 30},
    "square": {"queries": 200},
}


@dataclass
class SuiteRun:
    name: str
    result: EvasionResult
    x: torch.Tensor
    y: torch.Tensor
    x_before: torch.Tensor
    y_before: torch.Tensor
    model: nn.Module
    modes_before: list[bool]
    modes_after: list[bool]
    grads_before: list[torch.Tensor]
    grads_after: list[torch.Tensor | None]
    requires_grad_after: list[bool]
    seeds_tried: int


def _run(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> SuiteRun:
    attack = get_attack(name, **SUITE_SETTINGS.get(name, {}))
    model.train()
    model.head.eval()  # a mixed state: each submodule's mode must come back as it was
    modes_before = [m.training for m in model.modules()]
    for i, p in enumerate(model.parameters()):
        p.grad = torch.full_like(p, 0.5 + i)
    grads_before = [p.grad for p in model.parameters()]
    grad_values = [g.clone() for g in grads_before]
    x_before, y_before = x.clone(), y.clone()
    eps = EPS[attack.norm]
    result = attack(model, x, y, eps, bounds=(0.0, 1.0), num_classes=10, seed=0)
    tried = 1
    while attack.stochastic and tried < RETRIES and not result.robust_accuracy[MODERATE] < result.clean_accuracy:
        result = attack(model, x, y, eps, bounds=(0.0, 1.0), num_classes=10, seed=tried)
        tried += 1
    params = list(model.parameters())
    grads_after = [p.grad for p in params]
    same_objects = all(a is b for a, b in zip(grads_after, grads_before))
    return SuiteRun(
        name=name,
        result=result,
        x=x,
        y=y,
        x_before=x_before,
        y_before=y_before,
        model=model,
        modes_before=modes_before,
        modes_after=[m.training for m in model.modules()],
        grads_before=grad_values,
        grads_after=grads_after if same_objects else [None] * len(params),
        requires_grad_after=[p.requires_grad for p in params],
        seeds_tried=tried,
    )


@pytest.fixture(scope="module", params=available_attacks())
def suite_run(request: pytest.FixtureRequest, frozen_cnn: nn.Module, digits_test) -> SuiteRun:
    x, y = digits_test
    return _run(request.param, copy.deepcopy(frozen_cnn), x[:N].clone(), y[:N].clone())


def test_registry_lists_the_required_attacks() -> None:
    required = {"fgsm", "pgd", "pgd-l2", "cw-l2", "deepfool", "hsj", "random", "apgd-ce", "apgd-t", "fmn", "square"}
    assert required <= set(available_attacks())


def test_result_shapes(suite_run: SuiteRun) -> None:
    r = suite_run.result
    eps = EPS[r.norm]
    assert r.attack == suite_run.name
    assert r.epsilons == tuple(eps)
    assert len(r.adversarials) == len(eps)
    assert r.success.shape == (len(eps), N) and r.success.dtype == torch.bool
    assert r.distances.shape == (len(eps), N)
    assert all(a.shape == suite_run.x.shape for a in r.adversarials)


def test_within_norm_ball(suite_run: SuiteRun) -> None:
    r = suite_run.result
    for e, adv, dist in zip(r.epsilons, r.adversarials, r.distances):
        delta = (adv - suite_run.x).flatten(1)
        measured = delta.abs().amax(1) if r.norm == "linf" else delta.norm(dim=1)
        assert float(measured.max()) <= e + 1e-5, f"{r.attack} left the {r.norm} ball of radius {e}"
        assert torch.allclose(measured, dist, atol=1e-6)
    assert torch.equal(r.adversarials[0], suite_run.x), "epsilon 0 must return the inputs unchanged"


def test_within_bounds(suite_run: SuiteRun) -> None:
    for adv in suite_run.result.adversarials:
        assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0


def test_input_not_mutated(suite_run: SuiteRun) -> None:
    assert torch.equal(suite_run.x, suite_run.x_before)
    assert torch.equal(suite_run.y, suite_run.y_before)
    assert all(a.data_ptr() != suite_run.x.data_ptr() for a in suite_run.result.adversarials)


def test_model_mode_restored(suite_run: SuiteRun) -> None:
    assert suite_run.modes_after == suite_run.modes_before
    assert suite_run.model.training and not suite_run.model.head.training


def test_parameter_gradients_restored(suite_run: SuiteRun) -> None:
    assert all(g is not None for g in suite_run.grads_after), "the .grad tensors must be the very same objects"
    for before, after in zip(suite_run.grads_before, suite_run.grads_after):
        assert torch.equal(before, after)
    assert all(suite_run.requires_grad_after)


def test_success_matches_the_model(suite_run: SuiteRun, frozen_cnn: nn.Module) -> None:
    r = suite_run.result
    with torch.no_grad():
        clean_pred = frozen_cnn(suite_run.x).argmax(1)
        assert torch.equal(r.clean_correct, clean_pred == suite_run.y)
        for adv, success in zip(r.adversarials, r.success):
            pred = frozen_cnn(adv).argmax(1)
            assert torch.equal(success, pred != suite_run.y)


def test_lowers_accuracy_of_a_trained_model(suite_run: SuiteRun) -> None:
    r = suite_run.result
    assert r.clean_accuracy > 0.85
    assert r.robust_accuracy[MODERATE] < r.clean_accuracy, (
        f"{r.attack} did not lower accuracy at eps={r.epsilons[MODERATE]} in {suite_run.seeds_tried} tries"
    )
    assert r.robust_accuracy[0] == pytest.approx(r.clean_accuracy)


@pytest.mark.parametrize("name", ["pgd", "random", "hsj"])
def test_same_seed_same_result(name: str, frozen_cnn: nn.Module, digits_test) -> None:
    x, y = digits_test
    attack = get_attack(name, **({"steps": 4, "initial_evals": 20} if name == "hsj" else {}))
    a = attack(frozen_cnn, x[:24], y[:24], [0.2], seed=3)
    b = attack(frozen_cnn, x[:24], y[:24], [0.2], seed=3)
    assert torch.equal(a.adversarials[0], b.adversarials[0])
    state = torch.get_rng_state()
    attack(frozen_cnn, x[:8], y[:8], [0.2], seed=5)
    assert torch.equal(torch.get_rng_state(), state), "a seeded attack must not advance the caller's RNG"
