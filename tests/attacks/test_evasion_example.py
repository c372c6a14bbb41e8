"""Smoke-run examples/audit_any_model.py (auditing a user's own nn.Module on tensors)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from securetrain.report.schema import check_section

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "audit_any_model.py"


def test_audit_any_model_example(capsys) -> None:
    module = runpy.run_path(str(EXAMPLE), run_name="example")
    section = module["main"](["--samples", "60", "--epochs", "3"])
    check_section("robustness", section)
    assert section["n_samples"] == 60 and section["preset"] == "quick"
    assert section["worst_case"][-1] < section["worst_case"][0]
    out = capsys.readouterr().out
    assert "clean accuracy" in out and "worst case" in out and "flags:" in out
