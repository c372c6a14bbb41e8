"""``securetrain demo``: the main job on the embedded digits data."""

from __future__ import annotations

import argparse

from securetrain.cli.output import (
    HelpFormatter,
    add_output_arguments,
    comparison_text,
    emit,
    json_result,
    show_progress,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="train plain, private, adversarial and private+adversarial models on digits, audit them, "
        "run encrypted inference, and write one report",
        description=(
            "The main job on the embedded digits data: four CNNs (plain, differentially private, "
            "adversarially trained, both), a robustness audit of each, membership inference on the "
            "plain and private ones, encrypted inference with an HE-friendly model, and one report "
            "(DIR/report.html) that puts them side by side. Each model's own run directory is in DIR."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--out", default="demo-out", help="output directory")
    p.add_argument("--epochs", type=int, default=None, help="epochs per model (default: each recipe's own)")
    p.add_argument("--epsilon", type=float, default=3.0, help="privacy budget of the private models")
    p.add_argument("--adv-eps", type=float, default=0.1, help="Linf adversarial-training radius (inputs in [0, 1])")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a much smaller run (for smoke tests): fewer epochs, samples and shadow models",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    add_output_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from securetrain.cli.demo_pipeline import DemoOptions, run_demo

    if not args.quiet:
        logging.getLogger("securetrain.demo").setLevel(logging.INFO)
    if args.threads is None:
        import torch

        torch.set_num_threads(1)  # the demo's models are tiny: one thread beats two (docs/robustness.md)
    opts = DemoOptions(
        out=args.out,
        epochs=args.epochs,
        epsilon=args.epsilon,
        adv_eps=args.adv_eps,
        quick=args.quick,
        seed=args.seed,
        progress=show_progress(args),
    )
    report = run_demo(opts)
    rows = report.extra["comparison"]
    human = comparison_text(rows) + f"report: {args.out}/report.html\n"
    emit(args, human, json_result("demo", args.out, report, comparison=rows))
    return 0
