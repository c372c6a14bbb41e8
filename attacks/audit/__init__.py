"""Empirical privacy audits: lower bounds on epsilon that can refute a reported guarantee.

* :func:`epsilon_lower_bound` / :func:`epsilon_lower_bound_from_scores`: from an attack's
  true- and false-positive counts, with Clopper-Pearson confidence limits at the run's delta.
* :func:`canary_audit` / :func:`one_run_epsilon_lower_bound`: the one-training-run canary
  audit of Steinke, Nasr and Jagielski (2023).
* :func:`check_consistency` / :func:`check_counts`: flag a run whose lower bound exceeds the
  epsilon it reports.
* :func:`audit_dp_sgd`: the white-box one-run audit of a DP-SGD implementation (Dirac gradient
  canaries, every noisy gradient observed): the counting bound on the per-step likelihood-ratio
  score (:func:`likelihood_ratio_scores`), a Gaussian-statistic bound
  (:func:`gaussian_epsilon_lower_bound`) and the epsilon of the measured mechanism
  (:func:`fit_subsampled_gaussian`).

Example:
    >>> from attacks.audit import epsilon_lower_bound, check_counts
    >>> round(epsilon_lower_bound(tp=100, n_pos=100, fp=0, n_neg=100, delta=0.0).epsilon, 4)
    3.2813
    >>> check_counts(0.1, 1e-5, tp=60, n_pos=100, fp=5, n_neg=100).violated
    True
"""

from __future__ import annotations

from attacks.audit.bounds import (
    EpsilonBound,
    clopper_pearson,
    epsilon_from_rates,
    epsilon_lower_bound,
    epsilon_lower_bound_from_scores,
)
from attacks.audit.canary import (
    CanaryAuditResult,
    audit_canary_scores,
    canary_audit,
    default_guess_counts,
    make_canaries,
)
from attacks.audit.consistency import ConsistencyCheck, check_consistency, check_counts
from attacks.audit.dp_audit import DPAuditResult, audit_dp_sgd, merge_into_membership
from attacks.audit.gaussian import GaussianBound, gaussian_epsilon_lower_bound, gdp_delta, gdp_epsilon
from attacks.audit.likelihood import likelihood_ratio_scores
from attacks.audit.mechanism_fit import MechanismFit, fit_subsampled_gaussian, subsampled_gaussian_epsilon
from attacks.audit.one_run import one_run_epsilon_lower_bound, one_run_p_value
from attacks.audit.white_box import DiracCanaryPlanter

__all__ = [
    "CanaryAuditResult",
    "ConsistencyCheck",
    "DPAuditResult",
    "DiracCanaryPlanter",
    "EpsilonBound",
    "GaussianBound",
    "MechanismFit",
    "audit_canary_scores",
    "audit_dp_sgd",
    "canary_audit",
    "check_consistency",
    "check_counts",
    "clopper_pearson",
    "default_guess_counts",
    "epsilon_from_rates",
    "epsilon_lower_bound",
    "epsilon_lower_bound_from_scores",
    "fit_subsampled_gaussian",
    "gaussian_epsilon_lower_bound",
    "gdp_delta",
    "gdp_epsilon",
    "likelihood_ratio_scores",
    "make_canaries",
    "merge_into_membership",
    "one_run_epsilon_lower_bound",
    "one_run_p_value",
    "subsampled_gaussian_epsilon",
]
