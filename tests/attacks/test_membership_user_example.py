"""Smoke-run examples/audit_my_training.py (the one-call membership audit of a user's own loop)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from securetrain.report.schema import check_section

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "audit_my_training.py"


def test_audit_my_training_example(capsys: pytest.CaptureFixture[str]) -> None:
    module = runpy.run_path(str(EXAMPLE), run_name="example")
    section = module["main"](["--members", "200", "--epochs", "3", "--shadow-models", "2"])
    check_section("membership", section)
    assert (section["members"], section["nonmembers"], section["shadow_models"]) == (200, 397, 2)
    assert section["canary"]["canaries"] == 100
    out = capsys.readouterr().out
    assert "strongest attack" in out and "epsilon lower bound" in out
