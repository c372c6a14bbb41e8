"""Benchmark the evasion attacks and the robustness audit on the digits CNN.

1. PGD of this suite against a plain hand-written torch PGD loop (and Foolbox's LinfPGD) with the
   same steps on the same batch: time ratio (target <= 1.2) and robust accuracy.
2. Robust accuracy against PGD steps and restarts, to justify the audit's defaults; the reference
   is the per-sample worst case over every configuration run.
3. Wall time of the full default (and quick) audit on the 397 digits test images, as a ratio of
   the time it takes to train the model.
4. The default audit against torchattacks' AutoAttack (standard version: APGD-CE, APGD-T, FAB-T,
   Square) on the same model, images and epsilons (Linf 0.05, 0.1, 0.2), in the same run: the
   time ratio (target <= 2) and both robust accuracies. torchattacks is a test/benchmark-only
   reference (``pip install --no-deps torchattacks``).

Figures are printed and saved to benchmarks/results/bench_attacks.json (atomic write).

Run:
    python benchmarks/bench_attacks.py            # a few minutes on 2 CPU cores
    python benchmarks/bench_attacks.py --quick    # smaller grid, fewer repeats
    python benchmarks/bench_attacks.py --only autoattack   # just part 4
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attacks.evasion import PGD, audit_robustness
from attacks.evasion._foolbox import foolbox
from securetrain import data
from securetrain.io import atomic_write_json
from securetrain.models import build_model
from securetrain.training import TrainConfig, fit

RESULTS = Path(__file__).resolve().parent / "results" / "bench_attacks.json"


def hand_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    alpha: float,
    random_start: bool,
    seed: int,
) -> float:
    """The textbook loop: random start, signed gradient steps, projection, clip; robust accuracy."""
    torch.manual_seed(seed)
    xa = x.clone()
    if random_start:
        xa = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = F.cross_entropy(model(xa), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xa)
        xa = xa.detach() + alpha * g.sign()
        xa = torch.min(torch.max(xa, x - eps), x + eps).clamp(0, 1)
    with torch.no_grad():
        return float((model(xa).argmax(1) == y).float().mean())


def foolbox_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    alpha: float,
    random_start: bool,
    seed: int,
) -> float:
    fb = foolbox()
    torch.manual_seed(seed)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device="cpu")
    attack = fb.attacks.LinfPGD(steps=steps, abs_stepsize=alpha, random_start=random_start)
    _, _, success = attack(fmodel, x, y, epsilons=[eps])
    return 1.0 - float(success[0].float().mean())


def interleaved(fns: dict[str, Any], repeats: int) -> dict[str, tuple[float, Any]]:
    """Median wall time and last output of each function, run in turn so load drifts hit all alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    outs: dict[str, Any] = {}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t)
    return {k: (statistics.median(v), outs[k]) for k, v in times.items()}


def _frozen(model: nn.Module, fn: Any) -> Any:
    """Run ``fn`` with parameters frozen: the baselines then compute no parameter gradients,
    exactly like this suite (which freezes them itself)."""

    def run() -> Any:
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            return fn()
        finally:
            for p in model.parameters():
                p.requires_grad_(True)

    return run


def bench_pgd_vs_hand(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> list[dict[str, Any]]:
    eps, steps = 0.1, 50
    alpha = 2.5 * eps / steps
    rows = []
    for random_start in (False, True):
        ours = PGD(steps=steps, restarts=1, random_start=random_start, loss="ce")
        res = interleaved(
            {
                "hand": _frozen(model, lambda rs=random_start: hand_pgd(model, x, y, eps, steps, alpha, rs, 0)),
                "ours": lambda attack=ours: attack(model, x, y, [eps], seed=0).robust_accuracy[0],
                "foolbox": _frozen(model, lambda rs=random_start: foolbox_pgd(model, x, y, eps, steps, alpha, rs, 0)),
            },
            repeats,
        )
        (t_hand, acc_hand), (t_ours, acc_ours), (t_fb, acc_fb) = res["hand"], res["ours"], res["foolbox"]
        rows.append(
            {
                "random_start": random_start,
                "eps": eps,
                "steps": steps,
                "batch": int(x.shape[0]),
                "hand_s": t_hand,
                "ours_s": t_ours,
                "foolbox_s": t_fb,
                "ours_over_hand": t_ours / t_hand,
                "foolbox_over_hand": t_fb / t_hand,
                "robust_acc_hand": acc_hand,
                "robust_acc_ours": acc_ours,
                "robust_acc_foolbox": acc_fb,
            }
        )
    return rows


def bench_steps_restarts(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, configs: list[tuple[str, int, int]], eps_list: list[float]
) -> dict[str, Any]:
    grid = []
    union = None
    for loss, steps, restarts in configs:
        t = time.perf_counter()
        r = PGD(steps=steps, restarts=restarts, loss=loss)(model, x, y, eps_list, seed=1)
        grid.append(
            {
                "loss": loss,
                "steps": steps,
                "restarts": restarts,
                "robust_accuracy": r.robust_accuracy,
                "time_s": time.perf_counter() - t,
                "success": r.success,
            }
        )
        union = r.success.clone() if union is None else union | r.success
    assert union is not None
    best = [float(1 - s.float().mean()) for s in union]
    for g in grid:
        g["excess_samples_over_best"] = [int((union[e] & ~g["success"][e]).sum()) for e in range(len(eps_list))]
        del g["success"]
    return {"epsilons": eps_list, "grid": grid, "best_known": best}


def bench_audit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train_s: float) -> list[dict[str, Any]]:
    rows = []
    for preset in ("default", "quick"):
        t = time.perf_counter()
        r = audit_robustness(model, x, y, preset=preset, seed=0, progress=False)
        wall = time.perf_counter() - t
        rows.append(
            {
                "preset": preset,
                "wall_s": wall,
                "over_train": wall / train_s,
                "times_s": r.times_s,
                "attacks": r.attacks,
                "worst_case": r.worst_case,
                "epsilons": r.epsilons,
                "flags": r.flags,
            }
        )
    return rows


def bench_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_list: list[float]) -> dict[str, Any]:
    """The default audit (masking checks included) and torchattacks' AutoAttack standard, each
    timed over all epsilons, alternately so load drifts hit both."""
    import torchattacks

    t = time.perf_counter()
    audit = audit_robustness(model, x, y, epsilons=eps_list, preset="default", seed=0, progress=False)
    audit_s = time.perf_counter() - t
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:  # torchattacks computes parameter gradients otherwise (slower, and they pile up)
        p.requires_grad_(False)
    aa_acc, aa_s = [], 0.0
    try:
        for eps in eps_list:
            t = time.perf_counter()
            adv = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)(x, y)
            aa_s += time.perf_counter() - t
            with torch.no_grad():
                aa_acc.append(float((model(adv).argmax(1) == y).float().mean()))
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return {
        "epsilons": eps_list,
        "samples": int(x.shape[0]),
        "audit_s": audit_s,
        "autoattack_s": aa_s,
        "audit_over_autoattack": audit_s / aa_s,
        "audit_worst_case": audit.worst_case,
        "autoattack_robust_accuracy": aa_acc,
        "audit_times_s": audit.times_s,
        "audit_first_broken_by": audit.first_broken_by,
        "audit_attacked": audit.attacked,
        "audit_flags": audit.flags,
    }


def print_autoattack(row: dict[str, Any]) -> None:
    print(
        f"\n4. Default audit vs torchattacks AutoAttack (standard), {row['samples']} digits test images, "
        f"Linf eps {row['epsilons']}"
    )
    print(
        f"audit {row['audit_s']:.1f}s, AutoAttack {row['autoattack_s']:.1f}s: "
        f"audit / AutoAttack time = {row['audit_over_autoattack']:.2f} (target <= 2)"
    )
    print(f"{'eps':>6}{'audit worst case':>18}{'AutoAttack':>12}")
    for e, a, b in zip(row["epsilons"], row["audit_worst_case"], row["autoattack_robust_accuracy"]):
        print(f"{e:>6g}{a:>18.4f}{b:>12.4f}")
    print(f"  first broken by: {row['audit_first_broken_by']}")
    print(f"  per attack (s): {', '.join(f'{k} {v:.1f}' for k, v in row['audit_times_s'].items())}")
    print(f"  flags: {row['audit_flags'] or 'none'}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller grid and fewer repeats")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 is fastest and steadiest for this tiny model on a shared 2-core box)",
    )
    parser.add_argument("--out", default=str(RESULTS), help="where to save the JSON figures")
    parser.add_argument(
        "--only", choices=["autoattack"], default=None, help="run only part 4 (the AutoAttack comparison)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    x_tr, y_tr = data.load("digits", "train")
    x, y = data.load("digits", "test")
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10)
    t = time.perf_counter()
    fit(model, (x_tr, y_tr), None, TrainConfig(epochs=3, progress=False, seed=0), num_classes=10, bounds=(0.0, 1.0))
    train_s = time.perf_counter() - t
    model.eval()
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    print(f"digits CNN: clean accuracy {clean:.3f} on {x.shape[0]} test images; 3 training epochs took {train_s:.1f}s")
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f} "
        f"(timings on a shared machine are noisy)\n"
    )

    if args.only == "autoattack":
        row = bench_autoattack(model, x, y, [0.05, 0.1, 0.2])
        print_autoattack(row)
        figures = {"model": {"clean_accuracy": clean, "train_s": train_s}, "autoattack": row}
        out = RESULTS.with_name("bench_attacks_autoattack.json") if args.out == str(RESULTS) else Path(args.out)
        atomic_write_json(out, figures)
        print(f"\nsaved {out}")
        return figures

    repeats = 3 if args.quick else 7
    pgd_rows = bench_pgd_vs_hand(model, x, y, repeats)
    print(f"1. PGD (Linf, eps 0.1, 50 steps, batch 397): this suite vs a hand-written torch loop (median of {repeats})")
    print(
        f"{'random start':<14}{'hand s':>9}{'ours s':>9}{'ours/hand':>11}{'foolbox/hand':>14}"
        f"{'acc hand':>10}{'acc ours':>10}{'acc fb':>9}"
    )
    for r in pgd_rows:
        print(
            f"{str(r['random_start']):<14}{r['hand_s']:>9.3f}{r['ours_s']:>9.3f}{r['ours_over_hand']:>11.2f}"
            f"{r['foolbox_over_hand']:>14.2f}{r['robust_acc_hand']:>10.3f}{r['robust_acc_ours']:>10.3f}"
            f"{r['robust_acc_foolbox']:>9.3f}"
        )

    steps_list = [10, 20, 50, 100] if args.quick else [10, 20, 50, 100, 200]
    restarts_list = [1, 2, 4] if args.quick else [1, 2, 4, 8]
    configs = [("ce+margin", s, r) for s in steps_list for r in restarts_list]
    configs += [("ce", 50, 4), ("margin", 50, 4)] + ([] if args.quick else [("ce", 200, 8), ("margin", 200, 8)])
    eps_list = [0.05, 0.1, 0.2]
    grid = bench_steps_restarts(model, x, y, configs, eps_list)
    print(
        f"\n2. PGD robust accuracy against steps x restarts (Linf, eps {eps_list}); 'excess' = samples that some "
        "other configuration fooled but this one did not"
    )
    print(
        f"{'loss':<11}{'steps':>6}{'restarts':>9}"
        + "".join(f"{'eps ' + str(e):>11}" for e in eps_list)
        + f"{'excess':>13}{'time s':>8}"
    )
    for g in grid["grid"]:
        print(
            f"{g['loss']:<11}{g['steps']:>6}{g['restarts']:>9}"
            + "".join(f"{a:>11.4f}" for a in g["robust_accuracy"])
            + f"{str(g['excess_samples_over_best']):>13}{g['time_s']:>8.2f}"
        )
    print(f"{'best known (union)':<26}" + "".join(f"{a:>11.4f}" for a in grid["best_known"]))

    audits = bench_audit(model, x, y, train_s)
    print("\n3. Full audit on the 397 digits test images (Linf, eps 0, 0.05, 0.1, 0.2, 0.3, masking checks included)")
    print(f"{'preset':<9}{'wall s':>8}{'x train time':>14}  per attack (s)")
    for a in audits:
        per = ", ".join(f"{k} {v:.1f}" for k, v in a["times_s"].items())
        print(f"{a['preset']:<9}{a['wall_s']:>8.1f}{a['over_train']:>14.2f}  {per}")
    for a in audits:
        print(f"  {a['preset']} worst case: {[round(v, 3) for v in a['worst_case']]}; flags: {a['flags'] or 'none'}")

    aa = bench_autoattack(model, x, y, [0.05, 0.1, 0.2])
    print_autoattack(aa)

    figures = {
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": args.threads,
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg()[0],
        },
        "model": {"name": "cnn", "data": "digits", "clean_accuracy": clean, "train_s": train_s},
        "pgd_vs_hand": pgd_rows,
        "steps_restarts": grid,
        "audit": audits,
        "autoattack": aa,
    }
    atomic_write_json(args.out, figures)
    print(f"\nsaved {args.out}")
    return figures


if __name__ == "__main__":
    main()
