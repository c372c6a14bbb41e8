"""What the command line prints, and the flags that shape it (``--json``, ``--quiet``, ``--no-progress``).

Human-readable results go to stdout, logs and progress bars to stderr. With ``--json`` a
command prints exactly one JSON object on stdout (see :func:`json_result`) and nothing else;
``--quiet`` prints nothing on stdout, hides progress bars and logs only errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from securetrain.report import SECTION_KEYS, Report
from securetrain.report.render import summary_rows


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already names its default.

    Nothing is added for flags (``store_true``), for a default of ``None`` (the help says
    what happens instead) or for positional arguments.

    Example:
        >>> p = argparse.ArgumentParser(prog="x", formatter_class=HelpFormatter)
        >>> _ = p.add_argument("--epochs", type=int, default=5, help="number of epochs")
        >>> _ = p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        >>> _ = p.add_argument("--model", default=None, help="model name")
        >>> text = p.format_help()
        >>> "number of epochs (default: 5)" in text, text.count("default"), "None" in text
        (True, 2, False)
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "default" in text.lower()
            or action.default is None
            or action.default is argparse.SUPPRESS
            or isinstance(action.default, bool)
            or not action.option_strings
            or action.nargs == 0
        ):
            return text
        return f"{text} (default: %(default)s)"


def add_output_arguments(p: argparse.ArgumentParser, *, progress: bool = True) -> None:
    """Add ``--json`` and ``--quiet`` (and ``--no-progress`` unless ``progress=False``) to a command."""
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (the report sections written, and where) on stdout instead of the summary; "
        "logs stay on stderr",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing on stdout, hide progress bars, log errors only")
    if progress:
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def wants_json(args: argparse.Namespace) -> bool:
    """``--json`` was given."""
    return bool(getattr(args, "json", False))


def is_quiet(args: argparse.Namespace) -> bool:
    """``--quiet`` was given."""
    return bool(getattr(args, "quiet", False))


def apply_quiet(args: argparse.Namespace) -> None:
    """Under ``--quiet``, log errors only (call once the command starts)."""
    if is_quiet(args):
        logging.getLogger("securetrain").setLevel(logging.ERROR)


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars (on stderr) unless ``--no-progress`` or ``--quiet`` was given or stderr is not a terminal."""
    return not getattr(args, "no_progress", False) and not is_quiet(args) and sys.stderr.isatty()


def json_result(
    command: str, run_dir: str | Path, report: Report, sections: Iterable[str] | None = None, **more: Any
) -> dict[str, Any]:
    """The object ``--json`` prints: the command, the run directory, its files and the sections written.

    ``sections`` names the report keys this command wrote (default: every section the report has).

    Example:
        >>> r = Report(data={"name": "digits"}, model={"name": "cnn"}, accuracy=0.9)
        >>> out = json_result("train", "runs/a", r)
        >>> out["command"], out["accuracy"], out["sections"], out["files"]["report_json"]
        ('train', 0.9, {}, 'runs/a/report.json')
    """
    d = report.to_dict()
    keys = [k for k in SECTION_KEYS if d.get(k) is not None] if sections is None else list(sections)
    run = Path(run_dir)
    return {
        "command": command,
        "run_dir": str(run),
        "files": {f"report_{ext}": str(run / f"report.{ext}") for ext in ("json", "md", "html")},
        "data": d["data"].get("name"),
        "model": d["model"].get("name"),
        "accuracy": d["accuracy"],
        "sections": {k: d.get(k) for k in keys},
        **more,
    }


def emit(args: argparse.Namespace, human: str, result: Mapping[str, Any]) -> None:
    """Print ``result`` as one JSON object under ``--json``, nothing under ``--quiet``, else ``human``."""
    if wants_json(args):
        sys.stdout.write(json.dumps(result, default=_json_default) + "\n")
    elif not is_quiet(args):
        sys.stdout.write(human)
    sys.stdout.flush()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def comparison_text(rows: list[dict[str, Any]]) -> str:
    """The comparison rows (:func:`securetrain.report.view.comparison_rows`) as aligned text, one line per model.

    Example:
        >>> print(comparison_text([{"model": "plain", "accuracy": 0.98, "epsilon": None}]), end="")
        model  accuracy  epsilon
        plain  0.98      -
    """
    from securetrain.report.view import fmt

    if not rows:
        return ""
    keys = list(rows[0])
    table = [keys] + [[fmt(row.get(k)) for k in keys] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(keys))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n" for r in table)


def summary(report: Report, run_dir: str | Path) -> str:
    """A short human summary of a report and where its files are."""
    width = max(len(k) for k, _ in summary_rows(report))
    lines = [f"{k.ljust(width)}  {v}" for k, v in summary_rows(report)]
    for key in ("warnings", "flags"):
        for sec in (report.privacy, report.robustness):
            for w in (sec.get(key) if sec is not None else None) or []:
                lines.append(f"{key[:-1]}: {w}")
    lines.append(f"report: {Path(run_dir) / 'report.html'}")
    return "\n".join(lines) + "\n"
