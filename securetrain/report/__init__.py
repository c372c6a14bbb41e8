"""Reports: one object with accuracy, privacy, robustness, leakage and encryption side by side.

Example:
    >>> from securetrain.report import Report
    >>> r = Report(data={"name": "digits"}, model={"name": "cnn"}, accuracy=0.9)
    >>> "accuracy" in r.to_dict()
    True
"""

from __future__ import annotations

from securetrain.report.plots import PLOTS, register_plot
from securetrain.report.render import render_html, render_markdown
from securetrain.report.report import Report
from securetrain.report.schema import SCHEMA, SECTION_KEYS, check_section

__all__ = [
    "PLOTS",
    "SCHEMA",
    "SECTION_KEYS",
    "Report",
    "check_section",
    "register_plot",
    "render_html",
    "render_markdown",
]
