"""`securetrain encrypt` and `securetrain serve` end to end on run directories."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import securetrain
from securetrain.cli.main import main
from securetrain.data import load
from securetrain.encrypted import RemoteClient
from securetrain.report.schema import SECTION_KEYS
from securetrain.training import TrainConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def he_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("he-run")
    cfg = TrainConfig(data="digits", model="he", model_kwargs={"hidden": 8}, epochs=2, progress=False)
    securetrain.train(cfg, out, write_html=False)
    return out


def encrypted_section(run: Path) -> dict:
    return json.loads((run / "report.json").read_text())["encrypted"]


def test_encrypt_fills_the_report_in_throughput_mode(he_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["encrypt", str(he_run), "--samples", "30", "--no-html"]) == 0
    printed = capsys.readouterr().out
    assert "argmax agreement      1.0000" in printed and "at full slots" in printed
    plan_line = re.search(r"^plan +CKKS throughput \(batch\), N=(\d+), chain \[[\d, ]+\], depth 3$", printed, re.M)
    assert plan_line and re.search(
        r"^estimate +~[\d.]+ ms per sample, ~[\d.]+ s for 30 samples in 1 requests$", printed, re.M
    )
    assert re.search(r"^per request +30 samples, ~[\d.]+ MB up", printed, re.M)
    sec = encrypted_section(he_run)
    assert set(SECTION_KEYS["encrypted"]) <= set(sec)
    assert (sec["scheme"], sec["mode"], sec["samples"], sec["security_bits"]) == ("CKKS", "throughput", 30, 128)
    assert sec["agreement"] == 1.0 and sec["max_abs_error"] <= sec["tolerance"]
    assert sec["public_context_bytes"] > 0 and sec["ciphertext_bytes"] > 0
    assert 0 < sec["per_sample_full_slots_s"] < sec["per_sample_s"]
    assert "Encrypted inference" in (he_run / "report.md").read_text()


def test_encrypt_refuses_a_plan_over_max_seconds_before_encrypting(
    he_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (he_run / "report.json").read_bytes()
    assert main(["encrypt", str(he_run), "--mode", "latency", "--samples", "50", "--max-seconds", "0.05"]) == 1
    captured = capsys.readouterr()
    assert re.search(r"^plan +CKKS latency \(im2col\)", captured.out, re.M)
    # the planner compared the latency variants by estimated cost and says so
    assert re.search(r"^choice +im2col: cheapest by estimated cost .*bsgs .*expanded .*diagonal", captured.out, re.M)
    assert captured.err.count("\n") == 1
    assert re.search(
        r"refused before encrypting: the latency plan is estimated at \d+ s for 50 samples .* over --max-seconds 0\.05\. "
        r"To go faster: fewer --samples, --mode throughput",
        captured.err,
    )
    assert (he_run / "report.json").read_bytes() == before  # nothing was encrypted or written


def test_encrypt_variant_forces_the_packing_variant_and_refuses_an_unknown_one(
    he_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (he_run / "report.json").read_bytes()
    argv = ["encrypt", str(he_run), "--mode", "latency", "--samples", "50", "--max-seconds", "0.05"]
    assert main([*argv, "--variant", "bsgs"]) == 1  # planned with the forced variant, then refused on time
    captured = capsys.readouterr()
    assert re.search(r"^plan +CKKS latency \(bsgs\)", captured.out, re.M)
    assert not re.search(r"^choice", captured.out, re.M)  # no comparison: the user chose
    assert main([*argv, "--variant", "lola"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "--variant 'lola' is not a latency variant; choose one of im2col, bsgs, expanded, diagonal" in captured.err
    assert (he_run / "report.json").read_bytes() == before


def test_encrypt_in_latency_mode(he_run: Path) -> None:
    assert main(["encrypt", str(he_run), "--mode", "latency", "--samples", "2", "--no-html"]) == 0
    sec = encrypted_section(he_run)
    assert (sec["mode"], sec["samples"], sec["galois_keys"]) == ("latency", 2, True)
    assert sec["agreement"] == 1.0 and sec["max_abs_error"] <= sec["tolerance"]
    assert sec["latency_s"] == pytest.approx(sec["per_sample_s"], rel=0.5)


@pytest.mark.slow
def test_encrypt_refuses_a_relu_model_unless_asked_to_convert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = TrainConfig(data="digits", model="mlp", model_kwargs={"hidden": [16]}, epochs=1, progress=False)
    securetrain.train(cfg, tmp_path, write_html=False)
    assert main(["encrypt", str(tmp_path), "--samples", "5"]) == 1  # EncryptionError: exit status 1 (docs/cli.md)
    err = capsys.readouterr().err
    assert err.count("\n") == 1, "an error is one line"
    assert "the model cannot run under CKKS: - net.2 (ReLU)" in err and "--convert square" in err
    assert (
        main(
            ["encrypt", str(tmp_path), "--samples", "20", "--convert", "square", "--fine-tune-epochs", "1", "--no-html"]
        )
        == 0
    )
    sec = encrypted_section(tmp_path)
    assert sec["converted"]["activation"] == "square" and sec["agreement"] == 1.0


@pytest.mark.slow
def test_serve_answers_a_remote_client(he_run: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "securetrain.cli.main", "serve", str(he_run), "--port", "0", "--mode", "throughput"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        assert match, f"unexpected first line from serve: {line!r}"
        x = load("digits", "test")[0][:5]
        logits = RemoteClient(match.group(1)).predict(x)
        with torch.no_grad():
            plain = securetrain.load_model(he_run)(x).numpy()
        assert np.array_equal(logits.argmax(1), plain.argmax(1))
        assert np.abs(logits - plain).max() < 1e-3
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
