"""Adversarial training: cost over plain training and audited robust accuracy, alone and with DP.

Table 1 (methods): plain, PGD-7 (Madry), fast FGSM (Wong) and TRADES trained on digits with
the same schedule, plus fast FGSM with 1.5x the epochs (the recommended recipe). For each:
training time (CPU seconds of this process, one torch thread, the minimum over seeds; wall
seconds beside it) as a
ratio over plain training in the same run, clean accuracy, and the robustness audit's
worst-case robust accuracy at the training epsilon (FGSM and PGD 50x5 of the audit's default
preset, with its gradient-masking checks). Mean over ``--seeds``.

Table 2 (four models, the demo's line-up): plain, DP (epsilon 3), adversarial, DP + adversarial
at adv-eps 0.1 on digits, with the recipes of ``defenses.adversarial.recommended``: accuracy,
epsilon (and whether the accounting is valid), robust accuracy, time over plain.

Timings on a shared machine are noisy; CPU time is less so than wall time, so ratios use it.

    python benchmarks/bench_adversarial.py [--epochs 10] [--seeds 0,1,2] [--adv-eps 0.1] [--skip-dp]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save_results, table  # noqa: E402

from attacks.evasion import audit_robustness  # noqa: E402
from defenses.adversarial import TRADES, FastAdversarialTraining, PGDAdversarialTraining, recommended_adversarial  # noqa: E402
from securetrain import data  # noqa: E402
from securetrain.models import build_model  # noqa: E402
from securetrain.training import Defense, TrainConfig, fit  # noqa: E402

DP_EPSILON = 3.0
Factory = Callable[[], list[Defense]]


def dp_defense() -> Defense | None:
    try:
        from defenses.privacy import DifferentialPrivacy
    except ImportError:
        return None
    return DifferentialPrivacy(epsilon=DP_EPSILON)


def train_and_audit(make: Factory, cfg: TrainConfig, adv_eps: float, seed: int) -> dict[str, Any]:
    """Train the digits CNN with ``make()``'s defenses; audit it at ``adv_eps``."""
    (x, y), (xt, yt) = data.load("digits", "train"), data.load("digits", "test")
    torch.manual_seed(seed)
    model = build_model("cnn", (1, 8, 8), 10)
    defenses = make()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = fit(model, (x, y), None, cfg, defenses, num_classes=10, bounds=(0.0, 1.0))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    audit = audit_robustness(
        result.model.eval(),
        xt,
        yt,
        attacks=["fgsm", "pgd"],
        epsilons=[adv_eps],
        preset="default",
        checks=True,
        progress=False,
        seed=seed,
    )
    privacy = result.sections.get("privacy")
    return {
        "train_cpu_s": cpu,
        "train_wall_s": wall,
        "accuracy": audit.clean_accuracy,
        "robust_accuracy": audit.worst_case[0],
        "robust_by_attack": {k: v[0] for k, v in audit.attacks.items()},
        "flags": audit.flags,
        "epsilon": privacy["epsilon"] if privacy else None,
        "privacy_valid": privacy["valid"] if privacy else None,
        "steps": result.session.step_count,
    }


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Over seeds: times are the minimum (noise from other processes only adds time), accuracies the mean."""
    rob = [r["robust_accuracy"] for r in runs]
    return {
        "train_cpu_s": min(r["train_cpu_s"] for r in runs),
        "train_wall_s": min(r["train_wall_s"] for r in runs),
        "accuracy": statistics.mean(r["accuracy"] for r in runs),
        "robust_accuracy": statistics.mean(rob),
        "robust_min": min(rob),
        "robust_max": max(rob),
        "epsilon": runs[0]["epsilon"],
        "privacy_valid": all(r["privacy_valid"] for r in runs) if runs[0]["privacy_valid"] is not None else None,
        "flags": sorted({f for r in runs for f in r["flags"]}),
        "runs": list(runs),
    }


def run_rows(rows: Sequence[tuple[str, Factory, TrainConfig]], seeds: Sequence[int], adv_eps: float) -> dict[str, Any]:
    out = {}
    for name, make, cfg in rows:
        runs = [train_and_audit(make, TrainConfig(**{**cfg.to_dict(), "seed": s}), adv_eps, s) for s in seeds]
        out[name] = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, **summarise(runs)}
        logging.getLogger("bench").info("%s: %s", name, {k: v for k, v in out[name].items() if k != "runs"})
    return out


def warm_up(adv_eps: float) -> None:
    """One tiny run of each kind, so that lazy imports and first-call costs are not timed."""
    cfg = TrainConfig(epochs=1, progress=False)
    train_and_audit(lambda: [FastAdversarialTraining(adv_eps)], cfg, adv_eps, 0)
    dp = dp_defense()
    if dp is not None:
        train_and_audit(lambda: [dp_defense()], cfg, adv_eps, 0)  # type: ignore[list-item]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10, help="schedule of table 1 (every method)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--adv-eps", type=float, default=0.1)
    p.add_argument("--skip-dp", action="store_true", help="skip table 2")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    eps = args.adv_eps
    warm_up(eps)

    base = TrainConfig(epochs=args.epochs, progress=False)
    fast_epochs = recommended_adversarial(epsilon=eps).train["epochs"] * args.epochs // 10
    methods = run_rows(
        [
            ("plain", lambda: [], base),
            ("pgd-7", lambda: [PGDAdversarialTraining(eps, steps=7)], base),
            ("fgsm (fast)", lambda: [FastAdversarialTraining(eps)], base),
            (
                f"fgsm (fast), {fast_epochs} epochs",
                lambda: [FastAdversarialTraining(eps)],
                TrainConfig(epochs=fast_epochs, progress=False),
            ),
            ("trades (beta 6)", lambda: [TRADES(eps, steps=7)], base),
        ],
        seeds,
        eps,
    )
    plain_cpu = methods["plain"]["train_cpu_s"]
    pgd_rob = methods["pgd-7"]["robust_accuracy"]
    rows1 = []
    for name, r in methods.items():
        r["time_over_plain"] = r["train_cpu_s"] / plain_cpu
        r["robust_minus_pgd"] = r["robust_accuracy"] - pgd_rob
        rows1.append(
            [
                name,
                r["epochs"],
                r["train_cpu_s"],
                r["time_over_plain"],
                r["train_wall_s"],
                r["accuracy"],
                r["robust_accuracy"],
                f"{r['robust_min']:.3f}-{r['robust_max']:.3f}",
                r["robust_minus_pgd"],
                "; ".join(r["flags"]) or "-",
            ]
        )
    print(f"\nTable 1: adversarial training on digits, adv-eps {eps}, seeds {seeds} (CPU time, 1 thread)\n")
    print(
        table(
            [
                "method",
                "epochs",
                "train CPU s",
                "x plain",
                "train wall s",
                "accuracy",
                f"robust@{eps}",
                "robust range",
                "robust - pgd-7",
                "audit flags",
            ],
            rows1,
        )
    )
    targets = {}
    for name in (n for n in methods if n.startswith("fgsm")):
        r = methods[name]
        ok = r["robust_minus_pgd"] >= -0.02 and r["time_over_plain"] <= 2.5
        targets[name] = ok
        print(
            f"target (robust within 2 points of pgd-7 at <= 2.5x plain time), {name}: "
            f"{r['robust_minus_pgd']:+.3f}, {r['time_over_plain']:.2f}x -> {'met' if ok else 'NOT met'}"
        )

    four: dict[str, Any] = {}
    if not args.skip_dp:
        if dp_defense() is None:
            print("\nTable 2 skipped: defenses.privacy is not installed")
        else:
            pub, priv = recommended_adversarial(epsilon=eps), recommended_adversarial(private=True, epsilon=eps)
            pub_cfg, priv_cfg = pub.train_config(progress=False), priv.train_config(progress=False)
            four = run_rows(
                [
                    ("plain", lambda: [], pub_cfg),
                    (f"DP (eps {DP_EPSILON:g})", lambda: [dp_defense()], priv_cfg),  # type: ignore[list-item]
                    (f"adversarial ({pub.method})", lambda: [pub.defense()], pub_cfg),
                    (f"DP + adversarial ({priv.method})", lambda: [dp_defense(), priv.defense()], priv_cfg),  # type: ignore[list-item]
                ],
                seeds,
                eps,
            )
            plain4 = four["plain"]["train_cpu_s"]
            rows2 = []
            for name, r in four.items():
                r["time_over_plain"] = r["train_cpu_s"] / plain4
                e = (
                    "-"
                    if r["epsilon"] is None
                    else f"{r['epsilon']:.3f} ({'valid' if r['privacy_valid'] else 'NOT valid'})"
                )
                rows2.append(
                    [
                        name,
                        r["epochs"],
                        r["batch_size"],
                        r["accuracy"],
                        e,
                        r["robust_accuracy"],
                        r["train_cpu_s"],
                        r["time_over_plain"],
                    ]
                )
            print(f"\nTable 2: four models on digits, adv-eps {eps}, DP epsilon {DP_EPSILON:g}, seeds {seeds}\n")
            print(
                table(
                    ["model", "epochs", "batch", "accuracy", "epsilon", f"robust@{eps}", "train CPU s", "x plain"],
                    rows2,
                )
            )

    path = save_results(
        "adversarial",
        {
            "settings": {
                "epochs": args.epochs,
                "seeds": seeds,
                "adv_eps": eps,
                "data": "digits",
                "model": "cnn",
                "audit": "attacks fgsm + pgd (default preset: PGD 50 steps x 5 restarts), worst case, checks on",
                "timing": "CPU seconds of the process, torch.set_num_threads(1); minimum over seeds",
            },
            "methods": methods,
            "fast_target_met": targets,
            "four_models": four,
        },
    )
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
