"""Membership inference: was this example in the training set?

* Threshold attacks on the target model alone: :class:`LossThreshold` (Yeom et al. 2018),
  :class:`ConfidenceThreshold`, :class:`EntropyThreshold`, :class:`ModifiedEntropyThreshold`.
* The likelihood-ratio attack :class:`LiRA` (Carlini et al. 2022), online and offline, with
  shadow models trained by :func:`train_shadow_models` using the target's recipe
  (:class:`TrainingRecipe`, differential privacy included).
* Metrics from scikit-learn's ROC: AUC, TPR at FPR 0.1% and 1%, membership advantage
  (:func:`membership_metrics`).
* :func:`audit_membership_run`: everything above, the epsilon lower bounds of :mod:`attacks.audit` and the
  consistency check, on a run directory (what ``securetrain audit DIR --membership`` reports).
* :func:`audit`: the same, in one call, for your own model and your own training function
  ``train_fn(dataset, seed) -> nn.Module`` (see :mod:`attacks.membership.user_audit`).

Example:
    >>> import torch
    >>> from attacks.membership import LossThreshold, LiRA, train_shadow_models
    >>> from securetrain.training import TrainConfig, fit
    >>> def recipe(xy, seed):
    ...     torch.manual_seed(seed)
    ...     return fit(torch.nn.Linear(4, 2), xy, None, TrainConfig(epochs=2, progress=False, seed=seed)).model
    >>> x, y = torch.rand(80, 4), torch.randint(0, 2, (80,))
    >>> target = recipe((x[:40], y[:40]), seed=0)
    >>> shadows = train_shadow_models(recipe, (x, y), 4, seed=0)
    >>> result = LiRA(shadows, online=True)(target, (x[:40], y[:40]), (x[40:], y[40:]))
    >>> result.name, sorted(result.metrics.tpr_at_fpr)
    ('lira-online', [0.001, 0.01])
"""

from __future__ import annotations

from attacks.membership.base import MembershipAttack, MembershipResult
from attacks.membership.lira import LiRA, lira_scores
from attacks.membership.metrics import (
    DEFAULT_FPRS,
    MembershipMetrics,
    RocCurve,
    membership_metrics,
    tpr_at_fpr,
)
from attacks.membership.recipe import (
    TrainingRecipe,
    build_defense,
    register_defense_builder,
)
from attacks.membership.registry import (
    MEMBERSHIP_ATTACKS,
    SHADOW_ATTACKS,
    get_membership_attack,
)
from attacks.membership.run_audit import DEFAULT_ATTACKS, audit_membership_run
from attacks.membership.shadow import (
    Recipe,
    ShadowSet,
    inclusion_matrix,
    train_shadow_models,
)
from attacks.membership.signals import SIGNALS, model_signal
from attacks.membership.threshold import (
    ConfidenceThreshold,
    EntropyThreshold,
    LossThreshold,
    ModifiedEntropyThreshold,
    SignalThreshold,
)
from attacks.membership.user_audit import audit
from securetrain.deprecation import deprecated_aliases

_DEPRECATED = {
    "ATTACKS": "MEMBERSHIP_ATTACKS",
    "AttackResult": "MembershipResult",
    "audit_run": "audit_membership_run",
    "make_attack": "get_membership_attack",
}


__getattr__ = deprecated_aliases(__name__, _DEPRECATED)

__all__ = [
    "DEFAULT_ATTACKS",
    "DEFAULT_FPRS",
    "MEMBERSHIP_ATTACKS",
    "SHADOW_ATTACKS",
    "SIGNALS",
    "ConfidenceThreshold",
    "EntropyThreshold",
    "LiRA",
    "LossThreshold",
    "MembershipAttack",
    "MembershipMetrics",
    "MembershipResult",
    "ModifiedEntropyThreshold",
    "Recipe",
    "RocCurve",
    "ShadowSet",
    "SignalThreshold",
    "TrainingRecipe",
    "audit",
    "audit_membership_run",
    "build_defense",
    "get_membership_attack",
    "inclusion_matrix",
    "lira_scores",
    "membership_metrics",
    "model_signal",
    "register_defense_builder",
    "tpr_at_fpr",
    "train_shadow_models",
]
