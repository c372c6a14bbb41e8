"""The command line's output contract: --json (one object on stdout), --quiet, help texts, threads."""

from __future__ import annotations

import argparse
import json
import re

import pytest
import torch

from securetrain.cli.main import build_parser, main
from securetrain.cli.threads import SMALL_MODEL_PARAMETERS, model_parameters, threads_for


def _json_out(capsys) -> dict:
    captured = capsys.readouterr()
    obj = json.loads(captured.out)  # the whole of stdout is one JSON object
    assert isinstance(obj, dict) and captured.out.count("\n") == 1
    return obj


@pytest.fixture(scope="module")
def private_run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("cli") / "dp"
    argv = [
        "train",
        "--model",
        "he",
        "--epochs",
        "1",
        "--out",
        str(out),
        "--dp",
        "--epsilon",
        "4",
        "--accountant",
        "rdp",
        "--no-html",
    ]
    assert main([*argv, "--json"]) == 0
    return out


def test_train_json_prints_the_sections_written(private_run, capsys):
    # the fixture's own output was captured in its setup; read the report it wrote and train again quietly
    report = json.loads((private_run / "report.json").read_text())
    argv = [
        "train",
        "--model",
        "he",
        "--epochs",
        "1",
        "--out",
        str(private_run),
        "--dp",
        "--epsilon",
        "4",
        "--accountant",
        "rdp",
    ]
    assert main([*argv, "--overwrite", "--no-html", "--json"]) == 0
    obj = _json_out(capsys)
    assert obj["command"] == "train" and obj["run_dir"] == str(private_run)
    assert obj["files"]["report_json"] == str(private_run / "report.json")
    assert obj["model"] == "he" and obj["data"] == "digits" and 0 < obj["accuracy"] <= 1
    assert list(obj["sections"]) == ["privacy"]
    privacy = obj["sections"]["privacy"]
    assert privacy["valid"] is True and 0 < privacy["epsilon"] <= 4.0
    assert set(report["privacy"]) == set(privacy)  # the section as written to report.json


def test_audit_and_encrypt_json_and_quiet(private_run, capsys):
    argv = ["audit", str(private_run), "--attacks", "fgsm", "--eps", "0.1", "--samples", "40", "--no-checks"]
    assert main([*argv, "--preset", "quick", "--no-html", "--json"]) == 0
    obj = _json_out(capsys)
    rob = obj["sections"]["robustness"]
    assert obj["command"] == "audit" and list(obj["sections"]) == ["robustness"]
    assert rob["epsilons"] == [0.1] and list(rob["attacks"]) == ["fgsm"] and 0 <= rob["worst_case"][0] <= 1

    assert main(["encrypt", str(private_run), "--samples", "8", "--no-html", "--json"]) == 0
    obj = _json_out(capsys)
    enc = obj["sections"]["encrypted"]
    assert obj["command"] == "encrypt" and enc["scheme"] == "CKKS" and enc["samples"] == 8
    assert 0 <= enc["agreement"] <= 1

    assert main([*argv, "--preset", "quick", "--no-html", "--quiet"]) == 0
    assert capsys.readouterr().out == ""


def test_sweep_json(tmp_path, capsys, one_thread):
    argv = [
        "sweep",
        "--model",
        "he",
        "--epochs",
        "1",
        "--epsilons",
        "4",
        "--accountant",
        "rdp",
        "--no-baseline",
        "--no-html",
    ]
    assert main([*argv, "--out", str(tmp_path / "sweep"), "--json"]) == 0
    obj = _json_out(capsys)
    assert obj["command"] == "sweep" and [p["epsilon"] for p in obj["sweep"]["points"]] == [4.0]
    assert obj["sweep"]["non_private_accuracy"] is None


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    out = {"securetrain": parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
    return out


def test_help_texts_never_double_a_default():
    for name, parser in _options(build_parser()).items():
        text = " ".join(parser.format_help().split())
        assert "(default: None)" not in text and "(default: False)" not in text, name
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.help:
                expanded = formatter._expand_help(action)
                assert len(re.findall(r"\(default", expanded)) <= 1, (name, expanded)
    train_help = " ".join(_options(build_parser())["train"].format_help().split())
    assert "number of epochs (default 5); with train --dp: the recommended recipe's" in train_help
    assert train_help.count("the data set's default") == 1


def test_default_threads_follow_the_model_size():
    assert threads_for(SMALL_MODEL_PARAMETERS) == 1 and threads_for(SMALL_MODEL_PARAMETERS + 1) is None
    args = build_parser().parse_args(["train", "--model", "cnn", "--out", "x"])
    assert 1000 < model_parameters(args) < SMALL_MODEL_PARAMETERS
    big = build_parser().parse_args(
        ["train", "--model", "mlp", "--model-kwargs", '{"hidden": [4096, 4096]}', "--out", "x"]
    )
    assert model_parameters(big) > SMALL_MODEL_PARAMETERS and threads_for(model_parameters(big)) is None
    bad = build_parser().parse_args(["train", "--model", "vgg", "--out", "x"])
    assert model_parameters(bad) is None  # the command reports the unknown model itself


def test_a_small_model_trains_on_one_thread(tmp_path, capsys):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert (
            main(["train", "--model", "he", "--epochs", "1", "--out", str(tmp_path / "r"), "--no-html", "--quiet"]) == 0
        )
        assert torch.get_num_threads() == 1
        assert json.loads((tmp_path / "r" / "report.json").read_text())["timing"]["threads"] == 1
    finally:
        torch.set_num_threads(before)
    assert capsys.readouterr().out == ""
