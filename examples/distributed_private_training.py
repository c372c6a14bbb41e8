"""Private training across 2 processes, checked against the same run in 1 process.

Runs ``securetrain train --nproc 2`` (torchrun underneath, gloo on CPU) and the same
command with one process, then prints both epsilons and the largest weight difference:
the accounting is that of the global schedule, so the epsilons are equal.

    python examples/distributed_private_training.py [--out DIR] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import securetrain
from securetrain.cli.main import main as securetrain_cli


def run(out: Path, nproc: int, epochs: int) -> dict:
    argv = [
        "--threads",
        "1",
        "train",
        "--data",
        "breast_cancer",
        "--epochs",
        str(epochs),
        "--batch-size",
        "64",
        "--dp",
        "--epsilon",
        "3",
        "--accountant",
        "rdp",
        "--no-progress",
        "--no-html",
        "--out",
        str(out),
    ]
    if nproc > 1:
        argv += ["--nproc", str(nproc)]
    if securetrain_cli(argv) != 0:
        raise SystemExit(f"securetrain train with {nproc} process(es) failed")
    return json.loads((out / "report.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=None, help="where to put the two run directories (default: a temporary folder)")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    base = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="securetrain-ddp-"))
    one = run(base / "one-process", 1, args.epochs)
    two = run(base / "two-processes", 2, args.epochs)
    m1, m2 = securetrain.load_model(base / "one-process"), securetrain.load_model(base / "two-processes")
    diff = max(float((a - b).abs().max()) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    for name, rep in (("1 process", one), ("2 processes", two)):
        p = rep["privacy"]
        print(
            f"{name}: epsilon {p['epsilon']:.6f} after {p['steps']} steps, valid {p['valid']}, accuracy {rep['accuracy']:.4f}"
        )
    print(f"largest weight difference: {diff:.2e}")


if __name__ == "__main__":
    main()
