"""Fast adversarial training (Wong et al. 2020): one FGSM step from a random start.

Example:
    >>> from defenses.adversarial import FastAdversarialTraining
    >>> at = FastAdversarialTraining(epsilon=0.1)
    >>> round(at.step_size, 4), at.attack.random_start
    (0.125, True)
"""

from __future__ import annotations

from typing import Any, ClassVar

from attacks.evasion import get_attack
from defenses.adversarial.base import METHODS, Bounds
from defenses.adversarial.pgd import ExampleReplacement
from securetrain.validation import check_positive

DEFAULT_REL_STEP = 1.25
"""Wong et al.'s step size, in units of epsilon."""


class FastAdversarialTraining(ExampleReplacement):
    """ "Fast is better than free": FGSM from a uniform random start in the epsilon ball.

    One gradient step of ``step_size`` (default ``1.25 * epsilon``) along the sign of the
    loss gradient, projected back into the ball, then training on the result: about two
    forward/backward passes per step instead of PGD's ``steps + 1``. The random start is
    what keeps single-step training from the "catastrophic overfitting" of plain FGSM
    training; step sizes much above ``1.25 * epsilon`` bring it back (Wong et al., Fig. 3),
    so check the robust accuracy with a multi-step attack (``securetrain audit``).
    """

    method: ClassVar[str] = "fgsm"

    def __init__(
        self,
        epsilon: float,
        *,
        step_size: float | None = None,
        clean_share: float = 0.0,
        bounds: Bounds | None = None,
    ) -> None:
        super().__init__(epsilon, clean_share=clean_share, bounds=bounds)
        self.step_size = (
            check_positive("step_size", step_size) if step_size is not None else DEFAULT_REL_STEP * self.epsilon
        )
        self.steps = 1
        self.attack = get_attack("fgsm", random_start=True, rel_stepsize=self.step_size / self.epsilon)

    def _settings(self) -> dict[str, Any]:
        return {"steps": 1, "step_size": self.step_size, "random_start": True, "attack": self.attack.config()}


METHODS.add("fgsm", FastAdversarialTraining)
