"""The hand-written-loop example runs: adversarial alone and stacked with DP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "adversarial_custom_loop.py"


def test_custom_loop_example_runs():
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--epochs", "2", "--method", "fgsm"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.split()}
    adv, priv = rows["adversarial"], rows["private+adversarial"]
    assert 0.5 < float(adv[1]) <= 1.0 and 0.0 <= float(adv[2]) <= float(adv[1])
    assert float(priv[3]) <= 3.0 and priv[4] == "True"
