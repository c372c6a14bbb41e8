"""Training throughput (samples/s) of every zoo model on its embedded data.

The baseline is the MLP on digits measured in the same run; every row also gives its
throughput as a ratio to it.

    python benchmarks/bench_throughput.py [--steps 30] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save_results, table  # noqa: E402

from securetrain import data  # noqa: E402
from securetrain.models import build_model  # noqa: E402

CASES = [
    ("mlp", "digits"),
    ("cnn", "digits"),
    ("resnet", "digits"),
    ("he", "digits"),
    ("he-cnn", "digits"),
    ("mlp", "breast_cancer"),
    ("lstm", "sequences"),
    ("transformer", "sequences"),
]


def throughput(model_name: str, data_name: str, steps: int, batch_size: int) -> float:
    info = data.get_info(data_name)
    x, y = data.load(data_name, "train")
    torch.manual_seed(0)
    model = build_model(model_name, info.input_shape, info.num_classes).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = [
        (
            x[i * batch_size % (len(x) - batch_size) :][:batch_size],
            y[i * batch_size % (len(x) - batch_size) :][:batch_size],
        )
        for i in range(steps)
    ]
    for xb, yb in batches[:3]:  # warm-up
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    t0 = time.perf_counter()
    for xb, yb in batches:
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    results = {f"{m}/{d}": throughput(m, d, args.steps, args.batch_size) for m, d in CASES}
    base = results["mlp/digits"]
    rows = [(k, round(v), v / base) for k, v in results.items()]
    print(f"training throughput, batch {args.batch_size}, {args.steps} steps, {torch.get_num_threads()} threads")
    print(table(["model/data", "samples/s", "x mlp/digits"], rows))
    path = save_results("throughput", {"batch_size": args.batch_size, "steps": args.steps, "samples_per_s": results})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
