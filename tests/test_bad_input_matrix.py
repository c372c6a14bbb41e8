"""The bad-input matrix: every hostile invocation ends in one typed, one-line error (docs/cli.md).

CLI cases assert the exit status (2: usage error, 1: anything else), pin the first line of stderr,
assert there is no traceback, and, for a case pointed at a run directory, that the run directory
is byte-for-byte unchanged. API cases assert the error type and pin the message.
"""

from __future__ import annotations

import errno
import gzip
import json
import pickle
import re
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import securetrain
from securetrain.cli.main import describe_error, main
from securetrain.errors import (
    AttackError,
    CheckpointError,
    ConfigurationError,
    DataError,
    ModelError,
    ReportError,
    UnknownNameError,
)
from securetrain.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

Setup = Callable[[Path, Path], Any]  # (run directory, case folder) -> anything


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small trained run (MLP, ReLU) and one HE-friendly run, built once per module."""
    root = tmp_path_factory.mktemp("templates")
    securetrain.train(TrainConfig(data="breast_cancer", epochs=1, progress=False), root / "run", write_html=False)
    securetrain.train(
        TrainConfig(data="breast_cancer", model="he", epochs=1, progress=False), root / "he", write_html=False
    )
    return {"run": root / "run", "he": root / "he"}


def snapshot(path: Path) -> dict[str, bytes | None]:
    """Names and bytes of everything under ``path`` (folders map to None)."""
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


def tamper_json(name: str, change: Callable[[Any], Any]) -> Setup:
    def setup(run: Path, tmp: Path) -> None:
        p = run / name
        p.write_text(json.dumps(change(json.loads(p.read_text()))))

    return setup


def write(name: str, data: bytes | str) -> Setup:
    def setup(run: Path, tmp: Path) -> None:
        (run / name).write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def replace_by_folder(name: str) -> Setup:
    def setup(run: Path, tmp: Path) -> None:
        (run / name).unlink()
        (run / name).mkdir()

    return setup


def remove(name: str) -> Setup:
    def setup(run: Path, tmp: Path) -> None:
        (run / name).unlink()

    return setup


def data_section(**changes: Any) -> Setup:
    return tamper_json("config.json", lambda c: {**c, "data": {**c["data"], **changes}})


def model_section(**changes: Any) -> Setup:
    return tamper_json("config.json", lambda c: {**c, "model": {**c["model"], **changes}})


def report_keys(**changes: Any) -> Setup:
    return tamper_json("report.json", lambda r: {**r, **changes})


NESTED = "[" * 100_000 + "]" * 100_000
IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
GOOD_IDX = struct.pack(">HBBI", 0, 8, 1, 3) + bytes([1, 2, 3])


def idx_files(make: Callable[[Path, str], None]) -> Setup:
    def setup(run: Path, tmp: Path) -> None:
        root = tmp / "mnist"
        root.mkdir()
        for stem in IDX_STEMS:
            make(root, stem)

    return setup


def cifar_files(content: bytes) -> Setup:
    def setup(run: Path, tmp: Path) -> None:
        root = tmp / "cifar"
        root.mkdir()
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            (root / name).write_bytes(content)

    return setup


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.system, ("echo pwned",))


def err(command: str, pattern: str) -> str:
    """The regex of an error's first line."""
    return rf"^securetrain {command}: error: {pattern}"


@dataclass(frozen=True)
class Cli:
    id: str
    argv: tuple[str, ...]
    code: int
    first_line: str
    setup: Setup | None = None


def cli(id: str, argv: str | list[str], code: int, first_line: str, setup: Setup | None = None) -> Any:
    args = tuple(argv.split()) if isinstance(argv, str) else tuple(argv)
    return pytest.param(Cli(id, args, code, first_line, setup), id=id)


TRAIN = "train --data breast_cancer --epochs 1 --no-progress --out {tmp}/out"
MNIST = "train --data mnist --data-root {tmp}/mnist --epochs 1 --no-progress --out {tmp}/out"
AUDIT = "audit {run} --no-progress --attacks fgsm --eps 0.1 --samples 5 --no-checks"
SWEEP = "sweep --data breast_cancer --epochs 1 --no-progress --no-baseline --out {tmp}/sweep"
DEMO = "demo --quick --no-progress --out {tmp}/demo"

# ---------------------------------------------------------------- the CLI cases

CLI_CASES = [
    # argparse: usage errors, one line, no usage dump
    cli("no-command", [], 2, r"^securetrain: error: no command given; choose one of: audit, demo, encrypt"),
    cli("unknown-flag", TRAIN + " --bogus", 2, err("train", r"unrecognized arguments: --bogus \(see securetrain")),
    cli("bad-int", TRAIN + " --epochs x", 2, err("train", r"argument --epochs: invalid int value: 'x'")),
    cli("missing-out", "train --data digits", 2, err("train", r"the following arguments are required: --out")),
    cli("missing-dir", "audit", 2, err("audit", r"the following arguments are required: dir")),
    cli("bad-choice", "audit {run} --norm l3", 2, err("audit", r"argument --norm: invalid choice: 'l3'")),
    cli("bad-convert", "encrypt {run} --convert cube", 2, err("encrypt", r"argument --convert: invalid choice")),
    cli("threads-zero", "--threads 0 report {run}", 2, err("report", r"--threads must be at least 1, got 0$")),
    cli("threads-huge", f"--threads {2**40} report {{run}}", 2, err("report", r"--threads must be at most 4096")),
    cli(
        "threads-not-int",
        "--threads many report {run}",
        2,
        err("report", r"argument --threads: invalid int value: .many."),
    ),
    # public pretraining and frozen parameters
    cli(
        "pretrain-unknown", TRAIN + " --pretrain no-such", 2, err("train", r"unknown data set 'no-such'; choose one of")
    ),
    cli(
        "pretrain-shape",
        TRAIN + " --pretrain digits",
        2,
        err("train", r"pretrain data 'digits' has inputs \[1, 8, 8\] and 10 classes; the training data has \[30\]"),
    ),
    cli(
        "pretrain-epochs-zero",
        TRAIN + " --pretrain digits --pretrain-epochs 0",
        2,
        err("train", r"pretrain_epochs must be at least 1, got 0$"),
    ),
    cli("trainable-empty", TRAIN + " --trainable ,", 2, err("train", r"trainable must be a non-empty list")),
    # model options
    cli(
        "kwargs-unknown",
        [*TRAIN.split(), "--model-kwargs", '{"nosuch": 1}'],
        2,
        err("train", r"model 'mlp' has no option 'nosuch'; its options are: hidden, dropout, activation$"),
    ),
    cli(
        "kwargs-negative",
        [*TRAIN.split(), "--model-kwargs", '{"hidden": -5}'],
        2,
        err("train", r"model 'mlp': option 'hidden' must list whole numbers >= 1, got \[-5\]"),
    ),
    cli(
        "kwargs-string",
        [*TRAIN.split(), "--model-kwargs", '{"hidden": "abc"}'],
        2,
        err("train", r"model 'mlp': option 'hidden' must be a whole number or a non-empty list"),
    ),
    cli(
        "kwargs-dropout",
        [*TRAIN.split(), "--model-kwargs", '{"dropout": 2}'],
        2,
        err("train", r"model 'mlp': option 'dropout' must be a number in \[0, 1\), got 2"),
    ),
    cli(
        "kwargs-cnn-channels",
        "train --data digits --model cnn --epochs 1 --no-progress --out {tmp}/out".split()
        + ["--model-kwargs", '{"channels": [0]}'],
        2,
        err("train", r"model 'cnn': option 'channels' must list whole numbers >= 1, got \[0\]"),
    ),
    cli(
        "kwargs-cnn-hidden",
        "train --data digits --model cnn --epochs 1 --no-progress --out {tmp}/out".split()
        + ["--model-kwargs", '{"hidden": 0}'],
        2,
        err("train", r"model 'cnn': option 'hidden' must be a whole number >= 1, got 0"),
    ),
    cli(
        "kwargs-transformer-heads",
        "train --data sequences --model transformer --epochs 1 --no-progress --out {tmp}/out".split()
        + ["--model-kwargs", '{"heads": 3}'],
        2,
        err("train", r"model 'transformer': option 'dim' \(32\) must be divisible by 'heads' \(3\)"),
    ),
    cli(
        "kwargs-resnet-widths",
        "train --data digits --model resnet --epochs 1 --no-progress --out {tmp}/out".split()
        + ["--model-kwargs", '{"widths": []}'],
        2,
        err("train", r"model 'resnet': option 'widths' must be a non-empty list of layer widths"),
    ),
    cli(
        "kwargs-lstm-layers",
        "train --data sequences --model lstm --epochs 1 --no-progress --out {tmp}/out".split()
        + ["--model-kwargs", '{"num_layers": 0}'],
        2,
        err("train", r"model 'lstm': option 'num_layers' must be a whole number >= 1, got 0"),
    ),
    cli(
        "kwargs-he-float",
        [*TRAIN.split(), "--model", "he", "--model-kwargs", '{"hidden": 1.5}'],
        2,
        err("train", r"model 'he': option 'hidden' must be a whole number >= 1, got 1.5"),
    ),
    cli(
        "kwargs-input-shape",
        [*TRAIN.split(), "--model-kwargs", '{"input_shape": [3]}'],
        2,
        err("train", r"model option 'input_shape' is set from the data set"),
    ),
    cli(
        "kwargs-nested",
        [*TRAIN.split(), "--model-kwargs", NESTED],
        2,
        err("train", r"--model-kwargs must be a JSON object: nested too deeply$"),
    ),
    cli(
        "kwargs-not-json",
        [*TRAIN.split(), "--model-kwargs", "{hidden: 3}"],
        2,
        err("train", r"--model-kwargs must be a JSON object: Expecting property name"),
    ),
    cli(
        "kwargs-list",
        [*TRAIN.split(), "--model-kwargs", "[1]"],
        2,
        err("train", r"--model-kwargs must be a JSON object$"),
    ),
    # names and numbers
    cli("unknown-model", TRAIN + " --model vgg", 2, err("train", r"unknown model 'vgg'; choose one of: cnn, he")),
    cli("unknown-data", TRAIN + " --data imagenet", 2, err("train", r"unknown data set 'imagenet'; choose one of:")),
    cli("unknown-optimizer", TRAIN + " --optimizer lion", 2, err("train", r"unknown optimizer 'lion'; choose one of")),
    cli("seed-huge", TRAIN + f" --seed {2**70}", 2, err("train", r"--seed must be an integer in 0..2\*\*63-1")),
    cli("seed-negative", TRAIN + " --seed -1", 2, err("train", r"--seed must be an integer in 0..2\*\*63-1 .*got -1$")),
    cli("epochs-zero", TRAIN + " --epochs 0", 2, err("train", r"epochs must be at least 1, got 0")),
    cli("batch-zero", TRAIN + " --batch-size 0", 2, err("train", r"batch_size must be at least 1, got 0")),
    cli("lr-nan", TRAIN + " --lr nan", 2, err("train", r"lr must be positive, got nan")),
    cli("nproc-zero", TRAIN + " --nproc 0", 2, err("train", r"--nproc must be a whole number of processes >= 1")),
    cli("dp-flag-without-dp", TRAIN + " --epsilon 3", 2, err("train", r"--epsilon only apply with --dp")),
    cli("dp-epsilon-negative", TRAIN + " --dp --epsilon -1", 1, err("train", r"epsilon must be positive, got -1.0")),
    cli(
        "dp-augmult-huge",
        TRAIN + " --dp --augmult 1000000",
        1,
        err("train", r"augmult must be at most 256 views per sample, got 1000000"),
    ),
    cli("adv-eps-huge", TRAIN + " --adversarial pgd --adv-eps 1e308", 2, err("train", r"adversarial epsilon 1e\+308")),
    cli(
        "model-does-not-fit",
        "train --data digits --model lstm --epochs 1 --no-progress --out {tmp}/out",
        1,
        err("train", r"model 'lstm' needs sequence inputs shaped \(seq_len, features\); got input_shape=\(1, 8, 8\)"),
    ),
    # local data files
    cli("mnist-missing", MNIST, 1, err("train", r"mnist: missing train-images-idx3-ubyte \(or .*\.gz\) in ")),
    cli(
        "mnist-corrupt-gz",
        MNIST,
        1,
        err("train", r".*/mnist/train-images-idx3-ubyte\.gz: not a readable gzip file \(EOFError"),
        idx_files(lambda root, stem: (root / f"{stem}.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")),
    ),
    cli(
        "mnist-not-gz",
        MNIST,
        1,
        err("train", r".*/train-images-idx3-ubyte\.gz: not a readable gzip file \(BadGzipFile"),
        idx_files(lambda root, stem: (root / f"{stem}.gz").write_bytes(GOOD_IDX)),
    ),
    cli(
        "mnist-truncated-gz",
        MNIST,
        1,
        err("train", r".*/train-images-idx3-ubyte\.gz: not a readable gzip file"),
        idx_files(lambda root, stem: (root / f"{stem}.gz").write_bytes(gzip.compress(GOOD_IDX)[:-6])),
    ),
    cli(
        "mnist-folder",
        MNIST,
        1,
        err("train", r".*/mnist/train-images-idx3-ubyte is a directory, not an IDX file"),
        idx_files(lambda root, stem: (root / stem).mkdir()),
    ),
    cli(
        "mnist-bad-magic",
        MNIST,
        1,
        err("train", r".*/train-images-idx3-ubyte: not an IDX file \(bad magic number\)"),
        idx_files(lambda root, stem: (root / stem).write_bytes(b"\x01\x02\x03\x04\x05")),
    ),
    cli(
        "mnist-truncated-header",
        MNIST,
        1,
        err("train", r".*/train-images-idx3-ubyte: truncated IDX header \(3 dimensions need 16 bytes, found 6\)"),
        idx_files(lambda root, stem: (root / stem).write_bytes(struct.pack(">HBB", 0, 8, 3) + b"\x00\x00")),
    ),
    cli(
        "mnist-truncated-body",
        MNIST,
        1,
        err(
            "train", r".*/train-images-idx3-ubyte: expected 8 data bytes for shape \(2, 2, 2\), found 3 \(truncated\?\)"
        ),
        idx_files(lambda root, stem: (root / stem).write_bytes(struct.pack(">HBBIII", 0, 8, 3, 2, 2, 2) + b"abc")),
    ),
    cli(
        "mnist-shapes-disagree",
        MNIST,
        1,
        err("train", r"mnist: images \(3,\) and labels \(3,\) do not match"),
        idx_files(lambda root, stem: (root / stem).write_bytes(GOOD_IDX)),
    ),
    cli(
        "cifar-garbage",
        "train --data cifar10 --data-root {tmp}/cifar --epochs 1 --no-progress --out {tmp}/out",
        1,
        err("train", r".*/cifar/data_batch_1: not a readable CIFAR-10 batch file"),
        cifar_files(b"not a pickle"),
    ),
    cli(
        "cifar-code-in-pickle",
        "train --data cifar10 --data-root {tmp}/cifar --epochs 1 --no-progress --out {tmp}/out",
        1,
        err("train", r"refusing to load posix\.system from a CIFAR batch file \(not plain data\)"),
        cifar_files(pickle.dumps({"data": _Evil(), "labels": []}, protocol=2)),
    ),
    # audit: flags
    cli(
        "audit-eps-huge",
        AUDIT.replace("0.1", "1e308"),
        2,
        err("audit", r"epsilon 1e\+308 is larger than the input range allows: inputs lie in \[-12, 12\]"),
    ),
    cli(
        "audit-eps-inf", AUDIT.replace("0.1", "inf"), 2, err("audit", r"epsilon must be a finite number >= 0, got inf")
    ),
    cli(
        "audit-eps-negative",
        AUDIT.replace("0.1", "-1"),
        2,
        err("audit", r"epsilon must be a finite number >= 0, got -1.0"),
    ),
    cli("audit-eps-word", AUDIT.replace("0.1", "0.1,big"), 2, err("audit", r"--eps must be comma-separated numbers")),
    cli(
        "audit-eps-empty",
        ["audit", "{run}", "--no-progress", "--attacks", "fgsm", "--eps", ""],
        2,
        err("audit", r"--eps must be comma-separated numbers, e.g. 0.05,0.1,0.2, got ''"),
    ),
    cli(
        "audit-attacks-empty-entry",
        AUDIT.replace("fgsm", "fgsm,,pgd"),
        2,
        err("audit", r"--attacks must be comma-separated names without empty entries"),
    ),
    cli("audit-attack-unknown", AUDIT.replace("fgsm", "pdg"), 2, err("audit", r"unknown attack 'pdg'; choose one of:")),
    cli("audit-attack-twice", AUDIT.replace("fgsm", "fgsm,fgsm"), 2, err("audit", r"attack 'fgsm' is listed twice")),
    cli(
        "audit-attack-wrong-norm",
        AUDIT.replace("fgsm", "cw-l2"),
        2,
        err("audit", r"attack 'cw-l2' measures l2 perturbations but this audit's norm is linf"),
    ),
    cli(
        "audit-preset",
        AUDIT + " --preset fast",
        2,
        err("audit", r"unknown audit preset 'fast'; choose one of: default, quick"),
    ),
    cli(
        "audit-samples-zero",
        AUDIT.replace("--samples 5", "--samples 0"),
        2,
        err("audit", r"samples must be an integer >= 1, got 0"),
    ),
    cli("audit-batch-zero", AUDIT + " --batch-size 0", 2, err("audit", r"batch_size must be an integer >= 1, got 0")),
    cli("audit-seed-huge", AUDIT + f" --seed {2**70}", 2, err("audit", r"--seed must be an integer in 0..2\*\*63-1")),
    cli(
        "audit-shadow-zero",
        AUDIT + " --membership --shadow-models 0",
        2,
        err("audit", r"the number of shadow models must be at least 1, got 0"),
    ),
    # audit: not a run directory
    cli(
        "audit-weights-file",
        "audit {run}/model.safetensors --no-progress",
        1,
        err(
            "audit",
            r".*/run/model\.safetensors is not a securetrain run directory \(it is a file\); give the directory",
        ),
    ),
    cli(
        "audit-missing-dir",
        "audit {tmp}/nope --no-progress",
        1,
        err("audit", r".*/nope is not a securetrain run directory \(no config\.json\)"),
    ),
    # audit: a tampered config.json
    cli(
        "config-nested",
        AUDIT,
        1,
        err("audit", r".*/config\.json is corrupted \(RecursionError"),
        write("config.json", NESTED),
    ),
    cli(
        "config-wrong-type",
        AUDIT,
        1,
        err("audit", r".*/config\.json is not a valid run config: bad 'data' section"),
        data_section(input_shape="abc"),
    ),
    cli(
        "config-no-model",
        AUDIT,
        1,
        err("audit", r".*/config\.json is not a valid run config: its 'model' section is missing"),
        tamper_json("config.json", lambda c: {k: v for k, v in c.items() if k != "model"}),
    ),
    cli(
        "config-not-utf8",
        AUDIT,
        1,
        err("audit", r".*/config\.json is corrupted \(UnicodeDecodeError"),
        write("config.json", b"\xff\xfe\x00"),
    ),
    cli(
        "config-unknown-model",
        AUDIT,
        1,
        err("audit", r".*/config\.json names a model that cannot be built \(unknown model 'vgg'"),
        model_section(name="vgg"),
    ),
    cli(
        "config-bad-model-option",
        AUDIT,
        1,
        err("audit", r".*/config\.json names a model that cannot be built \(model 'mlp' has no option 'nosuch'"),
        model_section(kwargs={"nosuch": 1}),
    ),
    cli(
        "config-unknown-data",
        AUDIT,
        1,
        err("audit", r".*/config\.json names data that cannot be loaded \(unknown data set 'imagenet'"),
        data_section(name="imagenet"),
    ),
    cli(
        "config-a-list",
        AUDIT,
        1,
        err("audit", r".*/config\.json is corrupted \(a run config is a JSON object, got list\)"),
        write("config.json", "[]"),
    ),
    cli(
        "config-zero-classes",
        AUDIT,
        1,
        err(
            "audit",
            r".*/config\.json names a model that cannot be built \(cannot build model 'mlp': num_classes must be a whole number >= 1, got 0",
        ),
        data_section(num_classes=0),
    ),
    cli(
        "config-negative-shape",
        AUDIT,
        1,
        err(
            "audit",
            r".*/config\.json names a model that cannot be built \(cannot build model 'mlp': input_shape must be positive whole numbers, got \(-30,\)",
        ),
        data_section(input_shape=[-30]),
    ),
    cli(
        "config-huge-shape",
        AUDIT,
        1,
        err(
            "audit",
            r".*/config\.json names a model that cannot be built \(cannot build model 'mlp' for input_shape=\(1000000000000, 1000000000000\)",
        ),
        data_section(input_shape=[10**12, 10**12]),
    ),
    cli(
        "config-weights-mismatch",
        AUDIT,
        1,
        err("audit", r".*/model\.safetensors does not match the model's parameters"),
        model_section(kwargs={"hidden": [8]}),
    ),
    # audit: a tampered report.json
    cli(
        "report-nested",
        AUDIT,
        1,
        err("audit", r".*/report\.json is not valid JSON \(RecursionError"),
        write("report.json", NESTED),
    ),
    cli(
        "report-timing-list",
        AUDIT,
        1,
        err("audit", r".*/report\.json: report 'timing' must be an object, got list"),
        report_keys(timing=[1, 2]),
    ),
    cli(
        "report-accuracy-text",
        AUDIT,
        1,
        err("audit", r".*/report\.json: report accuracy must be a finite number, got 'high'"),
        report_keys(accuracy="high"),
    ),
    cli(
        "report-not-utf8",
        AUDIT,
        1,
        err("audit", r".*/report\.json is not valid JSON \(UnicodeDecodeError"),
        write("report.json", b"\xff\xfe"),
    ),
    cli(
        "report-bad-json",
        AUDIT,
        1,
        err("audit", r".*/report\.json is not valid JSON \(JSONDecodeError"),
        write("report.json", "{"),
    ),
    cli(
        "report-missing",
        AUDIT,
        1,
        err("audit", r"no report at .*/report\.json; run `securetrain train`"),
        remove("report.json"),
    ),
    # audit: tampered weights
    cli(
        "weights-truncated",
        AUDIT,
        1,
        err("audit", r".*/model\.safetensors is corrupted or truncated"),
        lambda run, tmp: (run / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes()[:100]),
    ),
    cli(
        "weights-pickle",
        AUDIT,
        1,
        err("audit", r".*/model\.safetensors looks like a pickle / torch\.save file; securetrain never unpickles"),
        write("model.safetensors", pickle.dumps({"w": 1})),
    ),
    cli(
        "weights-missing", AUDIT, 1, err("audit", r".*/model\.safetensors does not exist$"), remove("model.safetensors")
    ),
    cli(
        "weights-folder",
        AUDIT,
        1,
        err("audit", r".*/model\.safetensors is a directory, not a safetensors file"),
        replace_by_folder("model.safetensors"),
    ),
    # report
    cli(
        "report-cmd-nested",
        "report {run}",
        1,
        err("report", r".*/report\.json is not valid JSON \(RecursionError"),
        write("report.json", NESTED),
    ),
    cli(
        "report-cmd-schema",
        "report {run}",
        1,
        err("report", r".*/report\.json: unknown report schema 5; this version reads 'securetrain.report/1'"),
        report_keys(schema=5),
    ),
    cli(
        "report-cmd-privacy-types",
        "report {run}",
        1,
        err("report", r".*: report section 'privacy': 'epsilon' must be a number or null, got 'x'"),
        report_keys(
            privacy={
                "epsilon": "x",
                "delta": None,
                "accountant": 1,
                "noise_multiplier": [],
                "max_grad_norm": {},
                "sample_rate": None,
                "steps": "many",
                "poisson_sampling": 1,
                "valid": "yes",
                "warnings": 5,
            }
        ),
    ),
    cli(
        "report-cmd-robustness-types",
        "report {run}",
        1,
        err("report", r".*: report section 'robustness': 'norm' must be a string, got 1"),
        report_keys(robustness={"norm": 1, "epsilons": "x", "attacks": [], "worst_case": None, "flags": 3}),
    ),
    cli(
        "report-cmd-data-text",
        "report {run}",
        1,
        err("report", r".*: report 'data' must be an object, got str"),
        report_keys(data="digits"),
    ),
    cli(
        "report-cmd-nan",
        "report {run}",
        1,
        err("report", r".*: report accuracy must be a finite number, got nan"),
        write("report.json", '{"schema": "securetrain.report/1", "data": {}, "model": {}, "accuracy": NaN}'),
    ),
    cli(
        "report-cmd-list",
        "report {run}",
        1,
        err("report", r".*/report\.json: a report must be a JSON object"),
        write("report.json", "[]"),
    ),
    cli(
        "report-cmd-unrenderable",
        "report {run}",
        1,
        err("report", r"the report cannot be rendered: a value has the wrong type or shape \(TypeError"),
        report_keys(
            membership={
                "attack": "lira",
                "auc": 0.5,
                "tpr_at_fpr": {},
                "advantage": 0.0,
                "epsilon_lower_bound": 0.0,
                "roc": {"fpr": 5, "tpr": 5},
            }
        ),
    ),
    cli(
        "report-cmd-file",
        "report {run}/report.json",
        1,
        err("report", r".*/report\.json is not a securetrain run directory \(it is a file\)"),
    ),
    cli(
        "report-cmd-missing-dir",
        "report {tmp}/nope",
        1,
        err("report", r"no report at .*/nope; run `securetrain train` or `securetrain demo` first"),
    ),
    # encrypt
    cli(
        "encrypt-relu",
        "encrypt {run} --samples 2",
        1,
        err(
            "encrypt",
            r"the model cannot run under CKKS: - net\.2 \(ReLU\): ReLU is not a polynomial.* rerun with --convert square",
        ),
    ),
    cli(
        "encrypt-config-types",
        "encrypt {run}",
        1,
        err("encrypt", r".*/config\.json is not a valid run config: its 'data' section is missing or not an object"),
        tamper_json("config.json", lambda c: {**c, "data": 5}),
    ),
    cli(
        "encrypt-samples-zero",
        "encrypt {he} --samples 0 --no-html",
        1,
        err("encrypt", r"samples must be between 1 and 143, got 0"),
    ),
    cli(
        "encrypt-file",
        "encrypt {run}/config.json",
        1,
        err("encrypt", r".*/config\.json is not a securetrain run directory \(it is a file\)"),
    ),
    # serve (flags are checked before the model is compiled)
    cli(
        "serve-port-high",
        "serve {he} --port 99999",
        2,
        err("serve", r"--port must be in 0..65535 \(0: any free port\), got 99999"),
    ),
    cli(
        "serve-port-negative",
        "serve {he} --port -1",
        2,
        err("serve", r"--port must be in 0..65535 \(0: any free port\), got -1"),
    ),
    cli(
        "serve-body-nan",
        "serve {he} --max-body-mb nan",
        2,
        err("serve", r"--max-body-mb must be a positive number of MiB, e.g. 256, got nan"),
    ),
    cli(
        "serve-body-negative",
        "serve {he} --max-body-mb -1",
        2,
        err("serve", r"--max-body-mb must be a positive number of MiB"),
    ),
    cli(
        "serve-stream-zero",
        "serve {he} --max-stream-mb 0",
        2,
        err("serve", r"--max-stream-mb must be a positive number of MiB, e.g. 1024, got 0.0"),
    ),
    cli(
        "serve-contexts-zero",
        "serve {he} --max-contexts 0",
        2,
        err("serve", r"--max-contexts must be at least 1, got 0"),
    ),
    cli("serve-host-empty", ["serve", "{he}", "--host", ""], 2, err("serve", r"--host is empty")),
    cli(
        "serve-relu",
        "serve {run} --port 0 --mode latency",
        1,
        err("serve", r"the model cannot run under CKKS as it is: - net\.2 \(ReLU\)"),
    ),
    cli(
        "serve-cannot-bind",
        "serve {he} --host 192.0.2.1 --port 0 --mode latency",
        1,
        err("serve", r"cannot listen on 192\.0\.2\.1:0 \(.*\); give an address of this machine"),
    ),
    cli(
        "serve-file",
        "serve {run}/report.json",
        1,
        err("serve", r".*/report\.json is not a securetrain run directory \(it is a file\)"),
    ),
    # sweep and demo
    cli(
        "sweep-eps-word",
        SWEEP + " --epsilons a",
        2,
        err("sweep", r"--epsilons must be comma-separated numbers, e.g. 0.5,1,2,4,8; got 'a'"),
    ),
    cli(
        "sweep-eps-negative",
        SWEEP + " --epsilons 1,-1",
        2,
        err("sweep", r"--epsilons must be finite numbers > 0, e.g. 0.5,1,2,4,8; got -1$"),
    ),
    cli(
        "sweep-eps-inf",
        SWEEP + " --epsilons inf",
        2,
        err("sweep", r"--epsilons must be finite numbers > 0, e.g. 0.5,1,2,4,8; got inf$"),
    ),
    cli("sweep-eps-empty", SWEEP + " --epsilons ,", 2, err("sweep", r"--epsilons is empty; give e.g. 0.5,1,2,4,8")),
    cli("sweep-delta", SWEEP + " --epsilons 1 --delta 2", 1, err("sweep", r"delta must be in \(0, 1\), got 2.0")),
    cli(
        "sweep-seed-huge",
        SWEEP + f" --epsilons 1 --seed {2**64}",
        2,
        err("sweep", r"--seed must be an integer in 0..2\*\*63-1"),
    ),
    cli(
        "sweep-kwargs",
        [*SWEEP.split(), "--epsilons", "1", "--model-kwargs", '{"nosuch": 1}'],
        2,
        err("sweep", r"model 'mlp' has no option 'nosuch'"),
    ),
    cli("demo-seed-huge", DEMO + f" --seed {2**70}", 2, err("demo", r"--seed must be an integer in 0..2\*\*63-1")),
    cli("demo-adv-eps", DEMO + " --adv-eps 5", 2, err("demo", r"adversarial epsilon 5 is outside the input range")),
    cli("demo-epochs-zero", DEMO + " --epochs 0", 2, err("demo", r"epochs must be at least 1, got 0")),
    cli("demo-epsilon-negative", DEMO + " --epsilon -1", 1, err("demo", r"epsilon must be positive, got -1.0")),
]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_bad_input(
    case: Cli, templates: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uses = " ".join(case.argv)
    run = tmp_path / "run"
    shutil.copytree(templates["run"], run)
    he = tmp_path / "he"
    if "{he}" in uses:
        shutil.copytree(templates["he"], he)
    if case.setup is not None:
        case.setup(run, tmp_path)
    argv = [a.replace("{run}", str(run)).replace("{he}", str(he)).replace("{tmp}", str(tmp_path)) for a in case.argv]
    before = {"run": snapshot(run), "he": snapshot(he) if he.exists() else None}

    code = main(argv)

    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, f"an error is one line on stderr, got: {captured.err!r}"
    assert re.match(case.first_line, lines[0]), lines[0]
    assert code == case.code, lines[0]
    if "{run}" in uses:
        assert snapshot(run) == before["run"], "a failed command must leave the run directory as it was"
    if "{he}" in uses:
        assert snapshot(he) == before["he"], "a failed command must leave the run directory as it was"


# ---------------------------------------------------------------- --debug and errors that are not securetrain's


def test_debug_prints_the_traceback_then_the_same_line(templates: dict[str, Path], tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(templates["run"], run)
    argv = ["audit", str(run), "--attacks", "fgsm", "--eps", "1e308", "--no-progress"]
    assert main(["--debug", *argv]) == 2
    with_debug = capsys.readouterr().err
    assert main(argv) == 2
    plain = capsys.readouterr().err
    assert with_debug.startswith("Traceback (most recent call last):") and "AttackError" in with_debug
    assert with_debug.splitlines()[-1] == plain.strip()


def _failing_command(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    from securetrain.cli.commands import report

    def boom(args: Any) -> int:
        raise exc

    monkeypatch.setattr(report, "run", boom)


@pytest.mark.parametrize(
    ("exc", "first_line"),
    [
        (
            ZeroDivisionError("division by zero"),
            r"internal error: ZeroDivisionError: division by zero \(rerun with --debug for the traceback\)$",
        ),
        (
            PermissionError(13, "Permission denied", "/data/run/report.json"),
            r"permission denied: /data/run/report\.json; check its owner and mode",
        ),
        (MemoryError(), r"out of memory; use fewer samples or a smaller --batch-size"),
        (RecursionError("maximum recursion depth exceeded"), r"an input is nested too deeply to read"),
    ],
    ids=["internal", "permission", "memory", "recursion"],
)
def test_other_exceptions_are_one_line_with_status_1(monkeypatch, capsys, exc, first_line) -> None:
    _failing_command(monkeypatch, exc)
    assert main(["report", "somewhere"]) == 1
    captured = capsys.readouterr().err
    assert "Traceback" not in captured and len(captured.splitlines()) == 1
    assert re.match(err("report", first_line), captured), captured


def test_internal_error_traceback_only_with_debug(monkeypatch, capsys) -> None:
    _failing_command(monkeypatch, KeyError("oops"))
    assert main(["--debug", "report", "somewhere"]) == 1
    out = capsys.readouterr().err
    assert "Traceback (most recent call last):" in out
    assert (
        out.splitlines()[-1]
        == "securetrain report: error: internal error: KeyError: 'oops' (rerun with --debug for the traceback)"
    )


# ---------------------------------------------------------------- the Python API cases


def _api_describe(exc: BaseException) -> Callable[[Path], Any]:
    def call(tmp: Path) -> Any:
        code, message = describe_error(exc)
        raise _Described(code, message)

    return call


class _Described(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")


def _model(tmp: Path, name: str, shape: tuple[int, ...], classes: int, **kwargs: Any) -> Any:
    from securetrain.models import build_model

    return build_model(name, shape, classes, **kwargs)


def _read_idx(tmp: Path, data: bytes | None, suffix: str = "") -> Any:
    from securetrain.data.idx import read_idx

    p = tmp / f"x-idx1-ubyte{suffix}"
    if data is None:
        p.mkdir()
    else:
        p.write_bytes(data)
    return read_idx(p)


def _checkpoint_with(tmp: Path, metadata: str) -> Path:
    from safetensors.torch import save_file

    p = tmp / "state.safetensors"
    save_file({"t0": torch.ones(2)}, str(p), metadata={"securetrain": metadata})
    return p


def _load_state(tmp: Path, metadata: str) -> Any:
    from securetrain.checkpoint import load_state

    return load_state(_checkpoint_with(tmp, metadata))


def _skeleton(skeleton: Any) -> str:
    return json.dumps({"format": "securetrain.state/1", "skeleton": skeleton})


def _report_file(tmp: Path, content: bytes | str) -> Any:
    from securetrain.report import Report

    p = tmp / "report.json"
    p.write_bytes(content.encode() if isinstance(content, str) else content)
    return Report.from_json(p)


def _unrenderable_report_save(tmp: Path) -> Any:
    from securetrain.report import Report

    r = Report(
        data={"name": "digits"},
        model={"name": "cnn"},
        accuracy=0.9,
        membership={
            "attack": "lira",
            "auc": 0.5,
            "tpr_at_fpr": {},
            "advantage": 0.0,
            "epsilon_lower_bound": 0.0,
            "roc": {"fpr": 1, "tpr": 1},
        },
    )
    out = tmp / "out"
    try:
        r.save(out)
    finally:
        assert not out.exists() or not any(out.iterdir()), "nothing is written when rendering fails"


def _linear_batch() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)), torch.rand(6, 4), torch.randint(0, 3, (6,))


def _attack(tmp: Path, eps: float, norm_attack: str = "fgsm") -> Any:
    from attacks.evasion import get_attack

    model, x, y = _linear_batch()
    return get_attack(norm_attack)(model, x, y, [eps])


def _audit(tmp: Path, eps: float, attack: str = "fgsm") -> Any:
    from attacks.evasion import audit_robustness

    model, x, y = _linear_batch()
    norm = "l2" if attack.endswith("l2") else "linf"
    return audit_robustness(model, x, y, attacks=[attack], epsilons=[0.1, eps], norm=norm, progress=False, checks=False)


def _make_server(tmp: Path, host: str, port: int) -> Any:
    from securetrain.encrypted.http import make_server

    _, sock = make_server(None, host, port)  # type: ignore[arg-type]  # refused before the service is used
    sock.close()


def _rundir(tmp: Path, setup: Callable[[Path], Path]) -> Any:
    from securetrain.rundir import RunDir

    return RunDir.open(setup(tmp))


def _cifar(tmp: Path, obj: Any) -> Any:
    from securetrain.data.cifar import read_batch

    p = tmp / "batch"
    p.write_bytes(pickle.dumps(obj, protocol=2))
    return read_batch(p)


def api(id: str, call: Callable[[Path], Any], error: type[BaseException], message: str) -> Any:
    return pytest.param(call, error, message, id=id)


API_CASES = [
    # models
    api(
        "model-unknown-option",
        lambda t: _model(t, "mlp", (30,), 2, nosuch=1),
        ConfigurationError,
        r"^model 'mlp' has no option 'nosuch'; its options are: hidden, dropout, activation$",
    ),
    api(
        "model-unknown-options",
        lambda t: _model(t, "cnn", (1, 8, 8), 2, a=1, b=2),
        ConfigurationError,
        r"^model 'cnn' has no options 'a', 'b'; its options are: channels, hidden, activation, norm_groups, weight_standardization$",
    ),
    api(
        "model-empty-channels",
        lambda t: _model(t, "cnn", (1, 8, 8), 10, channels=[]),
        ConfigurationError,
        r"^model 'cnn': option 'channels' must be a non-empty list",
    ),
    api(
        "model-bool-width",
        lambda t: _model(t, "he-cnn", (1, 8, 8), 10, channels=True),
        ConfigurationError,
        r"^model 'he-cnn': option 'channels' must be a whole number >= 1, got True",
    ),
    api(
        "model-zero-shape",
        lambda t: _model(t, "mlp", (0,), 2),
        ModelError,
        r"^cannot build model 'mlp': input_shape must be positive whole numbers, got \(0,\)",
    ),
    api(
        "model-zero-classes",
        lambda t: _model(t, "mlp", (30,), 0),
        ModelError,
        r"^cannot build model 'mlp': num_classes must be a whole number >= 1, got 0",
    ),
    api(
        "model-unknown", lambda t: _model(t, "vgg", (30,), 2), UnknownNameError, r"^unknown model 'vgg'; choose one of:"
    ),
    api(
        "model-heads",
        lambda t: _model(t, "transformer", (16, 4), 4, dim=30, heads=4),
        ConfigurationError,
        r"^model 'transformer': option 'dim' \(30\) must be divisible by 'heads' \(4\)",
    ),
    api(
        "model-huge",
        lambda t: _model(t, "mlp", (10**12, 10**12), 2),
        ModelError,
        r"^cannot build model 'mlp' for input_shape=",
    ),
    api(
        "model-wrong-shape",
        lambda t: _model(t, "lstm", (1, 8, 8), 2),
        ModelError,
        r"^model 'lstm' needs sequence inputs shaped \(seq_len, features\)",
    ),
    # data
    api(
        "data-split",
        lambda t: securetrain.data.load("digits", "val"),
        ConfigurationError,
        r"^data set 'digits' has no split 'val'; choose one of: train, validation, test$",
    ),
    api("data-unknown", lambda t: securetrain.data.load("imagenet"), UnknownNameError, r"^unknown data set 'imagenet'"),
    api(
        "idx-corrupt-gz",
        lambda t: _read_idx(t, b"\x1f\x8b\x08\x00xx", ".gz"),
        DataError,
        r"^.*\.gz: not a readable gzip file \(EOFError",
    ),
    api("idx-folder", lambda t: _read_idx(t, None), DataError, r"^.* is a directory, not an IDX file"),
    api("idx-short", lambda t: _read_idx(t, b"\x00"), DataError, r"^.*: too short to be an IDX file$"),
    api(
        "idx-header",
        lambda t: _read_idx(t, struct.pack(">HBB", 0, 8, 2)),
        DataError,
        r"^.*: truncated IDX header \(2 dimensions need 12 bytes, found 4\)",
    ),
    api(
        "cifar-code",
        lambda t: _cifar(t, {"data": _Evil(), "labels": []}),
        DataError,
        r"^refusing to load posix\.system from a CIFAR batch file",
    ),
    api(
        "cifar-not-dict",
        lambda t: _cifar(t, [1, 2]),
        DataError,
        r"^.*/batch: expected a dict in a CIFAR-10 batch file$",
    ),
    api(
        "cifar-labels",
        lambda t: _cifar(t, {"data": [[0] * 3072] * 2, "labels": [1]}),
        DataError,
        r"^.*/batch: 2 images but labels of shape \(1,\)$",
    ),
    # checkpoints
    api(
        "ckpt-meta-not-json",
        lambda t: _load_state(t, "{"),
        CheckpointError,
        r"^.*state\.safetensors: checkpoint metadata is corrupted \(JSONDecodeError",
    ),
    api(
        "ckpt-meta-nested",
        lambda t: _load_state(t, NESTED),
        CheckpointError,
        r"^.*state\.safetensors: checkpoint metadata is corrupted \(RecursionError",
    ),
    api(
        "ckpt-meta-list",
        lambda t: _load_state(t, "[1]"),
        CheckpointError,
        r"^.*: checkpoint metadata is corrupted \(expected an object, got list\)",
    ),
    api(
        "ckpt-format",
        lambda t: _load_state(t, json.dumps({"format": "other/1", "skeleton": {}})),
        CheckpointError,
        r"^.*: unknown checkpoint format 'other/1'$",
    ),
    api(
        "ckpt-no-skeleton",
        lambda t: _load_state(t, json.dumps({"format": "securetrain.state/1"})),
        CheckpointError,
        r"^.*: checkpoint metadata is corrupted \(no 'skeleton'\)$",
    ),
    api(
        "ckpt-missing-tensor",
        lambda t: _load_state(t, _skeleton({"__dict__": [["w", {"__tensor__": "t9"}]]})),
        CheckpointError,
        r"^.*: checkpoint refers to a missing tensor 't9'$",
    ),
    api(
        "ckpt-tensor-key-type",
        lambda t: _load_state(t, _skeleton({"__dict__": [["w", {"__tensor__": [1]}]]})),
        CheckpointError,
        r"^.*: malformed checkpoint skeleton \(tensor key \[1\]\)$",
    ),
    api(
        "ckpt-dict-key-type",
        lambda t: _load_state(t, _skeleton({"__dict__": [[{"__int__": "x"}, 1]]})),
        CheckpointError,
        r"^.*: malformed checkpoint skeleton \(dict key \{'__int__': 'x'\}\)$",
    ),
    api(
        "ckpt-dict-not-pairs",
        lambda t: _load_state(t, _skeleton({"__dict__": [1, 2]})),
        CheckpointError,
        r"^.*: checkpoint metadata is corrupted \(TypeError",
    ),
    api(
        "ckpt-state-not-dict",
        lambda t: _load_state(t, _skeleton([1, 2])),
        CheckpointError,
        r"^.*: checkpoint metadata is corrupted \(the state is a list\)$",
    ),
    api(
        "ckpt-folder",
        lambda t: securetrain.checkpoint.load_state((t / "d").mkdir() or t / "d"),
        CheckpointError,
        r"^.*/d is a directory, not a safetensors file",
    ),
    # reports
    api(
        "report-nested",
        lambda t: _report_file(t, NESTED),
        ReportError,
        r"^.*report\.json is not valid JSON \(RecursionError",
    ),
    api(
        "report-not-utf8",
        lambda t: _report_file(t, b"\xff\xfe"),
        ReportError,
        r"^.*report\.json is not valid JSON \(UnicodeDecodeError",
    ),
    api(
        "report-model-list",
        lambda t: _report_file(t, '{"schema": "securetrain.report/1", "data": {}, "model": [], "accuracy": 1}'),
        ReportError,
        r"^.*report\.json: report 'model' must be an object, got list$",
    ),
    api(
        "report-flags-type",
        lambda t: _report_file(
            t,
            json.dumps(
                {
                    "schema": "securetrain.report/1",
                    "data": {},
                    "model": {},
                    "accuracy": 1,
                    "robustness": {"norm": "linf", "epsilons": [], "attacks": {}, "worst_case": [], "flags": "none"},
                }
            ),
        ),
        ReportError,
        r"^.*: report section 'robustness': 'flags' must be a list, got 'none'$",
    ),
    api(
        "report-valid-type",
        lambda t: _report_file(
            t,
            json.dumps(
                {
                    "schema": "securetrain.report/1",
                    "data": {},
                    "model": {},
                    "accuracy": 1,
                    "privacy": {
                        "epsilon": 1,
                        "delta": 1e-5,
                        "accountant": "rdp",
                        "noise_multiplier": 1,
                        "max_grad_norm": 1,
                        "sample_rate": 0.1,
                        "steps": 1,
                        "poisson_sampling": True,
                        "valid": "yes",
                        "warnings": [],
                    },
                }
            ),
        ),
        ReportError,
        r"^.*: report section 'privacy': 'valid' must be true or false, got 'yes'$",
    ),
    api(
        "report-save-into-file",
        lambda t: securetrain.report.Report(data={}, model={}, accuracy=1.0).save(
            (t / "f").write_text("x") and t / "f"
        ),
        ReportError,
        r"^.*/f is not a directory; give the run directory that holds report\.json$",
    ),
    api(
        "report-unrenderable",
        _unrenderable_report_save,
        ReportError,
        r"^the report cannot be rendered: a value has the wrong type or shape \(TypeError",
    ),
    # run directories
    api(
        "rundir-file",
        lambda t: _rundir(t, lambda d: (d / "f").write_text("x") and d / "f"),
        CheckpointError,
        r"^.*/f is not a securetrain run directory \(no config\.json\)$",
    ),
    api(
        "rundir-nested",
        lambda t: _rundir(t, lambda d: (d / "config.json").write_text(NESTED) and d),
        CheckpointError,
        r"^.*/config\.json is corrupted \(RecursionError",
    ),
    # attacks
    api(
        "attack-eps-float32",
        lambda t: _attack(t, 1e308),
        AttackError,
        r"^epsilon 1e\+308 is too large for float32 inputs \(at most 3.40282e\+38\)",
    ),
    api(
        "audit-eps-linf",
        lambda t: _audit(t, 3.0),
        AttackError,
        r"^epsilon 3 is larger than the input range allows: inputs lie in \[0, 1\], so a linf perturbation of 1 already",
    ),
    api(
        "audit-eps-l2",
        lambda t: _audit(t, 2.5, "pgd-l2"),
        AttackError,
        r"^epsilon 2.5 is larger than the input range allows: inputs lie in \[0, 1\], so a l2 perturbation of 2 already",
    ),
    # serve
    api(
        "server-port",
        lambda t: _make_server(t, "127.0.0.1", 70000),
        ConfigurationError,
        r"^port must be a whole number in 0..65535 \(0: any free port\), got 70000$",
    ),
    api(
        "server-bind",
        lambda t: _make_server(t, "192.0.2.1", 0),
        OSError,
        r"^\[Errno \d+\] cannot listen on 192\.0\.2\.1:0 \(.*\); give an address of this machine",
    ),
    # how the command line describes other exceptions (exit status: message)
    api("describe-configuration", _api_describe(ConfigurationError("bad\nflag")), _Described, r"^2: bad flag$"),
    api(
        "describe-unknown-name",
        _api_describe(UnknownNameError("model", "vgg", ["cnn"])),
        _Described,
        r"^2: unknown model 'vgg'; choose one of: cnn$",
    ),
    api("describe-data", _api_describe(DataError("labels out of range")), _Described, r"^1: labels out of range$"),
    api(
        "describe-is-a-directory",
        _api_describe(IsADirectoryError(21, "Is a directory", "r/config.json")),
        _Described,
        r"^1: r/config\.json is a directory, but a file is needed there",
    ),
    api(
        "describe-not-a-directory",
        _api_describe(NotADirectoryError(20, "Not a directory", "f/x")),
        _Described,
        r"^1: f/x: part of this path is a file, not a directory",
    ),
    api(
        "describe-file-exists",
        _api_describe(FileExistsError(17, "File exists", "out")),
        _Described,
        r"^1: out already exists and is in the way",
    ),
    api(
        "describe-disk-full",
        _api_describe(OSError(errno.ENOSPC, "No space left on device", "r/model.safetensors")),
        _Described,
        r"^1: no space left on the device while writing r/model\.safetensors",
    ),
    api(
        "describe-json",
        _api_describe(json.JSONDecodeError("Expecting value", "x", 0)),
        _Described,
        r"^1: invalid JSON \(Expecting value: line 1 column 1 \(char 0\)\)",
    ),
    api(
        "describe-zlib",
        _api_describe(zlib.error("invalid stored block lengths")),
        _Described,
        r"^1: a compressed file is corrupted or truncated \(invalid stored block lengths\)",
    ),
]


@pytest.mark.parametrize(("call", "error", "message"), API_CASES)
def test_api_bad_input(call: Callable[[Path], Any], error: type[BaseException], message: str, tmp_path: Path) -> None:
    with pytest.raises(error) as info:
        call(tmp_path)
    first = str(info.value).splitlines()[0] if str(info.value) else ""
    assert re.match(message, first), first


def test_the_matrix_is_large_enough() -> None:
    assert len(CLI_CASES) + len(API_CASES) >= 80


def test_sweep_epsilons_are_deduplicated_in_order() -> None:
    from securetrain.cli.commands.sweep import _epsilons

    assert _epsilons("1,1,0.5,1,2") == [1.0, 0.5, 2.0]
