"""``securetrain audit DIR``: fills the report's robustness (and, on request, membership) section."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

import securetrain
from attacks.evasion.run_dir import audit_robustness_run
from securetrain.cli.commands.audit import parse_floats, parse_names
from securetrain.cli.main import main
from securetrain.errors import CheckpointError, ConfigurationError
from securetrain.report import Report
from securetrain.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("run")
    securetrain.train(TrainConfig(data="breast_cancer", epochs=3, progress=False), d, write_html=False)
    return d


def _report(d: Path) -> dict:
    return json.loads((d / "report.json").read_text())


def test_audit_fills_the_robustness_section(run_dir: Path, capsys) -> None:
    code = main(
        [
            "audit",
            str(run_dir),
            "--attacks",
            "fgsm,pgd,random",
            "--eps",
            "0.1,0.5,2",
            "--preset",
            "quick",
            "--samples",
            "60",
            "--no-progress",
        ]
    )
    assert code == 0
    rob = _report(run_dir)["robustness"]
    assert rob["norm"] == "linf" and rob["epsilons"] == [0.1, 0.5, 2.0]
    assert set(rob["attacks"]) == {"fgsm", "pgd", "random"}
    assert rob["n_samples"] == 60 and rob["bounds"] == [-12.0, 12.0]
    assert rob["worst_case"][-1] < rob["worst_case"][0]
    assert isinstance(rob["flags"], list)
    assert "Robustness curve" in (run_dir / "report.html").read_text()
    assert _report(run_dir)["timing"]["robustness_audit_s"] > 0
    out = capsys.readouterr().out
    assert "worst case" in out and "worst-case robust accuracy" in out
    # the section is exactly what the Python API gives for the same settings
    again = audit_robustness_run(
        run_dir, attacks=["fgsm", "pgd", "random"], epsilons=[0.1, 0.5, 2], preset="quick", samples=60, progress=False
    )
    assert again.to_section()["attacks"] == rob["attacks"]


def test_audit_l2_with_the_preset_attacks(run_dir: Path) -> None:
    assert (
        main(
            [
                "audit",
                str(run_dir),
                "--norm",
                "l2",
                "--eps",
                "0,1",
                "--preset",
                "quick",
                "--samples",
                "40",
                "--no-progress",
                "--no-html",
            ]
        )
        == 0
    )
    rob = _report(run_dir)["robustness"]
    assert rob["norm"] == "l2" and set(rob["attacks"]) == {"pgd-l2", "deepfool", "apgd-t-l2", "hsj-l2", "random-l2"}
    Report.from_json(run_dir)  # still a valid report


def test_audit_errors_are_reported_cleanly(run_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["audit", str(run_dir), "--attacks", "fgsm,pdg", "--no-progress"]) == 2
    assert "unknown attack 'pdg'; choose one of:" in capsys.readouterr().err
    assert main(["audit", str(run_dir), "--eps", "0.1,big", "--no-progress"]) == 2
    assert "--eps must be comma-separated numbers, e.g. 0.05,0.1,0.2, got '0.1,big'" in capsys.readouterr().err
    assert main(["audit", str(run_dir), "--attacks", "cw-l2", "--no-progress"]) == 2
    assert "measures l2 perturbations but this audit's norm is linf" in capsys.readouterr().err
    assert main(["audit", str(tmp_path), "--no-progress"]) == 1  # not a usage error: exit status 1 (docs/cli.md)
    assert "is not a securetrain run directory (no config.json)" in capsys.readouterr().err
    assert main(["--threads", "0", "audit", str(run_dir), "--no-progress"]) == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err


def test_parsers() -> None:
    assert parse_names(" fgsm, pgd ") == ["fgsm", "pgd"] and parse_names(None) is None
    with pytest.raises(ConfigurationError, match=r"--attacks must be comma-separated names without empty entries"):
        parse_names("fgsm,,pgd")
    assert parse_floats("0.05,0.1") == [0.05, 0.1]
    with pytest.raises(ConfigurationError, match=r"--eps must be comma-separated numbers"):
        parse_floats("")


def test_membership_not_installed_is_a_clear_error(run_dir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "attacks.membership", None)
    before = _report(run_dir)
    code = main(
        ["audit", str(run_dir), "--attacks", "fgsm", "--eps", "0.1", "--samples", "20", "--membership", "--no-progress"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "--membership needs the attacks.membership package, which is not installed" in err
    assert _report(run_dir) == before, "a failed audit must not rewrite the report"


def test_membership_section_comes_from_attacks_membership(run_dir: Path, monkeypatch) -> None:
    calls = []
    section = {
        "attack": "loss-threshold",
        "auc": 0.51,
        "tpr_at_fpr": {"0.001": 0.0, "0.01": 0.01},
        "advantage": 0.02,
        "epsilon_lower_bound": 0.0,
    }

    def audit_membership_run(run_dir: Path, shadow_models: int, seed: int, **options: object) -> dict:
        calls.append((Path(run_dir), shadow_models, seed, options))
        return section

    fake = types.ModuleType("attacks.membership")
    fake.audit_membership_run = audit_membership_run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "attacks.membership", fake)
    assert (
        main(
            [
                "audit",
                str(run_dir),
                "--attacks",
                "fgsm",
                "--eps",
                "0.1",
                "--samples",
                "20",
                "--membership",
                "--shadow-models",
                "3",
                "--seed",
                "7",
                "--no-progress",
                "--no-html",
            ]
        )
        == 0
    )
    assert calls == [(run_dir, 3, 7, {"model": None, "data": None, "device": None})]
    assert _report(run_dir)["membership"] == section


def test_custom_model_runs_cannot_be_loaded(tmp_path: Path) -> None:
    import torch

    securetrain.train(
        TrainConfig(data="breast_cancer", epochs=1, progress=False),
        tmp_path,
        model=torch.nn.Sequential(torch.nn.Linear(30, 2)),
        write_html=False,
    )
    with pytest.raises(CheckpointError, match=r"trained with a custom model"):
        audit_robustness_run(tmp_path, attacks=["fgsm"], progress=False)
    with pytest.raises(ConfigurationError, match=r"samples must be an integer >= 1, got 0"):
        audit_robustness_run(tmp_path, attacks=["fgsm"], samples=0, progress=False)
