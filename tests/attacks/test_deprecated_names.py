"""Old public names of the attacks package still work for one release, with a DeprecationWarning."""

from __future__ import annotations

import importlib

import pytest

import attacks.evasion.base
import attacks.evasion.registry
import attacks.evasion.run_dir
import attacks.membership.base
import attacks.membership.registry
import attacks.membership.run_audit
from attacks.evasion import EVASION_ATTACKS, EvasionResult, audit_robustness_run
from attacks.membership import MEMBERSHIP_ATTACKS, MembershipResult, audit_membership_run, get_membership_attack

ALIASES = [
    ("attacks.evasion", "ATTACKS", EVASION_ATTACKS),
    ("attacks.evasion.registry", "ATTACKS", EVASION_ATTACKS),
    ("attacks.evasion", "AttackResult", EvasionResult),
    ("attacks.evasion.base", "AttackResult", EvasionResult),
    ("attacks.evasion", "audit_run", audit_robustness_run),
    ("attacks.evasion.run_dir", "audit_run", audit_robustness_run),
    ("attacks.membership", "ATTACKS", MEMBERSHIP_ATTACKS),
    ("attacks.membership.registry", "ATTACKS", MEMBERSHIP_ATTACKS),
    ("attacks.membership", "AttackResult", MembershipResult),
    ("attacks.membership.base", "AttackResult", MembershipResult),
    ("attacks.membership", "audit_run", audit_membership_run),
    ("attacks.membership.run_audit", "audit_run", audit_membership_run),
    ("attacks.membership", "make_attack", get_membership_attack),
    ("attacks.membership.registry", "make_attack", get_membership_attack),
]


@pytest.mark.parametrize(("module", "old", "new"), ALIASES, ids=[f"{m}.{o}" for m, o, _ in ALIASES])
def test_old_name_warns_and_returns_the_new_object(module: str, old: str, new: object) -> None:
    mod = importlib.import_module(module)
    with pytest.deprecated_call(match=rf"{old} is deprecated; use {getattr(new, '__name__', None) or ''}"):
        got = getattr(mod, old)
    assert got is new


def test_from_import_of_an_old_name_warns() -> None:
    with pytest.deprecated_call(match="audit_run is deprecated; use audit_membership_run"):
        from attacks.membership import audit_run  # noqa: F401
    with pytest.deprecated_call(match="AttackResult is deprecated; use EvasionResult"):
        from attacks.evasion import AttackResult  # noqa: F401


def test_unknown_names_still_raise_attribute_error() -> None:
    for mod in (
        attacks.evasion.base,
        attacks.evasion.registry,
        attacks.evasion.run_dir,
        attacks.membership.base,
        attacks.membership.registry,
        attacks.membership.run_audit,
    ):
        with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
            _ = mod.no_such_name


def test_new_names_are_distinct() -> None:
    assert EVASION_ATTACKS is not MEMBERSHIP_ATTACKS
    assert EvasionResult is not MembershipResult
    assert audit_robustness_run is not audit_membership_run
