"""examples/white_box_dp_audit.py runs: the audit does not refute a correct run's claim, and
augmentation multiplicity leaves the spent epsilon exactly as it was."""

from __future__ import annotations

import runpy
from pathlib import Path


def test_white_box_dp_audit_example_runs():
    module = runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples" / "white_box_dp_audit.py"))
    out = module["main"](canaries=200, epochs=1)
    audit = out["audit"]
    assert audit["claim_refuted"] is False
    assert 0.0 <= audit["epsilon_lower_bound"] < audit["claimed_epsilon"]
    assert audit["method"] in ("counting", "gaussian", "mechanism")
    assert out["augmult=2"]["epsilon"] == out["augmult=1"]["epsilon"] > 0
