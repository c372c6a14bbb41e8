"""Measured leakage of plain and private models: membership inference and epsilon lower bounds.

For each data set, trains a plain run and private runs at each target epsilon (default model of the
data set, same TrainConfig), then runs ``attacks.membership.audit_membership_run`` on each: AUC and TPR at
0.1% FPR of the strongest attack and of LiRA online, the empirical epsilon lower bound (95%) next
to the theoretical epsilon, the consistency flag, and the wall time of each audit. Ratios: the
audit time against the plain run's audit time on the same data, and the lower bound against the
theoretical epsilon.

    python benchmarks/bench_membership.py [--data digits,breast_cancer] [--epsilons 1,3,8]
                                          [--shadow-models 4] [--epochs 5] [--seed 0] [--threads 1]
                                          [--white-box-epsilons 2,4,8] [--canaries 1000] [--skip-black-box]

White-box DP-SGD audit (``attacks.audit.audit_dp_sgd``): for each data set (default model: the
digits CNN, the breast-cancer MLP) and each epsilon of ``--white-box-epsilons`` (delta 1e-5), a
private run is trained and timed, then audited with one extra run carrying ``--canaries`` Dirac
gradient canaries. Targets: lower bound >= 0.5 x the claimed epsilon at 2 and 4, audit time
<= 3 x the run's own training time (both measured in the same process).

One torch thread by default: these tiny models train fastest on one thread, several times faster
than on two when the machine is shared.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save_results, table  # noqa: E402

import securetrain  # noqa: E402
from attacks.audit import audit_dp_sgd  # noqa: E402
from attacks.membership import audit_membership_run  # noqa: E402
from securetrain.training import TrainConfig  # noqa: E402

DELTA = 1e-5


def dp_defense(epsilon: float) -> Any | None:
    """The project's DP defense at ``epsilon`` (delta 1e-5, clipping norm 1), or None if it is not installed."""
    try:
        from defenses.privacy import DifferentialPrivacy
    except ImportError:
        return None
    params = inspect.signature(DifferentialPrivacy).parameters
    kwargs = {"epsilon": epsilon, "delta": DELTA, "max_grad_norm": 1.0}
    return DifferentialPrivacy(**{k: v for k, v in kwargs.items() if k in params})


def one(data: str, epsilon: float | None, args: argparse.Namespace, root: Path) -> dict[str, Any] | None:
    defenses = []
    if epsilon is not None:
        d = dp_defense(epsilon)
        if d is None:
            return None
        defenses.append(d)
    run_dir = root / f"{data}-{'plain' if epsilon is None else f'eps{epsilon:g}'}"
    t0 = time.perf_counter()
    result = securetrain.train(
        TrainConfig(data=data, epochs=args.epochs, seed=args.seed, progress=False), run_dir, defenses, write_html=False
    )
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = audit_membership_run(run_dir, shadow_models=args.shadow_models, seed=args.seed)
    audit_s = time.perf_counter() - t0
    privacy = result.report.privacy or {}
    lira = out["attacks"].get("lira-online") or out["attacks"]["lira-offline"]
    return {
        "data": data,
        "setting": "plain" if epsilon is None else f"dp eps={epsilon:g}",
        "theoretical_epsilon": privacy.get("epsilon"),
        "accuracy": result.report.accuracy,
        "attack": out["attack"],
        "auc": out["auc"],
        "tpr_at_0.1%": out["tpr_at_fpr"]["0.001"],
        "tpr_at_1%": out["tpr_at_fpr"]["0.01"],
        "lira_online_auc": lira["auc"],
        "lira_online_tpr_at_0.1%": lira["tpr_at_fpr"]["0.001"],
        "loss_auc": out["attacks"]["loss"]["auc"],
        "epsilon_lower_bound": out["epsilon_lower_bound"],
        "bound_source": out["epsilon_lower_bound_source"],
        "canary_bound": (out["canary"] or {}).get("epsilon_lower_bound"),
        "privacy_violated": out.get("privacy_violated"),
        "train_s": train_s,
        "audit_s": audit_s,
        "audit_timing": out["timing_s"],
    }


def white_box(data: str, epsilon: float, args: argparse.Namespace, root: Path) -> dict[str, Any] | None:
    """Train a private run at ``epsilon``, then audit it white-box; both timed."""
    d = dp_defense(epsilon)
    if d is None:
        return None
    run_dir = root / f"{data}-wb-eps{epsilon:g}"
    t0 = time.perf_counter()
    result = securetrain.train(
        TrainConfig(data=data, epochs=args.epochs, seed=args.seed, progress=False), run_dir, [d], write_html=False
    )
    train_s = time.perf_counter() - t0
    audit = audit_dp_sgd(run_dir, canaries=args.canaries, seed=args.seed)
    claimed = float((result.report.privacy or {})["epsilon"])
    return {
        "data": data,
        "target_epsilon": epsilon,
        "claimed_epsilon": claimed,
        "audit_claimed_epsilon": audit.claimed_epsilon,
        "epsilon_lower_bound": audit.epsilon_lower_bound,
        "method": audit.method,
        "counting_bound": audit.counting.epsilon_lower_bound,
        "gaussian_bound": audit.gaussian.epsilon,
        "mechanism_bound": audit.mechanism.epsilon,
        "fitted_noise_multiplier": audit.mechanism.noise_multiplier,
        "fitted_sample_rate": audit.mechanism.sample_rate,
        "mu_hat": audit.gaussian.mu_hat,
        "ratio": audit.epsilon_lower_bound / audit.claimed_epsilon,
        "violated": audit.violated,
        "train_s": train_s,
        "audit_s": audit.seconds,
        "audit_x_train": audit.seconds / train_s,
        "steps": audit.steps,
        "canaries": audit.m,
    }


def print_white_box(rows: list[dict[str, Any]]) -> None:
    headers = ["data", "target eps", "claimed", "bound", "bound/claim", "method", "counting", "gaussian"]
    headers += ["mechanism", "fitted sigma", "violated", "train s", "audit s", "audit/train", "target met"]
    body = []
    for r in rows:
        ratio_ok = r["ratio"] >= 0.5 or r["target_epsilon"] > 4
        met = ratio_ok and r["audit_x_train"] <= 3.0
        body.append(
            [
                r["data"],
                float(r["target_epsilon"]),
                float(r["audit_claimed_epsilon"]),
                float(r["epsilon_lower_bound"]),
                float(r["ratio"]),
                r["method"],
                float(r["counting_bound"]),
                float(r["gaussian_bound"]),
                float(r["mechanism_bound"]),
                float(r["fitted_noise_multiplier"]),
                str(r["violated"]),
                float(r["train_s"]),
                float(r["audit_s"]),
                float(r["audit_x_train"]),
                str(met),
            ]
        )
    print(table(headers, body))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="digits,breast_cancer")
    ap.add_argument("--epsilons", default="1,3,8")
    ap.add_argument("--shadow-models", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--white-box-epsilons", default="2,4,8", help="epsilons of the white-box DP-SGD audit ('' to skip)")
    ap.add_argument("--canaries", type=int, default=1000, help="Dirac canaries of the white-box audit")
    ap.add_argument("--skip-black-box", action="store_true", help="only the white-box DP-SGD audit")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.ERROR)
    datasets = [d for d in args.data.split(",") if d]
    epsilons = [float(e) for e in args.epsilons.split(",") if e]
    rows: list[dict[str, Any]] = []
    wb_rows: list[dict[str, Any]] = []
    missing_dp = False
    with tempfile.TemporaryDirectory() as tmp:
        for data in datasets:
            for wb_eps in [float(e) for e in args.white_box_epsilons.split(",") if e]:
                wb = white_box(data, wb_eps, args, Path(tmp))
                if wb is not None:
                    wb_rows.append(wb)
            if args.skip_black_box:
                continue
            for eps in [None, *epsilons]:
                r = one(data, eps, args, Path(tmp))
                if r is None:
                    missing_dp = True
                    continue
                rows.append(r)
    if wb_rows:
        print(f"white-box DP-SGD audit: {args.canaries} canaries, one extra run, 95% confidence, delta {DELTA:g}")
        print_white_box(wb_rows)
    if args.skip_black_box:
        path = save_results("membership_white_box", {"epochs": args.epochs, "seed": args.seed, "rows": wb_rows})
        print(f"saved {path}")
        return
    base_audit = {r["data"]: r["audit_s"] for r in rows if r["setting"] == "plain"}
    print(
        f"membership audit: {args.shadow_models} shadow models, {args.epochs} epochs, seed {args.seed}, "
        f"{torch.get_num_threads()} threads; bounds at 95% confidence, delta {DELTA:g}"
    )
    headers = [
        "data",
        "setting",
        "acc",
        "theory eps",
        "eps lower bd",
        "bd / theory",
        "bound from",
        "violated",
        "best attack",
        "AUC",
        "TPR@0.1%",
        "TPR@1%",
        "LiRA-on AUC",
        "LiRA-on TPR@0.1%",
        "loss AUC",
        "audit s",
        "audit x plain",
    ]
    table_rows = []
    for r in rows:
        th = r["theoretical_epsilon"]
        table_rows.append(
            [
                r["data"],
                r["setting"],
                float(r["accuracy"]),
                "-" if th is None else float(th),
                float(r["epsilon_lower_bound"]),
                "-" if not th else float(r["epsilon_lower_bound"]) / float(th),
                r["bound_source"],
                "-" if r["privacy_violated"] is None else str(r["privacy_violated"]),
                r["attack"],
                float(r["auc"]),
                float(r["tpr_at_0.1%"]),
                float(r["tpr_at_1%"]),
                float(r["lira_online_auc"]),
                float(r["lira_online_tpr_at_0.1%"]),
                float(r["loss_auc"]),
                float(r["audit_s"]),
                float(r["audit_s"]) / base_audit[r["data"]],
            ]
        )
    print(table(headers, table_rows))
    if missing_dp:
        print("defenses.privacy is not installed: private settings were skipped")
    path = save_results(
        "membership",
        {
            "shadow_models": args.shadow_models,
            "epochs": args.epochs,
            "seed": args.seed,
            "delta": DELTA,
            "threads": args.threads,
            "dp_available": not missing_dp,
            "rows": rows,
            "white_box": wb_rows,
        },
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
