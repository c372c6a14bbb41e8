"""The distributed example runs and shows the same epsilon for 1 and 2 processes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "distributed_private_training.py"


@pytest.mark.slow
def test_distributed_example_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--out", str(tmp_path), "--epochs", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    eps = re.findall(r"epsilon ([0-9.]+) after (\d+) steps, valid True", proc.stdout)
    assert len(eps) == 2 and eps[0] == eps[1], proc.stdout
    assert 0 < float(eps[0][0]) <= 3.0
    diff = float(re.search(r"largest weight difference: ([0-9.e+-]+)", proc.stdout).group(1))
    assert diff < 1e-4
