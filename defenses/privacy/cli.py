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

_DP_ONLY = (
    "epsilon",
    "delta",
    "noise_multiplier",
    "max_epsilon",
    "physical_batch_size",
    "ema_decay",
    "max_memory_mb",
    "augmult",
    "augment",
)
GENERIC_CLIP = 1.0
"""The clipping norm without a flag or a recipe."""


class PrivacyOption:
    """Adds the differential-privacy flags and builds a :class:`DifferentialPrivacy` from them."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("differential privacy (DP-SGD)")
        g.add_argument(
            "--dp",
            action="store_true",
            help="train with differential privacy (DP-SGD); settings not given come from the recommended recipe "
            "for the data set and model (defenses.privacy.recommended), where there is one",
        )
        g.add_argument(
            "--epsilon",
            type=float,
            default=None,
            help="target epsilon (noise calibrated to the planned epochs; default: the recipe's)",
        )
        g.add_argument("--delta", type=float, default=None, help="target delta (default: min(1e-5, 0.1/n))")
        g.add_argument(
            "--max-grad-norm",
            type=float,
            default=None,
            help=f"per-sample clipping norm C (default {GENERIC_CLIP}, or the recommended recipe's)",
        )
        g.add_argument(
            "--noise-multiplier",
            type=float,
            default=None,
            help="fixed noise multiplier (instead of calibrating to --epsilon)",
        )
        g.add_argument(
            "--accountant", default=None, choices=ACCOUNTANT_CHOICES, help="privacy accountant (default prv)"
        )
        g.add_argument(
            "--max-epsilon", type=float, default=None, help="hard cap: stop before a step that would spend more"
        )
        g.add_argument(
            "--physical-batch-size",
            type=int,
            default=None,
            help="split Poisson batches into chunks of at most this size",
        )
        g.add_argument(
            "--max-memory-mb",
            type=float,
            default=None,
            help="memory budget (MB) of one step: the physical batch is the largest whose measured peak "
            "step memory fits (instead of --physical-batch-size)",
        )
        g.add_argument("--grad-sample-mode", default="auto", choices=MODE_CHOICES, help="per-sample gradient engine")
        g.add_argument(
            "--ema-decay",
            type=float,
            default=None,
            help="give the model the exponential moving average of its private iterates at the end "
            "(post-processing: no privacy cost), e.g. 0.999",
        )
        g.add_argument(
            "--augmult",
            type=int,
            default=None,
            metavar="K",
            help="augmentation multiplicity: K augmented views of each sample, their gradients averaged before "
            "clipping (same epsilon; about K times the compute per step; default 1)",
        )
        g.add_argument(
            "--augment",
            default=None,
            metavar="NAME",
            help="augmentation of the views: shift1, shift2, shift4, flip-shift4, identity or a registered name "
            "(default: a translation sized to the images; non-image data needs one)",
        )

    def build(self, args: argparse.Namespace) -> Any:
        """A ``DifferentialPrivacy`` defense when ``--dp`` was given, else ``None``."""
        from securetrain.errors import ConfigurationError

        if not getattr(args, "dp", False):
            given = [f"--{k.replace('_', '-')}" for k in _DP_ONLY if getattr(args, k, None) is not None]
            if given:
                raise ConfigurationError(f"{', '.join(given)} only apply with --dp; add --dp to train privately")
            return None
        from defenses.privacy.defense import DifferentialPrivacy

        recipe = recipe_for(args)
        settings: dict[str, Any] = dict(recipe.settings) if recipe is not None else {}
        epsilon = args.epsilon
        if epsilon is None and args.noise_multiplier is None and recipe is not None:
            epsilon = recipe.epsilon

        def pick(name: str, generic: Any) -> Any:
            given = getattr(args, name, None)
            return given if given is not None else settings.get(name, generic)

        return DifferentialPrivacy(
            epsilon=epsilon,
            delta=pick("delta", None),
            max_grad_norm=pick("max_grad_norm", GENERIC_CLIP),
            noise_multiplier=args.noise_multiplier,
            accountant=pick("accountant", "prv"),
            max_epsilon=args.max_epsilon,
            physical_batch_size=args.physical_batch_size,
            max_memory_mb=args.max_memory_mb,
            grad_sample_mode=args.grad_sample_mode,
            ema_decay=pick("ema_decay", None),
            augmult=pick("augmult", 1),
            augment=pick("augment", None),
        )


def recipe_for(args: argparse.Namespace) -> Any:
    """The recommended recipe behind ``--dp`` for the flags' data set and model (``None``: no ``--dp`` or no recipe).

    Example:
        >>> import argparse
        >>> recipe_for(argparse.Namespace(dp=True, data="digits", model=None, epsilon=1.0)).epsilon
        1.0
        >>> recipe_for(argparse.Namespace(dp=False, data="digits", model=None, epsilon=None)) is None
        True
    """
    if not getattr(args, "dp", False):
        return None
    from defenses.privacy.presets import has_recipe, recommended

    data, model = getattr(args, "data", None), getattr(args, "model", None)
    if not isinstance(data, str) or not has_recipe(data, model):
        return None
    return recommended(data, model, epsilon=getattr(args, "epsilon", None))


OPTION = PrivacyOption()
