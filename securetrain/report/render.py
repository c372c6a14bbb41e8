"""Markdown and self-contained HTML renderings of a report, through Jinja2 templates.

The templates (``securetrain/report/templates/*.j2``, shipped with the package) lay out the
:class:`~securetrain.report.view.Page` that :func:`~securetrain.report.view.build_page` makes of
the report: the comparison table first when the report compares models, the plots, then one
group of sections per model. The HTML embeds its plots as PNG data URIs (one self-contained
file); the Markdown links the same plots saved as PNG files beside it.

The renderers read a report through :class:`RenderableReport` (its ``to_dict``), so this module
does not import :mod:`securetrain.report.report`, which imports it to save reports.

Example:
    >>> from securetrain.report import Report
    >>> md = render_markdown(Report(data={"name": "digits"}, model={"name": "cnn"}, accuracy=0.9))
    >>> md.splitlines()[0]
    '# securetrain report: cnn on digits'
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from securetrain.report.plots import PlotImage, draw_plots
from securetrain.report.view import PlotRef, build_page
from securetrain.report.view import summary_rows as _summary_rows

if TYPE_CHECKING:
    import jinja2

PLOT_FILE_PREFIX = "report_"
"""Plot files beside report.md are named ``report_<plot>.png`` (``report_<model>_<plot>.png`` per model)."""
MAX_JSON_CHARS = 200_000
"""The HTML's report.json block is cut to this many characters."""


class RenderableReport(Protocol):
    """What the renderers read from a report; :class:`securetrain.report.Report` is one."""

    def to_dict(self) -> dict[str, Any]: ...


CSS = """
body{font-family:system-ui,sans-serif;max-width:72em;margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:0.4em 0 1.2em}td,th{border:1px solid #ccc;padding:0.25em 0.55em;text-align:left;
vertical-align:top}thead th{background:#f0f0f0}tbody th{font-weight:normal;background:#fafafa}
caption{text-align:left;font-style:italic;padding:0.2em 0}.ok{color:#060;font-weight:bold}
.bad{color:#b00;font-weight:bold}.muted{color:#777}.warn{color:#a60}.lead{font-size:1.1em}
.plots{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;max-width:36em}img{max-width:100%}
figcaption{font-weight:bold}section.model{border-top:2px solid #ddd;margin-top:2em}
"""


def _md_cell(value: Any) -> str:
    """Text safe inside a Markdown table cell or line (pipes escaped, one line)."""
    return " ".join(str(value).split()).replace("|", "\\|")


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("securetrain.report", "templates"),
        autoescape=lambda name: name is not None and name.endswith(".html.j2"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["md"] = _md_cell
    return env


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split()) or "model"


def draw_report_plots(d: Mapping[str, Any]) -> dict[str, list[PlotImage]]:
    """Every plot of report dict ``d``: ``""`` holds the comparison plots, each model's name its own.

    File stems are unique: ``report_<plot>`` for a single run or the comparison,
    ``report_<model>_<plot>`` for each model of a comparison.
    """
    models = [m for m in d.get("models") or [] if isinstance(m, Mapping)]
    if not models:
        name = str((d.get("model") or {}).get("name", "?"))
        return {name: draw_plots(dict(d), prefix=PLOT_FILE_PREFIX)}
    out = {"": draw_plots(dict(d), comparison=True, prefix=PLOT_FILE_PREFIX)}
    for m in models:
        name = str(m.get("name", "?"))
        out[name] = draw_plots(dict(m), prefix=f"{PLOT_FILE_PREFIX}{_slug(name)}_")
    return out


def _refs(plots: Mapping[str, Sequence[PlotImage]]) -> dict[str, list[PlotRef]]:
    return {k: [PlotRef(p.title, f"{p.name}.png", p.base64) for p in v] for k, v in plots.items()}


def render_markdown(r: RenderableReport, plots: Mapping[str, Sequence[PlotImage]] | None = None) -> str:
    """A Markdown report; with ``plots`` (from :func:`draw_report_plots`) it links their PNG files."""
    page = build_page(r.to_dict(), _refs(plots or {}))
    return _environment().get_template("report.md.j2").render(page=page)


def render_html(r: RenderableReport, plots: Mapping[str, Sequence[PlotImage]] | None = None) -> str:
    """A self-contained HTML report (plots embedded as PNG data URIs; drawn here unless given)."""
    d = r.to_dict()
    if plots is None:
        plots = draw_report_plots(d)
    text = json.dumps(d, indent=1, allow_nan=True)
    page = build_page(d, _refs(plots), json_text=text[:MAX_JSON_CHARS])
    return _environment().get_template("report.html.j2").render(page=page, css=CSS)


def summary_rows(r: RenderableReport) -> list[tuple[str, str]]:
    """The headline figures of one run, as ``(label, text)`` rows."""
    return _summary_rows(r.to_dict())


__all__ = [
    "PLOT_FILE_PREFIX",
    "RenderableReport",
    "draw_report_plots",
    "render_html",
    "render_markdown",
    "summary_rows",
]
