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
    from securetrain.runlock import lock_report_for_update

    Report.from_json(args.dir)  # a missing or malformed report is refused first, with its own message
    with lock_report_for_update(args.dir, command="report"):  # a demo folder has report.json only
        report = Report.from_json(args.dir)  # read again under the lock: what is rendered is what is there
        report.save(args.dir)
    sys.stdout.write(summary(report, args.dir))
    return 0
