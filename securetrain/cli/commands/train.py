"""``securetrain train``: train one model into a run directory."""

from __future__ import annotations

import argparse
import json
import sys

from securetrain.cli.plugins import load_providers


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (optionally private and/or adversarial) into a run directory",
        description="Train a model on a data set and write model, config, checkpoint and report to --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_training_arguments(p)
    p.add_argument("--out", required=True, help="run directory to write (created if missing)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    p.add_argument("--no-html", action="store_true", help="skip report.html")
    for provider in load_providers():
        provider.add_arguments(p)
    p.set_defaults(func=run)


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``train`` and ``sweep``."""
    from securetrain.data import DATASETS
    from securetrain.models import MODELS
    from securetrain.training import OPTIMIZERS

    p.add_argument("--data", default="digits", help=f"data set: {', '.join(DATASETS.names())}")
    p.add_argument("--data-root", default=None, help="folder with local data files (mnist, cifar10)")
    p.add_argument("--model", default=None, help=f"model: {', '.join(MODELS.names())} (default: the data set's default)")
    p.add_argument("--model-kwargs", default="{}", help="JSON object of model options, e.g. '{\"hidden\": 64}'")
    p.add_argument("--epochs", type=int, default=5, help="number of epochs")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (expected logical batch size under DP)")
    p.add_argument("--optimizer", default="adam", help=f"optimizer: {', '.join(OPTIMIZERS.names())}")
    p.add_argument("--lr", type=float, default=1e-2, help="learning rate")
    p.add_argument("--seed", type=int, default=0, help="random seed (data order, initialisation, noise)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def config_from_args(args: argparse.Namespace):
    """A :class:`TrainConfig` from parsed flags."""
    from securetrain.errors import ConfigurationError
    from securetrain.training import TrainConfig

    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"--model-kwargs must be a JSON object: {exc}") from exc
    if not isinstance(kwargs, dict):
        raise ConfigurationError("--model-kwargs must be a JSON object")
    return TrainConfig(
        data=args.data,
        model=args.model,
        model_kwargs=kwargs,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        seed=args.seed,
        progress=not args.no_progress and sys.stderr.isatty(),
        data_root=args.data_root,
    )


def defenses_from_args(args: argparse.Namespace) -> list:
    """Every defense whose flags were given."""
    out = []
    for provider in load_providers():
        d = provider.build(args)
        if d is not None:
            out.append(d)
    return out


def run(args: argparse.Namespace) -> int:
    from securetrain.cli.output import summary
    from securetrain.runs import train

    config = config_from_args(args)
    result = train(config, args.out, defenses_from_args(args), resume=args.resume, write_html=not args.no_html)
    sys.stdout.write(summary(result.report, args.out))
    return 0
