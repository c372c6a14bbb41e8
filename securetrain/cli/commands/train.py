"""``securetrain train``: train one model into a run directory.

``--nproc N`` trains on N processes of this machine: the command runs ``torchrun`` (in
this process), which starts N workers running this same command. Each worker, seeing
torchrun's environment, joins the process group and trains on its share of every global
batch; rank 0 writes the run directory and prints the summary. The same workers can be
started with ``torchrun`` directly (several machines: see ``docs/distributed.md``):

    torchrun --nproc-per-node 2 -m securetrain.cli.main train --data digits --dp --epsilon 3 --out runs/dp2
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from securetrain.cli.output import HelpFormatter, add_output_arguments, emit, is_quiet, json_result, show_progress
from securetrain.cli.plugins import load_providers
from securetrain.cli.specs import add_device_argument

if TYPE_CHECKING:
    from defenses.recipe import Recipe
    from securetrain.training import Defense, TrainConfig


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (optionally private and/or adversarial) into a run directory",
        description="Train a model on a data set and write model, config, checkpoint and report to --out.",
        formatter_class=HelpFormatter,
    )
    add_training_arguments(p)
    p.add_argument("--out", required=True, help="run directory to write (created if missing)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint (same settings only)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out (the new run is swapped in only when complete)",
    )
    p.add_argument("--no-html", action="store_true", help="skip report.html")
    add_output_arguments(p, progress=False)  # --no-progress comes with the training flags
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="train on this many processes of this machine (launched with torchrun; --batch-size is the global batch)",
    )
    for provider in load_providers():
        provider.add_arguments(p)
    p.set_defaults(func=run, _train_parser=p)


GENERIC: dict[str, Any] = {"epochs": 5, "batch_size": 64, "optimizer": "adam", "lr": 1e-2, "pretrain_epochs": 15}
"""Training settings used when neither a flag nor a recipe gives them."""

_RECIPE = "; with train --dp: the recommended recipe's"


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``train`` and ``sweep``."""
    from securetrain.data import DATASETS
    from securetrain.data.splits import TRAIN_SPLITS
    from securetrain.models import MODELS
    from securetrain.training import OPTIMIZERS

    p.add_argument(
        "--data",
        default="digits",
        help=f"data set: {', '.join(DATASETS.names())}, an installed plugin's name, package.module:load "
        "(your loader: load(split) -> (x, y) or a Dataset; importing it runs its code) or npz:PATH "
        "(x_train, y_train, x_test, y_test)",
    )
    p.add_argument("--data-root", default=None, help="folder with local data files (mnist, cifar10)")
    p.add_argument(
        "--train-split",
        choices=TRAIN_SPLITS,
        default="train",
        help="split to train on: train, or train+validation for the final refit once settings were chosen on "
        "validation (data sets with a validation split; with --dp the noise is calibrated for its size)",
    )
    p.add_argument(
        "--model",
        default=None,
        help=f"model: {', '.join(MODELS.names())}, or package.module:Factory (your own nn.Module class or "
        "factory; importing it runs its code) (default: the data set's default)",
    )
    p.add_argument(
        "--model-kwargs",
        default=None,
        help="JSON object of model options, e.g. '{\"hidden\": 64}' (default {}; with train --dp: the recipe's)",
    )
    # None: the generic default below, or (train --dp) the recommended recipe's value
    p.add_argument("--epochs", type=int, default=None, help=f"number of epochs (default {GENERIC['epochs']}){_RECIPE}")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"batch size (expected logical batch size under DP; default {GENERIC['batch_size']}){_RECIPE}",
    )
    p.add_argument(
        "--optimizer",
        default=None,
        help=f"optimizer: {', '.join(OPTIMIZERS.names())} (default {GENERIC['optimizer']}){_RECIPE}",
    )
    p.add_argument("--lr", type=float, default=None, help=f"learning rate (default {GENERIC['lr']}){_RECIPE}")
    p.add_argument(
        "--pretrain",
        default=None,
        metavar="DATA",
        help="public data set to pretrain the model on, without privacy, before training on --data (e.g. "
        "mnist-5k-8x8 for digits: another data set, same input shape and classes; epsilon covers --data only), "
        f"or none (default none){_RECIPE}",
    )
    p.add_argument(
        "--pretrain-epochs",
        type=int,
        default=None,
        help=f"epochs of pretraining (default {GENERIC['pretrain_epochs']})",
    )
    p.add_argument(
        "--trainable",
        default=None,
        metavar="PREFIXES",
        help="train only the parameters whose names start with one of these comma-separated prefixes (e.g. "
        f"head. : the head of a pretrained model), or all (default all){_RECIPE}",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (data order, initialisation, noise)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_device_argument(p, "train")


def _pretrain_from_args(args: argparse.Namespace, from_recipe: dict[str, Any]) -> dict[str, Any]:
    """The pretraining settings: ``--pretrain``/``--pretrain-epochs``/``--trainable``, else the recipe's."""
    given = getattr(args, "pretrain", None)
    pretrain = from_recipe.get("pretrain") if given is None else (None if given.lower() == "none" else given)
    prefixes = getattr(args, "trainable", None)
    if prefixes is None:
        trainable = from_recipe.get("trainable")
    elif prefixes.strip().lower() == "all":
        trainable = None
    else:
        trainable = [t.strip() for t in prefixes.split(",") if t.strip()] or prefixes
    epochs = getattr(args, "pretrain_epochs", None)
    if epochs is not None and pretrain is None:
        from securetrain.errors import ConfigurationError

        raise ConfigurationError("--pretrain-epochs needs public data to pretrain on: give --pretrain DATA too")
    if epochs is None:
        epochs = from_recipe.get("pretrain_epochs", GENERIC["pretrain_epochs"])
    return {"pretrain": pretrain, "pretrain_epochs": epochs, "trainable": trainable}


def config_from_args(args: argparse.Namespace, recipe: Recipe | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from parsed flags; a flag not given takes ``recipe``'s value, else :data:`GENERIC`'s."""
    from securetrain.errors import ConfigurationError
    from securetrain.training import TrainConfig

    try:
        kwargs = json.loads(args.model_kwargs if args.model_kwargs is not None else "{}")
    except (json.JSONDecodeError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ConfigurationError(f"--model-kwargs must be a JSON object: {detail}") from None
    if not isinstance(kwargs, dict):
        raise ConfigurationError("--model-kwargs must be a JSON object")
    from_recipe = dict(recipe.train) if recipe is not None else {}
    if args.model_kwargs is None and "model_kwargs" in from_recipe:
        kwargs = dict(from_recipe["model_kwargs"])

    def pick(name: str) -> Any:
        given = getattr(args, name, None)
        return given if given is not None else from_recipe.get(name, GENERIC[name])

    config = TrainConfig(
        data=args.data,
        model=args.model if args.model is not None else from_recipe.get("model"),
        model_kwargs=kwargs,
        epochs=pick("epochs"),
        batch_size=pick("batch_size"),
        optimizer=pick("optimizer"),
        lr=pick("lr"),
        seed=args.seed,
        progress=show_progress(args),
        data_root=args.data_root,
        device=args.device,
        train_split=args.train_split,
        **_pretrain_from_args(args, from_recipe),
    )
    from securetrain.data import DATASETS, get_info
    from securetrain.data.splits import TRAIN_AND_VALIDATION
    from securetrain.models import check_model_options

    # a bad option fails before anything is written (or any worker starts); data named by import path
    # or file is not loaded here just to learn its default model: train() checks the options then
    if config.data in DATASETS and config.train_split == TRAIN_AND_VALIDATION:
        from securetrain.data.base import check_has_validation

        check_has_validation(config.data, get_info(config.data).splits)  # refused before anything starts
    if config.model is not None or config.data in DATASETS:
        check_model_options(config.model or get_info(config.data).default_model, kwargs)
    elif ":" not in config.data:
        from securetrain.data import resolve_data

        resolve_data(config.data, config.data_root)  # an unknown name fails here (a plugin is not loaded yet)
    return config


def defenses_from_args(args: argparse.Namespace) -> list[Defense]:
    """Every defense whose flags were given."""
    out: list[Defense] = []
    for provider in load_providers():
        d = provider.build(args)
        if d is not None:
            out.append(d)
    return out


def run(args: argparse.Namespace) -> int:
    from securetrain.cli.output import summary
    from securetrain.distributed.context import launched_by_torchrun
    from securetrain.distributed.launch import check_nproc
    from securetrain.runs import train
    from securetrain.runwrite import check_may_write, check_out_dir

    nproc = check_nproc(args.nproc) if args.nproc is not None else None
    if args.device is not None and (launched_by_torchrun() or (nproc is not None and nproc > 1)):
        from securetrain.errors import ConfigurationError

        raise ConfigurationError(
            "--device is for single-process training; with --nproc or torchrun each process's device follows "
            "the backend (nccl: its local GPU, gloo: the CPU): leave --device out"
        )
    if launched_by_torchrun():
        return _run_worker(args, nproc)
    recipe = recipe_from_args(args)
    config = config_from_args(args, recipe)
    defenses = defenses_from_args(args)  # bad flags fail here, before any worker starts
    if recipe is not None and not is_quiet(args):  # --quiet: errors only
        sys.stderr.write(recipe_line(recipe, config, defenses))
    if nproc is not None and nproc > 1:
        # refuse here, before workers start (a single process gets the same refusals from train())
        check_may_write(check_out_dir(args.out), resume=args.resume, overwrite=args.overwrite)
        return _launch(args, nproc)
    result = train(
        config,
        args.out,
        defenses,
        resume=args.resume,
        overwrite=args.overwrite,
        write_html=not args.no_html,
        recipe=recipe_record(recipe),
    )
    emit(args, summary(result.report, args.out), json_result("train", args.out, result.report))
    return 0


def recipe_from_args(args: argparse.Namespace) -> Recipe | None:
    """The recommended private recipe that ``--dp`` without settings falls back on (``None``: none applies)."""
    from defenses.privacy.cli import recipe_for
    from defenses.recipe import Recipe

    recipe = recipe_for(args)
    return recipe if isinstance(recipe, Recipe) else None


def recipe_record(recipe: Recipe | None) -> dict[str, Any] | None:
    """What ``config.json`` records of the recipe a run started from (``None``: no recipe)."""
    if recipe is None:
        return None
    return {
        "defense": recipe.defense_name,
        "method": recipe.method,
        "epsilon": recipe.epsilon,
        "train": dict(recipe.train),
        "settings": dict(recipe.settings),
        "note": "flags given on the command line override the recipe; config.json's train and defenses are what ran",
    }


def recipe_line(recipe: Recipe, config: TrainConfig, defenses: list[Defense]) -> str:
    """The stderr line saying which recipe ``--dp`` used, and what ran after the flags' overrides."""
    dp = next((d.config() for d in defenses if d.name == recipe.defense_name), {})
    keys = ("epsilon", "max_grad_norm", "delta", "accountant", "ema_decay")
    settings = ", ".join(f"{k}={dp[k]}" for k in keys if dp.get(k) is not None)
    public = f", pretrain={config.pretrain} ({config.pretrain_epochs} epochs, public)" if config.pretrain else ""
    trainable = f", trainable={','.join(config.trainable)}" if config.trainable else ""
    return (
        f"recipe: the recommended private recipe for {config.data}/{config.resolved_model()} "
        f"(flags given override it): epochs={config.epochs}, batch_size={config.batch_size}, "
        f"optimizer={config.optimizer}, lr={config.lr:g}{public}{trainable}, {settings}\n"
    )


def _run_worker(args: argparse.Namespace, nproc: int | None) -> int:
    """One rank of a torchrun job: join the group, train together, rank 0 writes and prints."""
    import logging
    import os

    from securetrain.cli.output import summary
    from securetrain.distributed.context import process_group
    from securetrain.errors import ConfigurationError
    from securetrain.runs import train

    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    if nproc is not None and nproc != local:
        raise ConfigurationError(
            f"--nproc {nproc} disagrees with torchrun, which started {local} processes on this machine; "
            "leave --nproc out when launching with torchrun"
        )
    recipe = recipe_from_args(args)
    config = config_from_args(args, recipe)
    defenses = defenses_from_args(args)
    with process_group() as ctx:
        if not ctx.is_main:
            # rank 0 speaks for the job: the other ranks' notes (the same ones) would repeat it
            config.progress = False
            logging.getLogger("securetrain").setLevel(logging.ERROR)
        result = train(
            config,
            args.out,
            defenses,
            resume=args.resume,
            overwrite=args.overwrite,
            write_html=not args.no_html,
            distributed=True,
            recipe=recipe_record(recipe),
        )
        if ctx.is_main:
            emit(args, summary(result.report, args.out), json_result("train", args.out, result.report))
    return 0


def _launch(args: argparse.Namespace, nproc: int) -> int:
    """Run this command on ``nproc`` processes under torchrun and wait for them."""
    from securetrain.distributed.launch import argv_from_namespace, launch

    worker_argv = ["-v"] * int(getattr(args, "verbose", 0) or 0) + ["train"]
    worker_argv += argv_from_namespace(args._train_parser, args, skip={"nproc"})
    launch(worker_argv, nproc, failure_hint=lambda: checkpoint_hint(args.out))
    return 0


def checkpoint_hint(out: str) -> str:
    """What is left in run directory ``out`` after a failed job, and how to continue."""
    from pathlib import Path

    from securetrain.checkpoint import load_state
    from securetrain.errors import CheckpointError
    from securetrain.training import CHECKPOINT_NAME

    path = Path(out) / CHECKPOINT_NAME
    if not path.is_file():
        return f"No checkpoint was written yet ({path} does not exist): start the run again."
    try:
        state = load_state(path)
    except CheckpointError as exc:
        return f"The last checkpoint cannot be read ({exc})."
    return (
        f"The last checkpoint, {path} (after epoch {state.get('epoch')}, step {state.get('step_count')}), is intact: "
        "run the same command with --resume to continue (with any --nproc)."
    )
