"""Adversarial training: PGD (Madry et al.), fast FGSM (Wong et al.) and TRADES, alone or with DP.

Each method is a :class:`securetrain.training.Defense` that transforms the per-sample loss,
so it plugs into the built-in loop (``securetrain.train`` / ``securetrain train
--adversarial``), into a hand-written loop through :func:`securetrain.training.protect`, and
stacks with :class:`defenses.privacy.DifferentialPrivacy`: the attack runs with the
per-sample hooks off and leaves no gradient behind, and the adversarial loss is per sample,
so it is clipped and noised like any other and the privacy accounting is unchanged. Without
other defenses, ``defense.loss(model, x, y)`` is the whole integration.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.adversarial import FastAdversarialTraining
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> at = FastAdversarialTraining(epsilon=0.1)
    >>> x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    >>> opt.zero_grad()
    >>> at.loss(model, x, y).backward()
    >>> opt.step()
    >>> at.examples
    8
"""

from __future__ import annotations

from defenses.adversarial.base import AdversarialTraining
from defenses.adversarial.fast import FastAdversarialTraining
from defenses.adversarial.kl_attack import KLPGD, kl_from_clean
from defenses.adversarial.pgd import ExampleReplacement, PGDAdversarialTraining
from defenses.adversarial.recommended import Recipe, recommended_adversarial
from defenses.adversarial.registry import METHODS, make_adversarial, register_method
from defenses.adversarial.trades import TRADES

__all__ = [
    "KLPGD",
    "METHODS",
    "TRADES",
    "AdversarialTraining",
    "ExampleReplacement",
    "FastAdversarialTraining",
    "PGDAdversarialTraining",
    "Recipe",
    "kl_from_clean",
    "make_adversarial",
    "recommended_adversarial",
    "register_method",
]


def recommended(private: bool = False, epsilon: float = 0.1) -> Recipe:
    """Deprecated alias of :func:`recommended_adversarial` (the privacy package has a different ``recommended``)."""
    import warnings

    warnings.warn(
        "defenses.adversarial.recommended is deprecated (the privacy package has a different 'recommended'); "
        "use defenses.adversarial.recommended_adversarial",
        DeprecationWarning,
        stacklevel=2,
    )
    return recommended_adversarial(private=private, epsilon=epsilon)
