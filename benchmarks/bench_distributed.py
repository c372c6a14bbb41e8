"""Scaling out: training throughput on 1 process against 2 processes (torch.distributed, gloo on CPU).

For each training mode (plain, private DP-SGD, private + adversarial FGSM) the same global
schedule (digits CNN, global batches of 64 and 512) is trained by

* ``1p x 1t``: one process, one torch thread (the baseline),
* ``1p x 2t``: one process, two torch threads (what one process gets from 2 cores),
* ``2p x 1t``: two processes of one thread each, one replica per process, gradients
  all-reduced every step (``securetrain.distributed``; replicas compared every step),
* ``2p x 1t, no check``: the same without the per-step replica check (its cost).

Each configuration runs in freshly spawned processes joined by a gloo process group on
127.0.0.1; configurations are interleaved over ``--rounds`` rounds and the median is kept.
Figures per mode and configuration:

* ``samples/s``: training samples per wall-clock second over the measured epochs (the
  first epoch is a warm-up and is not counted; no evaluation, no checkpoints);
* ``speedup``: samples/s over the ``1p x 1t`` baseline's;
* ``efficiency``: speedup / number of cores used (1.0 = perfect scaling);
* ``cpu/sample``: CPU seconds per training sample summed over all processes, over the
  baseline's: the work added by distribution (all-reduce, every rank drawing the global
  batch, replica checks), which machine load does not inflate the way it inflates wall
  time.

    python benchmarks/bench_distributed.py                  # default sizes: a few minutes on 2 cores
    python benchmarks/bench_distributed.py --epochs 4 --rounds 3 --modes dp

On a machine shared with other jobs, wall-clock scaling measures the share of the cores
the two processes got as much as the library: read ``cpu/sample`` for the overhead. The
results are saved in ``benchmarks/results/distributed.json``. On a machine with 2+ GPUs,
``--backend nccl`` runs the same comparison with one GPU per process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import save_results, table  # noqa: E402

MODES = ("plain", "dp", "dp+fgsm")
CONFIGS = (("1p x 1t", 1, 1, 1), ("1p x 2t", 1, 2, 1), ("2p x 1t", 2, 1, 1), ("2p x 1t, no check", 2, 1, 0))
"""(name, processes, torch threads per process, replica check every N steps)."""


def _defenses(mode: str) -> list[Any]:
    out: list[Any] = []
    if mode.startswith("dp"):
        from defenses.privacy import DifferentialPrivacy

        out.append(DifferentialPrivacy(noise_multiplier=1.0, max_grad_norm=1.0, accountant="rdp", delta=1e-5))
    if mode.endswith("fgsm"):
        from defenses.adversarial import FastAdversarialTraining

        out.append(FastAdversarialTraining(epsilon=0.1))
    return out


class _CpuClock:
    """Process CPU time at the end of every epoch."""

    def __init__(self) -> None:
        self.marks = [time.process_time()]

    def on_epoch_end(self, session: Any) -> None:
        self.marks.append(time.process_time())


def _worker(rank: int, nproc: int, threads: int, verify: int, port: int, opts: dict[str, Any], out: str) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    from securetrain import data
    from securetrain.distributed import process_group, session

    session.VERIFY_EVERY = verify
    from securetrain.io import atomic_write_json
    from securetrain.models import build_model
    from securetrain.training import TrainConfig, fit

    train = data.load(opts["data"], "train")
    info = data.get_info(opts["data"])
    backend = opts["backend"]
    results: dict[str, Any] = {}
    with process_group(
        backend, rank=rank, world_size=nproc, init_method=f"tcp://127.0.0.1:{port}", timeout_s=300
    ) as ctx:
        for mode in opts["modes"]:
            torch.manual_seed(0)
            model = build_model(opts["model"], info.input_shape, info.num_classes).to(ctx.device)
            cfg = TrainConfig(
                data=opts["data"],
                epochs=opts["epochs"],
                batch_size=opts["batch"],
                optimizer="sgd",
                lr=0.05,
                seed=1,
                progress=False,
            )
            clock = _CpuClock()
            result = fit(
                model,
                train,
                None,
                cfg,
                _defenses(mode),
                num_classes=info.num_classes,
                bounds=info.bounds,
                callbacks=[clock],
            )
            measured = result.history[1:]  # epoch 1 is a warm-up
            results[mode] = {
                "wall_s": sum(h["time_s"] for h in measured),
                "cpu_s": clock.marks[-1] - clock.marks[1],
                "samples": int(train[0].shape[0]) * len(measured),
                "steps": result.session.step_count,
                "world_size": result.world_size,
            }
    atomic_write_json(Path(out) / f"rank{rank}.json", results)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_config(nproc: int, threads: int, verify: int, opts: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        ctx = mp.start_processes(
            _worker,
            args=(nproc, threads, verify, _free_port(), opts, out),
            nprocs=nproc,
            join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + opts["timeout"]
        try:
            while not ctx.join(timeout=0.5):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{nproc} process(es) did not finish within {opts['timeout']} s")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                p.join(10)
        ranks = [json.loads((Path(out) / f"rank{r}.json").read_text()) for r in range(nproc)]
    merged = {}
    for mode in opts["modes"]:
        per = [r[mode] for r in ranks]
        merged[mode] = {
            "wall_s": max(p["wall_s"] for p in per),  # the job is as slow as its slowest rank
            "cpu_s": sum(p["cpu_s"] for p in per),
            "samples": per[0]["samples"],
            "steps": per[0]["steps"],
            "world_size": per[0]["world_size"],
        }
    return merged


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--model", default="cnn")
    p.add_argument("--batch", type=int, nargs="+", default=[64, 512], help="global batch sizes")
    p.add_argument("--epochs", type=int, default=5, help="epochs per run (the first is a warm-up)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; the median is reported")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--backend", default="gloo", choices=("gloo", "nccl"))
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per configuration run")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the first epoch is a warm-up)")
    if args.backend == "nccl" and torch.cuda.device_count() < 2:
        p.error("--backend nccl needs at least 2 GPUs on this machine")
    configs = [c for c in CONFIGS if args.backend == "gloo" or c[2] == 1]

    figures: dict[str, dict[str, dict[str, Any]]] = {}
    rows = []
    for batch in args.batch:
        opts = {
            "data": args.data,
            "model": args.model,
            "batch": batch,
            "epochs": args.epochs,
            "modes": args.modes,
            "backend": args.backend,
            "timeout": args.timeout,
        }
        runs: dict[str, list[dict[str, Any]]] = {c[0]: [] for c in configs}
        for r in range(args.rounds):
            for name, nproc, threads, verify in configs:
                t0 = time.perf_counter()
                runs[name].append(_run_config(nproc, threads, verify, opts))
                print(
                    f"batch {batch}, round {r + 1}/{args.rounds}: {name} done in {time.perf_counter() - t0:.1f} s",
                    file=sys.stderr,
                )
        base_name = configs[0][0]
        for mode in args.modes:

            def med(name: str, key: str, mode: str = mode, runs: dict[str, Any] = runs) -> float:
                return statistics.median(run[mode][key] for run in runs[name])

            base_tp = med(base_name, "samples") / med(base_name, "wall_s")
            base_cpu = med(base_name, "cpu_s") / med(base_name, "samples")
            for name, nproc, threads, verify in configs:
                wall, cpu, samples = med(name, "wall_s"), med(name, "cpu_s"), med(name, "samples")
                tp = samples / wall
                cores = nproc * threads
                fig = {
                    "nproc": nproc,
                    "threads": threads,
                    "replica_check_every": verify,
                    "samples_per_s": tp,
                    "speedup": tp / base_tp,
                    "efficiency": tp / base_tp / cores,
                    "cpu_per_sample_ratio": (cpu / samples) / base_cpu,
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "samples": samples,
                    "steps": runs[name][0][mode]["steps"],
                    "world_size": runs[name][0][mode]["world_size"],
                    "rounds": [run[mode] for run in runs[name]],
                }
                figures.setdefault(f"batch {batch}", {}).setdefault(mode, {})[name] = fig
                rows.append(
                    [
                        batch,
                        mode,
                        name,
                        round(tp, 1),
                        round(fig["speedup"], 3),
                        round(fig["efficiency"], 3),
                        round(fig["cpu_per_sample_ratio"], 3),
                    ]
                )
    print(table(["batch", "mode", "config", "samples/s", "speedup", "efficiency", "cpu/sample"], rows))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    path = save_results(
        "distributed",
        {
            "settings": {
                "data": args.data,
                "model": args.model,
                "batches": args.batch,
                "epochs": args.epochs,
                "modes": args.modes,
                "backend": args.backend,
                "rounds": args.rounds,
                "cpu_count": os.cpu_count(),
                "load_average_1min": load,
            },
            "figures": figures,
            "note": "wall-clock figures depend on how much of the cores the processes got; on a shared machine "
            "read cpu_per_sample_ratio for the overhead of distribution",
        },
    )
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
