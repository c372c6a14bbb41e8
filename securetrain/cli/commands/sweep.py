"""``securetrain sweep``: the privacy-utility curve (accuracy at several epsilons and without privacy)."""

from __future__ import annotations

import argparse
import math

from securetrain.cli.output import HelpFormatter, add_output_arguments, emit, json_result


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from securetrain.cli.commands.train import add_training_arguments

    p = sub.add_parser(
        "sweep",
        help="train privately at several epsilons (and once without privacy) and plot the privacy-utility curve",
        description=(
            "Train one model per target epsilon with DP-SGD and one non-private baseline; each run is a full run "
            "directory in --out, and --out/report.html shows accuracy against epsilon."
        ),
        formatter_class=HelpFormatter,
    )
    add_training_arguments(p)
    p.add_argument("--out", required=True, help="output directory (one run directory per epsilon inside)")
    p.add_argument("--epsilons", default="0.5,1,2,4,8", help="comma-separated target epsilons")
    p.add_argument("--delta", type=float, default=None, help="target delta (default: min(1e-5, 0.1/n))")
    p.add_argument(
        "--max-grad-norm",
        type=float,
        default=None,
        help="per-sample clipping norm C (default 1.0, or the recommended one)",
    )
    p.add_argument("--accountant", default="prv", choices=("prv", "rdp", "gdp"), help="privacy accountant")
    p.add_argument("--grad-sample-mode", default="auto", help="per-sample gradient engine")
    p.add_argument(
        "--physical-batch-size", type=int, default=None, help="split Poisson batches into chunks of at most this size"
    )
    p.add_argument(
        "--max-memory-mb",
        type=float,
        default=None,
        help="memory budget (MB) of one private step: each run's physical batch is the largest whose measured "
        "peak step memory fits (instead of --physical-batch-size)",
    )
    p.add_argument(
        "--recommended",
        action="store_true",
        help="use the tuned private settings of defenses.privacy.recommended(DATA) (batch size, epochs, optimizer, "
        "learning rate, clipping norm, public pretraining) for the private runs where no flag gives them; the "
        "baseline keeps the flags given",
    )
    p.add_argument("--no-baseline", action="store_true", help="skip the non-private run")
    p.add_argument("--no-html", action="store_true", help="skip report.html files")
    add_output_arguments(p, progress=False)  # --no-progress comes with the training flags
    p.set_defaults(func=run)


def _epsilons(text: str) -> list[float]:
    """``"0.5,1,1,2"`` -> ``[0.5, 1.0, 2.0]``: finite positive numbers, duplicates dropped (order kept)."""
    from securetrain.errors import ConfigurationError

    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigurationError(
            f"--epsilons must be comma-separated numbers, e.g. 0.5,1,2,4,8; got {text!r}"
        ) from None
    if not values:
        raise ConfigurationError("--epsilons is empty; give e.g. 0.5,1,2,4,8")
    bad = [v for v in values if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ConfigurationError(
            f"--epsilons must be finite numbers > 0, e.g. 0.5,1,2,4,8; got {', '.join(f'{v:g}' for v in bad)}"
        )
    return list(dict.fromkeys(values))  # each epsilon once, in the order given


def run(args: argparse.Namespace) -> int:

    from defenses.privacy.curve import sweep
    from defenses.privacy.presets import recommended
    from securetrain.cli.commands.train import config_from_args
    from securetrain.cli.output import summary

    base = config_from_args(args)
    private = base
    privacy: dict[str, object] = {"accountant": args.accountant, "grad_sample_mode": args.grad_sample_mode}
    if args.recommended:
        rec = recommended(args.data, model=args.model)
        private = config_from_args(args, rec)  # the recipe's settings where no flag was given, as in train --dp
        privacy.update(rec.settings)
        privacy["accountant"] = args.accountant
    if args.max_grad_norm is not None:
        privacy["max_grad_norm"] = args.max_grad_norm
    if args.delta is not None:
        privacy["delta"] = args.delta
    if args.physical_batch_size is not None:
        privacy["physical_batch_size"] = args.physical_batch_size
    if args.max_memory_mb is not None:
        privacy["max_memory_mb"] = args.max_memory_mb
    result = sweep(
        private,
        _epsilons(args.epsilons),
        args.out,
        privacy=privacy,
        non_private=not args.no_baseline,
        non_private_config=base,
        write_html=not args.no_html,
    )
    lines = [summary(result.report, args.out)]
    for p in result.points:
        valid = "" if p["valid"] else " (NOT VALID)"
        va = p.get("validation_accuracy")
        shown = f", validation {va:.4f}" if va is not None else ""
        lines.append(
            f"epsilon {p['epsilon']:g}: accuracy {p['accuracy']:.4f}{shown}, spent {p['epsilon_spent']:.3f}{valid}\n"
        )
    if result.non_private_accuracy is not None:
        lines.append(f"non-private: accuracy {result.non_private_accuracy:.4f}\n")
    sweep_result = {"points": result.points, "non_private_accuracy": result.non_private_accuracy}
    emit(args, "".join(lines), json_result("sweep", args.out, result.report, sweep=sweep_result))
    return 0
