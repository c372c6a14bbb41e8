"""``securetrain train --nproc 2`` end to end: torchrun launches the workers, rank 0 writes, failures stop the job."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from securetrain import data as st_data
from securetrain.checkpoint import load_state

from . import descendants, environ_of, kill_tree

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

REPO = Path(__file__).resolve().parents[2]
COMMON = [
    "--data",
    "breast_cancer",
    "--model-kwargs",
    '{"hidden": [16]}',
    "--batch-size",
    "64",
    "--optimizer",
    "sgd",
    "--lr",
    "0.1",
    "--seed",
    "5",
    "--no-progress",
    "--no-html",
    "--dp",
    "--accountant",
    "rdp",
    "--delta",
    "1e-5",
]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "securetrain.cli.main", "train", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for var in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCHELASTIC_RUN_ID",
    ):
        env.pop(var, None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def test_two_processes_report_the_one_process_epsilon_and_model(tmp_path):
    from securetrain import load_model
    from securetrain.cli.main import main

    one, two = tmp_path / "one", tmp_path / "two"
    args = [*COMMON, "--epochs", "2", "--epsilon", "2.0"]
    assert main(["train", *args, "--out", str(one)]) == 0
    done = _run(_cli(*args, "--out", str(two), "--nproc", "2"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("privacy") == 1  # rank 0 alone printed the summary

    a, b = _report(one), _report(two)
    for key in ("epsilon", "noise_multiplier", "sample_rate", "steps", "delta", "valid"):
        assert b["privacy"][key] == a["privacy"][key], key
    assert b["privacy"]["epsilon"] <= 2.0 and b["privacy"]["valid"] is True
    assert b["timing"]["world_size"] == 2 and "world_size" not in a["timing"]
    assert b["distributed"]["world_size"] == 2 and b["distributed"]["replica_checks"] == b["privacy"]["steps"]
    assert "noise added once per step on rank 0" in b["distributed"]["gradient_reduction"]
    assert json.loads((two / "config.json").read_text())["distributed"]["backend"] == "gloo"
    # one writer, atomic writes: the run directory holds the files and nothing half-written
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    ma, mb = load_model(one), load_model(two)
    for p, q in zip(ma.parameters(), mb.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.2)


def test_killing_a_worker_stops_the_job_and_resume_continues_on_one_process(tmp_path):
    from defenses.privacy.accounting import epsilon as account
    from securetrain.cli.main import main

    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoint.safetensors"
    args = [*COMMON, "--noise-multiplier", "1.0", "--out", str(run_dir)]
    launcher = subprocess.Popen(
        _cli(*args, "--epochs", "400", "--nproc", "2"),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ranks: dict[str, int] = {}
    try:
        _wait_for(ckpt.is_file, 180, "the first checkpoint")
        ranks = {environ_of(p).get("RANK", "?"): p for p in descendants(launcher.pid) if "RANK" in environ_of(p)}
        assert sorted(ranks) == ["0", "1"], f"expected the workers of ranks 0 and 1, found {ranks}"
        assert launcher.poll() is None, "the job ended before a worker could be killed"
        os.kill(ranks["1"], signal.SIGKILL)
        _, err = launcher.communicate(timeout=120)
        survivor_running = _running(ranks["0"])
    finally:
        for pid in ranks.values():
            kill_tree(pid)
        kill_tree(launcher.pid)
        if launcher.poll() is None:
            launcher.communicate()

    assert launcher.returncode == 1  # WorkerFailedError is not a usage error: exit status 1 (docs/cli.md)
    assert f"worker rank 1 (pid {ranks['1']}) was killed by signal SIGKILL" in err
    assert "torchrun stopped the job (2 processes)" in err
    assert "is intact: run the same command with --resume to continue (with any --nproc)" in err
    assert not survivor_running  # torchrun stopped the surviving worker before the launcher returned

    state = load_state(ckpt)  # the last checkpoint loads
    epoch, steps_done = int(state["epoch"]), int(state["step_count"])
    assert epoch >= 1 and steps_done > 0
    assert [h["world_size"] for h in state["history"]] == [2] * epoch

    assert main(["train", *args, "--epochs", str(epoch + 1), "--resume"]) == 0  # one process this time
    report = _report(run_dir)
    privacy = report["privacy"]
    n_train = len(st_data.load("breast_cancer", "train")[1])
    steps_per_epoch = math.ceil(n_train / 64)
    assert privacy["steps"] == report["timing"]["steps"] == (epoch + 1) * steps_per_epoch
    assert steps_done == epoch * steps_per_epoch
    # the budget continued from the checkpoint: epsilon of all the steps, not of the last epoch
    expected = account("rdp", [(1.0, 64 / n_train, (epoch + 1) * steps_per_epoch)], 1e-5)
    assert privacy["epsilon"] == pytest.approx(expected, rel=1e-9)
    history = report["training"]["history"]
    assert [h.get("world_size", 1) for h in history] == [2] * epoch + [1]
    assert report["timing"]["resumed_from_epoch"] == epoch
    assert not list(run_dir.glob(".*.tmp"))
