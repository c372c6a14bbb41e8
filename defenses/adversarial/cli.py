"""``securetrain train --adversarial {pgd,fgsm,trades} --adv-eps X [--adv-steps K] ...``.

Loaded by :mod:`securetrain.cli.plugins` (``defenses.adversarial.cli:OPTION``). The flags
combine with ``--dp``. Epsilon is checked against the data set's input range when
training starts (the defense's ``setup``), since the flags alone do not name the data.

Example:
    >>> import argparse
    >>> from defenses.adversarial.cli import OPTION
    >>> p = argparse.ArgumentParser()
    >>> OPTION.add_arguments(p)
    >>> d = OPTION.build(p.parse_args(["--adversarial", "pgd", "--adv-eps", "0.1", "--adv-steps", "5"]))
    >>> type(d).__name__, d.epsilon, d.steps
    ('PGDAdversarialTraining', 0.1, 5)
    >>> OPTION.build(p.parse_args([])) is None
    True
"""

from __future__ import annotations

import argparse

from securetrain.errors import ConfigurationError
from securetrain.training import Defense

_SETTING_FLAGS = {
    "adv_steps": ("--adv-steps", "steps"),
    "adv_step_size": ("--adv-step-size", "step_size"),
    "adv_clean_share": ("--adv-clean-share", "clean_share"),
    "trades_beta": ("--trades-beta", "beta"),
}


class AdversarialOption:
    """Adds the adversarial-training flags and builds the defense from them."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from defenses.adversarial.registry import METHODS

        g = parser.add_argument_group("adversarial training")
        g.add_argument(
            "--adversarial",
            choices=METHODS.names(),
            default=None,
            help="train on adversarial examples: pgd (Madry), fgsm (fast, random start), trades",
        )
        g.add_argument(
            "--adv-eps",
            type=float,
            default=None,
            help="L-infinity radius of the training attack, in input units (e.g. 0.1 for inputs in [0, 1])",
        )
        g.add_argument("--adv-steps", type=int, default=None, help="attack steps for pgd / trades (default 7)")
        g.add_argument(
            "--adv-step-size", type=float, default=None, help="attack step size (default 2.5*eps/steps; fgsm: 1.25*eps)"
        )
        g.add_argument(
            "--adv-clean-share",
            type=float,
            default=None,
            help="share of each batch trained on clean inputs, in [0, 1) (default 0)",
        )
        g.add_argument("--trades-beta", type=float, default=None, help="trades: weight of the KL term (default 6)")

    def build(self, args: argparse.Namespace) -> Defense | None:
        from defenses.adversarial.registry import make_adversarial

        method = getattr(args, "adversarial", None)
        given = {flag: getattr(args, dest, None) for dest, (flag, _) in _SETTING_FLAGS.items()}
        eps = getattr(args, "adv_eps", None)
        if method is None:
            extra = [f for f, v in given.items() if v is not None] + (["--adv-eps"] if eps is not None else [])
            if extra:
                raise ConfigurationError(
                    f"{', '.join(extra)} given without --adversarial; add --adversarial pgd|fgsm|trades"
                )
            return None
        if eps is None:
            raise ConfigurationError(
                f"--adversarial {method} needs --adv-eps, the L-infinity radius in input units "
                "(e.g. --adv-eps 0.1 for inputs in [0, 1])"
            )
        settings = {}
        for dest, (_flag, name) in _SETTING_FLAGS.items():
            value = getattr(args, dest, None)
            if value is None:
                continue
            if name == "beta" and method != "trades":
                raise ConfigurationError(f"--trades-beta applies to --adversarial trades only, not {method}")
            if name == "steps" and method == "fgsm":
                if value != 1:
                    raise ConfigurationError(
                        f"--adversarial fgsm makes exactly one step, got --adv-steps {value}; use --adversarial pgd for more"
                    )
                continue
            settings[name] = value
        return make_adversarial(method, eps, **settings)


OPTION = AdversarialOption()
