"""The report schema: required keys of each section (keys may be added, these stay)."""

from __future__ import annotations

from typing import Any

from securetrain.errors import ReportError

SCHEMA = "securetrain.report/1"

SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "privacy": (
        "epsilon",
        "delta",
        "accountant",
        "noise_multiplier",
        "max_grad_norm",
        "sample_rate",
        "steps",
        "poisson_sampling",
        "valid",
        "warnings",
    ),
    "robustness": ("norm", "epsilons", "attacks", "worst_case", "flags"),
    "membership": ("attack", "auc", "tpr_at_fpr", "advantage", "epsilon_lower_bound"),
    "encrypted": (
        "scheme",
        "poly_modulus_degree",
        "coeff_mod_bit_sizes",
        "security_bits",
        "mode",
        "agreement",
        "max_abs_error",
        "latency_s",
        "per_sample_s",
        "ciphertext_bytes",
        "public_context_bytes",
    ),
}


def check_section(name: str, section: Any) -> None:
    """Raise :class:`ReportError` if ``section`` misses a required key of ``name``.

    Example:
        >>> check_section("membership", None)
        >>> check_section("membership", {"auc": 0.5})
        Traceback (most recent call last):
        ...
        securetrain.errors.ReportError: report section 'membership' is missing keys: advantage, attack, epsilon_lower_bound, tpr_at_fpr
    """
    if section is None:
        return
    if not isinstance(section, dict):
        raise ReportError(f"report section {name!r} must be an object or null, got {type(section).__name__}")
    missing = sorted(set(SECTION_KEYS.get(name, ())) - set(section))
    if missing:
        raise ReportError(f"report section {name!r} is missing keys: {', '.join(missing)}")
