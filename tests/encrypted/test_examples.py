"""The encrypted-inference example runs (smoke test, small sizes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "encrypted_inference.py"


@pytest.mark.slow
def test_encrypted_inference_example_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--samples", "6", "--epochs", "1", "--hidden", "4", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "server cannot decrypt: this context holds no secret key" in proc.stdout
    assert "argmax agreement 1.000" in proc.stdout
    assert "over HTTP (http://127.0.0.1:" in proc.stdout
    assert "server on the fused residue program: argmax agreement 1.000" in proc.stdout
