"""Reports: one object with accuracy, privacy, robustness, leakage and encryption side by side.

Sections are typed (:class:`PrivacySection`, :class:`RobustnessSection`,
:class:`MembershipSection`, :class:`EncryptedSection`, registered in :data:`SECTIONS`);
:meth:`Report.add` puts one into a report. Markdown and HTML are rendered from Jinja2 templates.

Example:
    >>> from securetrain.report import Report
    >>> r = Report(data={"name": "digits"}, model={"name": "cnn"}, accuracy=0.9)
    >>> "accuracy" in r.to_dict()
    True
"""

from __future__ import annotations

from securetrain.report.plots import COMPARISON_PLOTS, PLOTS, register_plot
from securetrain.report.render import render_html, render_markdown
from securetrain.report.report import Report
from securetrain.report.schema import SCHEMA, SECTION_KEYS, check_section
from securetrain.report.sections import (
    SECTIONS,
    EncryptedSection,
    MembershipSection,
    PrivacySection,
    RobustnessSection,
    Section,
    register_section,
)

__all__ = [
    "COMPARISON_PLOTS",
    "PLOTS",
    "SCHEMA",
    "SECTIONS",
    "SECTION_KEYS",
    "EncryptedSection",
    "MembershipSection",
    "PrivacySection",
    "Report",
    "RobustnessSection",
    "Section",
    "check_section",
    "register_plot",
    "register_section",
    "render_html",
    "render_markdown",
]
