"""Run directories under misuse: one writer, no silent overwrite, resume only the same run, atomic replace."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import securetrain
from securetrain.cli.main import main
from securetrain.errors import CheckpointError, ConfigurationError, RunDirectoryLocked
from securetrain.runlock import LOCK_NAME
from securetrain.training import TrainConfig
from tests.helpers import InterruptAfter, Interrupted

CFG = TrainConfig(data="breast_cancer", epochs=1, progress=False)


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (names and bytes); the lock file's existence is part of it."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("base") / "run"
    securetrain.train(CFG, d, write_html=False)
    return d


@pytest.fixture
def run(base_run, tmp_path) -> Path:
    d = tmp_path / "run"
    shutil.copytree(base_run, d)
    return d


@pytest.fixture(scope="module")
def private_run(tmp_path_factory) -> Path:
    from defenses.privacy import DifferentialPrivacy

    d = tmp_path_factory.mktemp("private") / "run"
    securetrain.train(CFG, d, [DifferentialPrivacy(epsilon=3.0, accountant="rdp")], write_html=False)
    return d


def test_training_into_an_existing_run_needs_resume_or_overwrite(run):
    before = snapshot(run)
    with pytest.raises(ConfigurationError, match=r"already holds a run; continue it with --resume .*--overwrite"):
        securetrain.train(CFG, run, write_html=False)
    assert snapshot(run) == before
    with pytest.raises(ConfigurationError, match="--resume continues the run in --out and --overwrite replaces it"):
        securetrain.train(CFG, run, resume=True, overwrite=True, write_html=False)
    assert snapshot(run) == before


@pytest.mark.parametrize("bad", ["", "   "])
def test_an_empty_out_is_refused(bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="the output directory is empty; give a path such as --out runs/cnn"):
        securetrain.train(CFG, bad, write_html=False)
    assert list(tmp_path.iterdir()) == []


def test_an_out_that_is_a_file_or_under_a_file_is_refused(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ConfigurationError, match=r"is a file, not a directory"):
        securetrain.train(CFG, f, write_html=False)
    with pytest.raises(ConfigurationError, match=r"lies under .*file.txt, which is a file"):
        securetrain.train(CFG, f / "sub" / "run", write_html=False)
    assert f.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_resuming_a_plain_run_with_dp_is_refused_and_changes_nothing(run):
    from defenses.privacy import DifferentialPrivacy

    before = snapshot(run)
    with pytest.raises(CheckpointError, match=r"cannot resume .*defenses: no defense in the run, privacy now"):
        securetrain.train(CFG, run, [DifferentialPrivacy(epsilon=3.0)], resume=True, write_html=False)
    assert snapshot(run) == before


def test_resuming_a_private_run_without_dp_is_refused(private_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(private_run, run)
    before = snapshot(run)
    with pytest.raises(CheckpointError, match=r"defenses: privacy in the run, no defense now"):
        securetrain.train(CFG, run, resume=True, write_html=False)
    assert snapshot(run) == before


def test_resuming_with_another_model_or_privacy_setting_names_the_difference(run, private_run, tmp_path):
    from defenses.privacy import DifferentialPrivacy

    before = snapshot(run)
    other_model = TrainConfig(
        data="breast_cancer", model="mlp", model_kwargs={"hidden": [16]}, epochs=1, progress=False
    )
    with pytest.raises(CheckpointError, match=r"model kwargs: \{\} in the run, \{'hidden': \[16\]\} now"):
        securetrain.train(other_model, run, resume=True)
    assert snapshot(run) == before
    assert securetrain.load_model(run) is not None  # config.json was not rewritten: the run still loads
    other = tmp_path / "private"
    shutil.copytree(private_run, other)
    with pytest.raises(CheckpointError, match=r"privacy epsilon: 3.0 in the run, 4.0 now"):
        securetrain.train(CFG, other, [DifferentialPrivacy(epsilon=4.0, accountant="rdp")], resume=True)


def test_overwrite_replaces_the_run_and_leaves_nothing_behind(run):
    old_config = (run / "config.json").read_text()
    cfg = TrainConfig(data="breast_cancer", epochs=2, progress=False, seed=5)
    result = securetrain.train(cfg, run, overwrite=True, write_html=False)
    assert result.run_dir == run and (run / "config.json").read_text() != old_config
    assert securetrain.load_model(run) is not None and (run / "report.json").is_file()
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]  # no staging directory left


def test_a_killed_overwrite_leaves_the_complete_old_run(run):
    before = snapshot(run)
    with pytest.raises(Interrupted):
        securetrain.train(
            TrainConfig(data="breast_cancer", epochs=3, progress=False),
            run,
            overwrite=True,
            callbacks=[InterruptAfter(1)],
            write_html=False,
        )
    assert snapshot(run) == before
    assert securetrain.load_model(run) is not None
    # the next replacement cleans the killed one's staging directory up
    securetrain.train(CFG, run, overwrite=True, write_html=False)
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]


HOLD = (
    "import sys, time; from securetrain.runlock import RunLock; "
    "lock = RunLock(sys.argv[1], command='train --out x').acquire(); print('held', flush=True); time.sleep(60)"
)


@pytest.fixture
def held(run):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close()


def test_a_second_writer_is_refused_and_a_live_temporary_survives(run, held):
    live_tmp = run / ".report.json.live1234.tmp"  # the holder's atomic write in progress
    live_tmp.write_text("half written")
    before = snapshot(run)
    with pytest.raises(
        RunDirectoryLocked, match=rf"in use by another securetrain command: 'train --out x' \(pid {held.pid}"
    ):
        securetrain.train(CFG, run, resume=True, write_html=False)
    with pytest.raises(RunDirectoryLocked):
        securetrain.train(CFG, run, overwrite=True, write_html=False)
    assert snapshot(run) == before and live_tmp.read_text() == "half written"


def test_audit_and_encrypt_of_a_busy_run_are_refused(run, held, capsys):
    before = snapshot(run)
    assert main(["audit", str(run), "--attacks", "fgsm", "--eps", "0.5", "--samples", "10"]) != 0
    assert "in use by another securetrain command" in capsys.readouterr().err
    assert main(["encrypt", str(run), "--samples", "4"]) != 0
    assert "in use by another securetrain command" in capsys.readouterr().err
    assert snapshot(run) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_an_audit_of_a_read_only_run_is_refused_before_attacking(run, capsys):
    before = snapshot(run)
    mode = run.stat().st_mode
    os.chmod(run, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        assert main(["audit", str(run), "--attacks", "fgsm", "--eps", "0.5"]) != 0
        assert "is read-only" in capsys.readouterr().err
    finally:
        os.chmod(run, mode)
    assert snapshot(run) == before


def test_the_lock_file_is_the_only_addition_of_a_finished_command(base_run):
    assert (base_run / LOCK_NAME).exists()
    assert not (base_run / ".securetrain.lock.json").exists()  # the holder's name leaves with the holder


def test_a_run_the_process_cannot_write_is_refused_before_any_work(run, capsys, monkeypatch):
    # root ignores permission bits, so simulate what os.access reports for a read-only directory or mount
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode & os.W_OK else real_access(p, mode))
    before = snapshot(run)
    for argv in (["audit", str(run), "--attacks", "fgsm", "--eps", "0.5"], ["encrypt", str(run)], ["report", str(run)]):
        assert main(argv) != 0
        assert f"run directory {run} is read-only" in capsys.readouterr().err
    assert snapshot(run) == before


def test_a_resume_killed_while_writing_its_results_leaves_the_complete_old_run(run, monkeypatch):
    from securetrain.report import Report

    old = {name: (run / name).read_bytes() for name in ("model.safetensors", "report.json", "config.json")}

    def killed(self, *args, **kwargs):  # the process dies after the new weights, before the new report
        raise Interrupted("killed before report.json was written")

    monkeypatch.setattr(Report, "save", killed)
    with pytest.raises(Interrupted):
        securetrain.train(TrainConfig(data="breast_cancer", epochs=2, progress=False), run, resume=True)
    monkeypatch.undo()
    # the results are swapped in together: the old weights and report are still there, and match
    assert {name: (run / name).read_bytes() for name in old} == old
    assert securetrain.load_model(run) is not None
    # finishing the run with --resume (from the newer checkpoint) replaces both at once
    securetrain.train(TrainConfig(data="breast_cancer", epochs=2, progress=False), run, resume=True)
    assert (run / "model.safetensors").read_bytes() != old["model.safetensors"]
    assert securetrain.load_model(run) is not None
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]


def test_weights_that_the_report_does_not_describe_are_refused(run, base_run, tmp_path):
    other = tmp_path / "other"
    securetrain.train(TrainConfig(data="breast_cancer", epochs=1, progress=False, seed=9), other, write_html=False)
    (run / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())  # a file replaced by hand
    with pytest.raises(CheckpointError, match=r"model.safetensors is not the model that .*report.json describes"):
        securetrain.load_model(run)


def test_a_run_refused_when_training_starts_leaves_nothing_behind(tmp_path):
    from defenses.privacy import DifferentialPrivacy
    from securetrain.errors import PrivacyError

    too_long = TrainConfig(epochs=20000, batch_size=1, progress=False)  # refused by the privacy defense's setup
    existing = tmp_path / "existing"
    existing.mkdir()
    for out in (tmp_path / "new", existing):
        with pytest.raises(PrivacyError, match="planned for 24,000,000 steps"):
            securetrain.train(too_long, out, [DifferentialPrivacy(epsilon=3.0)], write_html=False)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["existing"]  # no config.json, lock file or new folder
    # the directory takes a new run without --overwrite: nothing of the refused one is left to refuse it
    securetrain.train(TrainConfig(data="breast_cancer", epochs=1, progress=False), existing, write_html=False)
    assert (existing / "report.json").is_file()
