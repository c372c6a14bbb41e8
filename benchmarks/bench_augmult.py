"""Augmentation multiplicity: does averaging K augmented views per sample help DP-SGD, and at what cost?

Trains the recommended private recipe (``defenses.privacy.recommended``) of a data set with
``augmult=1`` (no augmentation) and with ``augmult=K`` for each ``K`` asked (the default
translation for the image size, or ``--augment``), at the recipe's epsilon, over a few
seeds; reports validation accuracy (the split recipes are chosen on), the epsilon spent
(identical by construction), and the CPU time of training over the ``augmult=1`` run of the
same seed, run right after it (interleaved, so both see the same machine load). The test
split is evaluated once per run, at the end.

    python benchmarks/bench_augmult.py --data digits --ks 1,4,8 --seeds 2 --threads 1
    python benchmarks/bench_augmult.py --data mnist-5k --ks 1,4 --seeds 1 --threads 1 --physical-batch-size 128
    python benchmarks/bench_augmult.py --part steps --data digits --ks 1,4,8   # CPU per step, interleaved

Figures are saved in ``benchmarks/results/augmult.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from defenses.privacy import DifferentialPrivacy, recommended  # noqa: E402
from securetrain import data  # noqa: E402
from securetrain.io import atomic_write_json  # noqa: E402
from securetrain.models import build_model  # noqa: E402
from securetrain.training import TrainConfig, evaluate, fit, protect  # noqa: E402


def train_once(
    name: str, model_name: str | None, k: int, augment: str | None, seed: int, physical: int | None = None
) -> dict[str, Any]:
    """One private run of the recipe with ``augmult=k``: accuracies, privacy figures, CPU and wall time."""
    rec = recommended(name, model_name)
    info = data.get_info(name)
    tr, va = data.load(name, "train"), data.load(name, "validation")
    cfg = TrainConfig(data=name, progress=False, seed=seed, **{k_: v for k_, v in rec.train.items() if k_ != "data"})
    torch.manual_seed(seed)
    model = build_model(cfg.resolved_model(), info.input_shape, info.num_classes, **cfg.model_kwargs)
    extra: dict[str, Any] = {"augmult": k} if k > 1 else {}
    if physical is not None:
        extra["physical_batch_size"] = physical
    if augment is not None and k > 1:
        extra["augment"] = augment
    dp = DifferentialPrivacy(epsilon=rec.epsilon, **rec.settings, **extra)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    r = fit(model, tr, va, cfg, [dp], num_classes=info.num_classes, bounds=info.bounds)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    sec = r.sections["privacy"]
    return {
        "augmult": k,
        "augment": sec["augment"],
        "seed": seed,
        "validation_accuracy": evaluate(r.model, *va)["accuracy"],
        "test_accuracy": evaluate(r.model, *data.load(name, "test"))["accuracy"],
        "epsilon": sec["epsilon"],
        "noise_multiplier": sec["noise_multiplier"],
        "sample_rate": sec["sample_rate"],
        "steps": sec["steps"],
        "valid": sec["valid"],
        "cpu_s": cpu,
        "wall_s": wall,
    }


def step_times(name: str, model_name: str | None, ks: list[int], rounds: int, steps: int) -> dict[int, float]:
    """Median CPU seconds of one private step of the recipe's model and batch, for each ``K``, interleaved.

    Each round runs ``steps`` steps (after one warm-up step) for every ``K`` in turn, on the same
    Poisson batches (same seed), with a fixed noise multiplier (no calibration in the timing).
    """
    rec = recommended(name, model_name)
    info = data.get_info(name)
    x, y = data.load(name, "train")
    per_k: dict[int, list[float]] = {k: [] for k in ks}
    for _ in range(rounds):
        for k in ks:
            torch.manual_seed(0)
            model = build_model(rec.train["model"], info.input_shape, info.num_classes, **rec.train["model_kwargs"])
            opt = torch.optim.Adam(model.parameters(), lr=rec.train["lr"])
            loader = torch.utils.data.DataLoader(
                torch.utils.data.TensorDataset(x, y), batch_size=rec.train["batch_size"]
            )
            dp = DifferentialPrivacy(
                noise_multiplier=1.0,
                max_grad_norm=rec.settings["max_grad_norm"],
                accountant="rdp",
                seed=1,
                epochs=steps + 1,
                augmult=k,
            )
            with protect(model, opt, loader, [dp]) as session:
                done = 0
                t0 = 0.0
                for xb, yb in session.train_loader:
                    if done == 1:
                        t0 = time.process_time()
                    session.optimizer.zero_grad()
                    session.loss(xb, yb).backward()
                    session.step()
                    done += 1
                    if done == steps + 1:
                        break
                per_k[k].append((time.process_time() - t0) / steps)
    return {k: statistics.median(v) for k, v in per_k.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--model", default=None)
    ap.add_argument("--ks", default="1,4", help="comma-separated K; 1 is the baseline")
    ap.add_argument("--augment", default=None, help="augmentation name (default: by image size)")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--physical-batch-size", type=int, default=None, help="bounds memory (samples per chunk)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--part", choices=("accuracy", "steps"), default="accuracy")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "augmult.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("securetrain").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*Full backward hook.*")
    ks = [int(k) for k in args.ks.split(",")]
    if 1 not in ks:
        ks = [1, *ks]
    if args.part == "steps":
        times = step_times(args.data, args.model, ks, rounds=3, steps=5)
        for k, t in times.items():
            print(f"STEP {args.data} K={k}: {1000 * t:.1f} ms CPU per step, x{t / times[1]:.2f} of K=1", flush=True)
        out = Path(args.out)
        previous = json.loads(out.read_text()) if out.exists() else {}
        previous[f"{args.data}/steps"] = {
            "threads": args.threads,
            "cpu_s_per_step": {str(k): t for k, t in times.items()},
        }
        atomic_write_json(out, previous)
        return 0
    runs: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        for k in ks:  # interleaved: every K of a seed runs back to back
            row = train_once(args.data, args.model, k, args.augment, seed, args.physical_batch_size)
            runs.append(row)
            print(
                f"{args.data} K={k} seed={seed} val {row['validation_accuracy']:.4f} test {row['test_accuracy']:.4f} "
                f"eps {row['epsilon']:.4f} sigma {row['noise_multiplier']:.4f} steps {row['steps']} "
                f"valid {row['valid']} cpu {row['cpu_s']:.1f}s wall {row['wall_s']:.1f}s",
                flush=True,
            )
    summary = []
    for k in ks:
        mine = [r for r in runs if r["augmult"] == k]
        ratios = [
            r["cpu_s"] / b["cpu_s"]
            for r in mine
            for b in runs
            if b["augmult"] == 1 and b["seed"] == r["seed"] and b["cpu_s"] > 0
        ]
        val = [r["validation_accuracy"] for r in mine]
        row = {
            "augmult": k,
            "augment": mine[0]["augment"],
            "validation_accuracy": statistics.fmean(val),
            "validation_std": statistics.pstdev(val),
            "test_accuracy": statistics.fmean(r["test_accuracy"] for r in mine),
            "epsilon": max(r["epsilon"] for r in mine),
            "cpu_ratio_to_k1": statistics.fmean(ratios) if ratios else None,
            "seeds": len(mine),
        }
        summary.append(row)
        print(
            f"SUMMARY {args.data} K={k} ({row['augment']}): val {row['validation_accuracy']:.4f} "
            f"+- {row['validation_std']:.4f}, test {row['test_accuracy']:.4f}, eps {row['epsilon']:.4f}, "
            f"CPU x{row['cpu_ratio_to_k1']:.2f} of K=1",
            flush=True,
        )
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous[args.data] = {
        "recipe": recommended(args.data, args.model).describe(),
        "threads": args.threads,
        "machine": platform.platform(),
        "summary": summary,
        "runs": runs,
    }
    atomic_write_json(out, previous)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
