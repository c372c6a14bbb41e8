"""The default number of torch CPU threads of a command, chosen by the model's size.

For the small zoo models a training or attack step is a few milliseconds: torch's default of
several threads then spends more time synchronising than computing (2 threads measured 3-10x
slower than 1 on a busy 2-core machine). A model of at most :data:`SMALL_MODEL_PARAMETERS`
parameters runs on one thread; a larger one keeps torch's default. ``--threads N`` overrides.
"""

from __future__ import annotations

import argparse
import json

from securetrain.errors import SecureTrainError

SMALL_MODEL_PARAMETERS = 1_000_000
"""Models with at most this many parameters run on one thread unless ``--threads`` says otherwise."""
_RUN_DIR_COMMANDS = frozenset({"audit", "encrypt", "serve"})
_TRAINING_COMMANDS = frozenset({"train", "sweep"})


def threads_for(parameters: int | None) -> int | None:
    """1 for a small model, ``None`` (torch's default) for a large or unknown one.

    Example:
        >>> threads_for(13_706), threads_for(25_000_000), threads_for(None)
        (1, None, None)
    """
    if parameters is not None and parameters <= SMALL_MODEL_PARAMETERS:
        return 1
    return None


def model_parameters(args: argparse.Namespace) -> int | None:
    """The parameter count of the model a command will run (``None`` if it cannot be told cheaply).

    A run directory's report records it; for ``train`` and ``sweep`` the model is built once,
    untrained. Bad flags or a missing run give ``None`` here: the command then reports them.
    """
    command = args.command
    try:
        if command in _RUN_DIR_COMMANDS:
            from securetrain.report import Report

            count = Report.from_json(args.dir).model.get("parameters")
            return int(count) if isinstance(count, int) else None
        if command in _TRAINING_COMMANDS:
            from securetrain.data import get_info
            from securetrain.models import build_model, check_model_options

            if ":" in str(args.data) or ":" in str(args.model or ""):
                return None  # an import-path spec or a file: not imported or read just to count threads
            info = get_info(args.data)
            name = args.model or info.default_model
            kwargs = json.loads(args.model_kwargs) if args.model_kwargs is not None else {}
            if not isinstance(kwargs, dict):
                return None
            check_model_options(name, kwargs)
            model = build_model(name, info.input_shape, info.num_classes, **kwargs)
            return int(sum(p.numel() for p in model.parameters()))
    except (SecureTrainError, json.JSONDecodeError, RecursionError, OSError):
        return None  # the command itself reports what is wrong, with its own message
    return None


def default_threads(args: argparse.Namespace) -> int | None:
    """The thread count to set when ``--threads`` is not given (``None``: leave torch's default)."""
    return threads_for(model_parameters(args))
