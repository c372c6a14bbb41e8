"""What the command line prints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from securetrain.report import Report
from securetrain.report.render import summary_rows


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars unless ``--no-progress`` was given or stderr is not a terminal."""
    return not args.no_progress and sys.stderr.isatty()


def summary(report: Report, run_dir: str | Path) -> str:
    """A short human summary of a report and where its files are."""
    width = max(len(k) for k, _ in summary_rows(report))
    lines = [f"{k.ljust(width)}  {v}" for k, v in summary_rows(report)]
    for key in ("warnings", "flags"):
        for sec in (report.privacy, report.robustness):
            for w in (sec or {}).get(key) or []:
                lines.append(f"{key[:-1]}: {w}")
    lines.append(f"report: {Path(run_dir) / 'report.html'}")
    return "\n".join(lines) + "\n"
