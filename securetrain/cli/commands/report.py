"""``securetrain report``: re-render report.md and report.html from report.json."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="re-render report.md / report.html from a run directory's report.json",
        description="Read DIR/report.json, check it against the schema, and write report.md and report.html.",
    )
    p.add_argument("dir", help="run directory containing report.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from securetrain.cli.output import summary
    from securetrain.report import Report
    from securetrain.runlock import lock_run_for_update

    with lock_run_for_update(args.dir, command="report"):
        report = Report.from_json(args.dir)
        report.save(args.dir)
    sys.stdout.write(summary(report, args.dir))
    return 0
