"""``securetrain audit DIR --dp-audit``: the report gets membership.dp_audit and its plot.

(That a refuted claim marks the privacy section not valid is tested with a planted bug in
``test_audit_white_box.py``: on breast cancer's raw features the data's own drift along the canary
coordinates blurs the statistic too much for a quick test to catch half the noise.)"""

from __future__ import annotations

import json

import pytest

import securetrain
from defenses.privacy import DifferentialPrivacy
from securetrain.cli.main import main
from securetrain.training import TrainConfig

AUDIT = ["--attacks", "fgsm", "--eps", "0.1", "--samples", "16", "--no-checks", "--no-progress", "--canaries", "500"]


def _train(out):
    config = TrainConfig(
        data="breast_cancer",
        model="mlp",
        model_kwargs={"hidden": [32]},
        epochs=3,
        batch_size=256,
        optimizer="sgd",
        lr=0.1,
        momentum=0.0,
        progress=False,
    )
    dp = DifferentialPrivacy(noise_multiplier=1.2, delta=1e-5, accountant="rdp")
    securetrain.train(config, out, [dp], write_html=False)


@pytest.mark.slow
def test_dp_audit_fills_the_report(tmp_path, capsys):
    _train(tmp_path)
    assert main(["audit", str(tmp_path), "--dp-audit", *AUDIT]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    audit = report["membership"]["dp_audit"]
    assert {"epsilon_lower_bound", "method", "m", "confidence", "seconds"} <= set(audit)
    assert (
        audit["m"] == 500 and audit["confidence"] == 0.95 and audit["method"] in ("counting", "gaussian", "mechanism")
    )
    assert sum(audit["histogram"]["included"]) + sum(audit["histogram"]["excluded"]) == 500
    assert report["membership"]["epsilon_lower_bound"] >= audit["epsilon_lower_bound"]
    assert report["privacy"]["valid"] is True and audit["violated"] is False
    assert "White-box DP-SGD audit: canary statistic" in (tmp_path / "report.html").read_text()
    assert "consistent" in capsys.readouterr().out


def test_dp_audit_of_a_non_private_run_is_refused(tmp_path, capsys):
    config = TrainConfig(data="breast_cancer", model="mlp", model_kwargs={"hidden": [8]}, epochs=1, progress=False)
    securetrain.train(config, tmp_path, [], write_html=False)
    assert main(["audit", str(tmp_path), "--dp-audit", *AUDIT]) == 2
    assert "needs a run trained with differential privacy" in capsys.readouterr().err
