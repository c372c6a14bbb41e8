"""``audit --dp-audit`` refuses what it cannot do before the robustness audit runs: nothing written."""

from __future__ import annotations

import pytest

import securetrain
from securetrain.cli.main import main
from securetrain.training import TrainConfig

AUDIT = ["--attacks", "fgsm", "--eps", "0.1", "--samples", "8", "--no-checks", "--no-progress"]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    config = TrainConfig(data="breast_cancer", model="mlp", model_kwargs={"hidden": [8]}, epochs=1, progress=False)
    securetrain.train(config, out, [], write_html=False)
    return out


def _snapshot(run_dir):
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def _robustness_audit_must_not_run(*args, **kwargs):
    raise AssertionError("the robustness audit ran before the refusal")


@pytest.mark.parametrize("canaries", ["0", "3", "-5"])
def test_too_few_canaries_refused_up_front(plain_run, capsys, monkeypatch, canaries):
    import attacks.evasion.run_dir

    monkeypatch.setattr(attacks.evasion.run_dir, "audit_robustness_run", _robustness_audit_must_not_run)
    before = _snapshot(plain_run)
    assert main(["audit", str(plain_run), "--dp-audit", "--canaries", canaries, *AUDIT]) == 2
    err = capsys.readouterr().err
    assert "--canaries must be at least 4" in err and "Traceback" not in err
    assert _snapshot(plain_run) == before


def test_non_private_run_refused_before_the_robustness_audit(plain_run, capsys, monkeypatch):
    import attacks.evasion.run_dir

    monkeypatch.setattr(attacks.evasion.run_dir, "audit_robustness_run", _robustness_audit_must_not_run)
    before = _snapshot(plain_run)
    assert main(["audit", str(plain_run), "--dp-audit", *AUDIT]) == 2
    captured = capsys.readouterr()
    assert "needs a run trained with differential privacy" in captured.err
    assert "robust accuracy" not in captured.out  # the robustness audit never ran
    assert _snapshot(plain_run) == before
