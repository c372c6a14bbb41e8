"""Measured fast settings for adversarial (and private + adversarial) training on digits.

The figures behind them are in ``docs/adversarial.md`` and ``benchmarks/bench_adversarial.py``.

Example:
    >>> from defenses.adversarial import recommended_adversarial
    >>> r = recommended_adversarial()
    >>> r.method, r.epsilon
    ('fgsm', 0.1)
    >>> type(r.defense()).__name__
    'FastAdversarialTraining'

``Recipe`` is :class:`defenses.recipe.Recipe`, the type private training's recipes share.
"""

from __future__ import annotations

from defenses.recipe import Recipe


def recommended_adversarial(private: bool = False, epsilon: float = 0.1) -> Recipe:
    """The fast recipe for the digits CNN at L-infinity ``epsilon`` (default 0.1).

    Both use :class:`~defenses.adversarial.FastAdversarialTraining` (FGSM from a random
    start, step ``1.25 * epsilon``), Adam at learning rate 0.01. Measured on digits at
    epsilon 0.1 (3 seeds, ``docs/adversarial.md``): 15 epochs of batch 64 reach the robust
    accuracy of 10 epochs of PGD-7 training (within a point) at about a third of its time.
    ``private=True`` is the schedule to stack with ``DifferentialPrivacy`` (epsilon 3): 20
    epochs of (expected) batch 128, where more, larger batches pay for the noise.
    """
    train = {"data": "digits", "model": "cnn", "lr": 1e-2}
    if private:
        return Recipe("fgsm", epsilon, {}, {**train, "epochs": 20, "batch_size": 128})
    return Recipe("fgsm", epsilon, {}, {**train, "epochs": 15, "batch_size": 64})


__all__ = ["Recipe", "recommended_adversarial"]
