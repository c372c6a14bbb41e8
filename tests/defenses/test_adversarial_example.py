"""The hand-written-loop example runs: adversarial alone and stacked with DP."""

from __future__ import annotations

import runpy
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "adversarial_custom_loop.py"


def test_custom_loop_example_runs(capsys):
    # in this process, as the other example tests run theirs (no second interpreter to start)
    module = runpy.run_path(str(EXAMPLE))
    assert module["main"](["--epochs", "2", "--method", "fgsm"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()}
    adv, priv = rows["adversarial"], rows["private+adversarial"]
    assert 0.5 < float(adv[1]) <= 1.0 and 0.0 <= float(adv[2]) <= float(adv[1])
    assert float(priv[3]) <= 3.0 and priv[4] == "True"
