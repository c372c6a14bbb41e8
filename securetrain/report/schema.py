"""The report schema: required keys of each section (keys may be added, these stay)."""

from __future__ import annotations

from collections.abc import Mapping
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


_NUMBER = "a number"
_NUMBER_OR_NULL = "a number or null"
_TEXT = "a string"
_LIST = "a list"
_OBJECT = "an object"
_BOOL = "true or false"

SECTION_TYPES: dict[str, dict[str, str]] = {
    "privacy": {"epsilon": _NUMBER_OR_NULL, "delta": _NUMBER_OR_NULL, "valid": _BOOL, "warnings": _LIST},
    "robustness": {"norm": _TEXT, "epsilons": _LIST, "attacks": _OBJECT, "worst_case": _LIST, "flags": _LIST},
    "membership": {"auc": _NUMBER_OR_NULL, "epsilon_lower_bound": _NUMBER_OR_NULL},
    "encrypted": {"scheme": _TEXT, "mode": _TEXT, "agreement": _NUMBER_OR_NULL, "per_sample_s": _NUMBER_OR_NULL},
}
"""What the renderers read from each section: the type each of these keys must have."""


def _has_type(value: Any, kind: str) -> bool:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {
        _NUMBER: is_number,
        _NUMBER_OR_NULL: is_number or value is None,
        _TEXT: isinstance(value, str),
        _LIST: isinstance(value, list),
        _OBJECT: isinstance(value, dict),
        _BOOL: isinstance(value, bool),
    }[kind]


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
    if not isinstance(section, Mapping):
        raise ReportError(f"report section {name!r} must be an object or null, got {type(section).__name__}")
    missing = sorted(set(SECTION_KEYS.get(name, ())) - set(section))
    if missing:
        raise ReportError(f"report section {name!r} is missing keys: {', '.join(missing)}")
    for key, kind in SECTION_TYPES.get(name, {}).items():
        if key in section and not _has_type(section[key], kind):
            raise ReportError(f"report section {name!r}: {key!r} must be {kind}, got {section[key]!r}")
