"""The ``--dp`` flags of ``securetrain train`` (a provider listed in ``securetrain.cli.plugins``).

Example:
    >>> import argparse
    >>> from defenses.privacy.cli import OPTION
    >>> p = argparse.ArgumentParser()
    >>> OPTION.add_arguments(p)
    >>> args = p.parse_args(["--dp", "--epsilon", "3", "--accountant", "rdp"])
    >>> d = OPTION.build(args)
    >>> d.target_epsilon, d.accountant
    (3.0, 'rdp')
    >>> OPTION.build(p.parse_args([])) is None
    True
"""

from __future__ import annotations

import argparse
from typing import Any

ACCOUNTANT_CHOICES = ("prv", "rdp", "gdp")
MODE_CHOICES = ("auto", "bk", "ghost", "hooks", "functorch", "ew", "vmap")

_DP_ONLY = ("epsilon", "delta", "noise_multiplier", "max_epsilon", "physical_batch_size")


class PrivacyOption:
    """Adds the differential-privacy flags and builds a :class:`DifferentialPrivacy` from them."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("differential privacy (DP-SGD)")
        g.add_argument("--dp", action="store_true", help="train with differential privacy (DP-SGD)")
        g.add_argument(
            "--epsilon", type=float, default=None, help="target epsilon (noise calibrated to the planned epochs)"
        )
        g.add_argument("--delta", type=float, default=None, help="target delta (default: min(1e-5, 0.1/n))")
        g.add_argument("--max-grad-norm", type=float, default=1.0, help="per-sample clipping norm C")
        g.add_argument(
            "--noise-multiplier",
            type=float,
            default=None,
            help="fixed noise multiplier (instead of calibrating to --epsilon)",
        )
        g.add_argument("--accountant", default="prv", choices=ACCOUNTANT_CHOICES, help="privacy accountant")
        g.add_argument(
            "--max-epsilon", type=float, default=None, help="hard cap: stop before a step that would spend more"
        )
        g.add_argument(
            "--physical-batch-size",
            type=int,
            default=None,
            help="split Poisson batches into chunks of at most this size",
        )
        g.add_argument("--grad-sample-mode", default="auto", choices=MODE_CHOICES, help="per-sample gradient engine")

    def build(self, args: argparse.Namespace) -> Any:
        """A ``DifferentialPrivacy`` defense when ``--dp`` was given, else ``None``."""
        from securetrain.errors import ConfigurationError

        if not getattr(args, "dp", False):
            given = [f"--{k.replace('_', '-')}" for k in _DP_ONLY if getattr(args, k, None) is not None]
            if given:
                raise ConfigurationError(f"{', '.join(given)} only apply with --dp; add --dp to train privately")
            return None
        from defenses.privacy.defense import DifferentialPrivacy

        return DifferentialPrivacy(
            epsilon=args.epsilon,
            delta=args.delta,
            max_grad_norm=args.max_grad_norm,
            noise_multiplier=args.noise_multiplier,
            accountant=args.accountant,
            max_epsilon=args.max_epsilon,
            physical_batch_size=args.physical_batch_size,
            grad_sample_mode=args.grad_sample_mode,
        )


OPTION = PrivacyOption()
