"""The white-box DP-SGD audit catches planted implementation bugs and never flags the correct implementation."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch

from attacks.audit import DPAuditResult, audit_dp_sgd
from attacks.audit.gaussian import gaussian_epsilon_lower_bound, gdp_delta, gdp_epsilon
from attacks.membership import TrainingRecipe
from securetrain.errors import AttackError
from securetrain.training import DEFENSES, TrainConfig

from .planted_dp_bugs import BUGS

CANARIES = 1000
SIGMA = 2.8  # at q = 0.5 (550 of 600 samples + about 500 canaries) and 20 to 30 steps: epsilon 4 to 5


def audit_recipe(
    defense: str = "privacy",
    *,
    sigma: float = SIGMA,
    epochs: int = 10,
    batch: int = 550,
    hidden: int = 16,
    accountant: str = "rdp",
) -> TrainingRecipe:
    """A 64-16-2 MLP (1090 parameters) trained with DP-SGD at about q = 0.5 for 20 steps, inputs near 0."""
    return TrainingRecipe(
        model_name="mlp",
        input_shape=(64,),
        num_classes=2,
        bounds=(-1.0, 1.0),
        model_kwargs={"hidden": [hidden]},
        train_config=TrainConfig(epochs=epochs, batch_size=batch, optimizer="sgd", lr=0.1, momentum=0.0),
        defense_configs=[
            {"name": defense, "noise_multiplier": sigma, "delta": 1e-5, "accountant": accountant, "seed": 1}
        ],
    )


def audit_data(seed: int = 0, n: int = 600) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 64, generator=g).mul(0.01).clamp(-1, 1)
    return x, torch.randint(0, 2, (n,), generator=g)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correct_implementation_is_not_flagged(seed):
    result = audit_dp_sgd(audit_recipe(), canaries=CANARIES, train=audit_data(seed), seed=seed)
    assert 3.0 < result.claimed_epsilon < 5.5
    assert not result.violated, result.explanation
    assert result.epsilon_lower_bound <= result.claimed_epsilon
    # the audit has power: the canaries separate, and the bound is a sizeable part of the claim
    assert result.gaussian.mu_hat > 0.7
    assert result.epsilon_lower_bound > 0.5 * result.claimed_epsilon, result.explanation
    # the measured mechanism is the claimed one: rate and noise as accounted, every step observed
    assert abs(result.mechanism.noise_multiplier / SIGMA - 1) < 0.1
    assert abs(result.mechanism.sample_rate - result.to_dict()["mechanism"]["sample_rate"]) < 1e-6
    assert result.mechanism.steps == result.steps


@cache
def audit_of_planted_bug(bug: str) -> DPAuditResult:
    """The audit of the run with planted ``bug`` (computed once: two tests read the same audit; the result is frozen)."""
    cls = BUGS[bug]
    with DEFENSES.temporarily(cls.name, cls):
        return audit_dp_sgd(audit_recipe(cls.name), canaries=CANARIES, train=audit_data(0), seed=0)


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_planted_bug_is_flagged(bug):
    result = audit_of_planted_bug(bug)
    assert result.claimed_epsilon < 5.5
    assert result.violated, result.explanation
    assert result.epsilon_lower_bound > result.claimed_epsilon
    assert result.confidence == 0.95
    assert "exceeds the claimed epsilon" in result.explanation


def test_a_refuted_claim_marks_the_report_not_valid():
    from attacks.audit import merge_into_membership
    from securetrain.report import Report

    result = audit_of_planted_bug("half-noise")
    report = Report(
        data={},
        model={},
        accuracy=0.5,
        privacy={
            "epsilon": result.claimed_epsilon,
            "delta": 1e-5,
            "accountant": "prv",
            "noise_multiplier": 1.0,
            "max_grad_norm": 1.0,
            "sample_rate": 0.1,
            "steps": 10,
            "poisson_sampling": True,
            "valid": True,
            "warnings": [],
        },
    )
    report.set_membership(merge_into_membership(None, result))
    assert report.privacy is not None and report.privacy["valid"] is False
    assert "exceeds the claimed epsilon" in report.privacy["warnings"][-1]
    assert report.membership is not None and report.membership["epsilon_lower_bound_source"] == "dp_audit"
    assert report.membership["dp_audit"]["violated"] is True


def test_gaussian_bound_known_answers():
    assert gdp_epsilon(0.0, 1e-5) == 0.0
    assert abs(gdp_delta(gdp_epsilon(2.0, 1e-5), 2.0) - 1e-5) < 1e-12
    rng = np.random.default_rng(1)
    same = gaussian_epsilon_lower_bound(rng.normal(0, 1, 500), rng.normal(0, 1, 500), delta=1e-5)
    assert same.epsilon < 0.5  # no separation: (almost) nothing to bound
    with pytest.raises(AttackError, match="at least 2 included and 2 excluded"):
        gaussian_epsilon_lower_bound([1.0], [0.0, 1.0], delta=1e-5)


def test_bad_requests_are_refused():
    x, y = audit_data(0, n=64)
    with pytest.raises(AttackError, match="at least 4 canaries"):
        audit_dp_sgd(audit_recipe(), canaries=2, train=(x, y))
    with pytest.raises(AttackError, match="unknown DP audit mode"):
        audit_dp_sgd(audit_recipe(), canaries=10, mode="black-box", train=(x, y))
    with pytest.raises(AttackError, match="needs its training data"):
        audit_dp_sgd(audit_recipe(), canaries=10)
    with pytest.raises(AttackError, match="distinct parameter coordinates"):
        audit_dp_sgd(audit_recipe(hidden=1, batch=60), canaries=500, train=(x, y))
