"""Measured leakage of plain and private models: membership inference and epsilon lower bounds.

For each data set, trains a plain run and private runs at each target epsilon (default model of the
data set, same TrainConfig), then runs ``attacks.membership.audit_membership_run`` on each: AUC and TPR at
0.1% FPR of the strongest attack and of LiRA online, the empirical epsilon lower bound (95%) next
to the theoretical epsilon, the consistency flag, and the wall time of each audit. Ratios: the
audit time against the plain run's audit time on the same data, and the lower bound against the
theoretical epsilon.

    python benchmarks/bench_membership.py [--data digits,breast_cancer] [--epsilons 1,3,8]
                                          [--shadow-models 4] [--epochs 5] [--seed 0] [--threads 1]

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="digits,breast_cancer")
    ap.add_argument("--epsilons", default="1,3,8")
    ap.add_argument("--shadow-models", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.ERROR)
    datasets = [d for d in args.data.split(",") if d]
    epsilons = [float(e) for e in args.epsilons.split(",") if e]
    rows: list[dict[str, Any]] = []
    missing_dp = False
    with tempfile.TemporaryDirectory() as tmp:
        for data in datasets:
            for eps in [None, *epsilons]:
                r = one(data, eps, args, Path(tmp))
                if r is None:
                    missing_dp = True
                    continue
                rows.append(r)
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
        },
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
