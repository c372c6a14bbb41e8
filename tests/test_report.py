from __future__ import annotations

import json

import pytest

from securetrain.errors import ReportError
from securetrain.report import Report, render_html, render_markdown


def _full_report() -> Report:
    return Report(
        data={"name": "digits"},
        model={"name": "cnn"},
        accuracy=0.97,
        privacy={
            "epsilon": 2.9,
            "delta": 1e-5,
            "accountant": "prv",
            "noise_multiplier": 1.1,
            "max_grad_norm": 1.0,
            "sample_rate": 0.05,
            "steps": 100,
            "poisson_sampling": True,
            "valid": False,
            "warnings": ["sampler is not Poisson"],
            "epsilon_history": [[1, 0.5], [100, 2.9]],
        },
        robustness={
            "norm": "linf",
            "epsilons": [0.05, 0.1],
            "attacks": {"pgd": [0.8, 0.5]},
            "worst_case": [0.8, 0.5],
            "flags": [],
        },
        membership={
            "attack": "loss",
            "auc": 0.6,
            "tpr_at_fpr": {"0.001": 0.0, "0.01": 0.02},
            "advantage": 0.1,
            "epsilon_lower_bound": 0.2,
            "roc": {"fpr": [0, 0.5, 1], "tpr": [0, 0.7, 1]},
        },
        extra={"training": {"history": [{"epoch": 1, "train_loss": 1.0, "test_accuracy": 0.9}]}},
    )


def test_json_roundtrip(tmp_path):
    r = _full_report()
    r.save(tmp_path)
    again = Report.from_json(tmp_path)
    assert again.to_dict() == r.to_dict()
    obj = json.loads((tmp_path / "report.json").read_text())
    assert obj["schema"] == "securetrain.report/1"
    assert list(obj)[:9] == [
        "schema",
        "data",
        "model",
        "accuracy",
        "privacy",
        "robustness",
        "membership",
        "encrypted",
        "timing",
    ]


def test_renderings_show_the_figures_and_warnings():
    r = _full_report()
    md = render_markdown(r)
    assert "epsilon 2.9 at delta 1e-05 (NOT VALID)" in md
    assert "sampler is not Poisson" in md
    page = render_html(r)
    assert page.count("data:image/png;base64,") == 4  # training, epsilon, robustness, ROC
    assert "NOT valid" in page


def test_missing_section_keys_are_refused(tmp_path):
    r = _full_report()
    del r.privacy["delta"]
    with pytest.raises(ReportError, match=r"report section 'privacy' is missing keys: delta"):
        r.to_dict()
    (tmp_path / "report.json").write_text(
        json.dumps({"schema": "securetrain.report/9", "data": {}, "model": {}, "accuracy": 1})
    )
    with pytest.raises(ReportError, match=r"unknown report schema 'securetrain.report/9'"):
        Report.from_json(tmp_path)
    (tmp_path / "report.json").write_text("{oops")
    with pytest.raises(ReportError, match=r"is not valid JSON"):
        Report.from_json(tmp_path)
    with pytest.raises(ReportError, match=r"no report at"):
        Report.from_json(tmp_path / "missing")
