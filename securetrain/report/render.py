"""Markdown and self-contained HTML renderings of a :class:`~securetrain.report.report.Report`.

The renderers read a report through :class:`RenderableReport` (what they use of it), so this
module does not import :mod:`securetrain.report.report`, which imports it to save reports.
"""

from __future__ import annotations

import html
import json
from typing import Any, Protocol

from securetrain.report.plots import render_plots


class RenderableReport(Protocol):
    """What the renderers read from a report; :class:`securetrain.report.Report` is one."""

    @property
    def data(self) -> dict[str, Any]: ...

    @property
    def model(self) -> dict[str, Any]: ...

    @property
    def accuracy(self) -> float: ...

    @property
    def privacy(self) -> dict[str, Any] | None: ...

    @property
    def robustness(self) -> dict[str, Any] | None: ...

    @property
    def membership(self) -> dict[str, Any] | None: ...

    @property
    def encrypted(self) -> dict[str, Any] | None: ...

    @property
    def timing(self) -> dict[str, Any]: ...

    @property
    def extra(self) -> dict[str, Any]: ...

    def to_dict(self) -> dict[str, Any]: ...


# Bulky detail kept in report.json but left out of the key/value tables (plots show the curves).
_HIDDEN_KEYS = frozenset(
    {"roc", "roc_curves", "epsilon_history", "layers", "timing", "attack_details", "attack_configs", "checks"}
)

_SECTION_TITLES = {
    "privacy": "Privacy (differential privacy)",
    "robustness": "Robustness (evasion attacks)",
    "membership": "Measured leakage (privacy attacks)",
    "encrypted": "Encrypted inference",
    "timing": "Timing",
}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        if len(v) > 12:
            return f"[{', '.join(_fmt(x) for x in v[:12])}, ... ({len(v)} values)]"
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    if v is None:
        return "-"
    return str(v)


def summary_rows(r: RenderableReport) -> list[tuple[str, str]]:
    """The headline figures, in one table."""
    rows = [
        ("data", str(r.data.get("name", "?"))),
        ("model", str(r.model.get("name", "?"))),
        ("accuracy", _fmt(r.accuracy)),
    ]
    if r.privacy:
        valid = "valid" if r.privacy.get("valid") else "NOT VALID"
        rows.append(("privacy", f"epsilon {_fmt(r.privacy['epsilon'])} at delta {_fmt(r.privacy['delta'])} ({valid})"))
    else:
        rows.append(("privacy", "none (not trained with differential privacy)"))
    if r.robustness:
        pairs = ", ".join(f"{_fmt(e)}: {_fmt(a)}" for e, a in zip(r.robustness["epsilons"], r.robustness["worst_case"]))
        rows.append(("worst-case robust accuracy", f"{r.robustness['norm']} eps -> acc {{{pairs}}}"))
    if r.membership:
        rows.append(
            (
                "membership inference",
                f"AUC {_fmt(r.membership['auc'])}, empirical epsilon >= {_fmt(r.membership['epsilon_lower_bound'])}",
            )
        )
    if r.encrypted:
        rows.append(
            (
                "encrypted inference",
                f"{r.encrypted['scheme']} {r.encrypted['mode']}: agreement {_fmt(r.encrypted['agreement'])}, {_fmt(r.encrypted['per_sample_s'])} s/sample",
            )
        )
    return rows


def _comparison_table(r: RenderableReport) -> list[dict[str, Any]]:
    return list(r.extra.get("comparison") or [])


def render_markdown(r: RenderableReport) -> str:
    """A Markdown report: summary, comparison, then every section as a table."""
    lines = [f"# securetrain report: {r.model.get('name', '?')} on {r.data.get('name', '?')}", ""]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in summary_rows(r)] + [""]
    comp = _comparison_table(r)
    if comp:
        keys = list(comp[0].keys())
        lines += ["## Models side by side", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_fmt(row.get(k)) for k in keys) + " |" for row in comp]
        lines.append("")
    for name, title in _SECTION_TITLES.items():
        sec = getattr(r, name)
        if not sec:
            continue
        lines += [f"## {title}", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in sec.items() if k not in _HIDDEN_KEYS]
        lines.append("")
        for key in ("warnings", "flags"):
            for w in sec.get(key) or []:
                lines.append(f"- **{key[:-1]}**: {w}")
        lines.append("")
    notes = r.extra.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:0.3em 0.6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}.bad{color:#b00;font-weight:bold}.warn{color:#a60}img{max-width:100%}
"""


def _html_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def render_html(r: RenderableReport) -> str:
    """A self-contained HTML report (plots embedded as PNG data URIs)."""
    d = r.to_dict()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>securetrain report: {html.escape(str(r.model.get('name', '?')))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>securetrain report: {html.escape(str(r.model.get('name', '?')))} on {html.escape(str(r.data.get('name', '?')))}</h1>",
        _html_table(summary_rows(r)),
    ]
    if r.privacy and not r.privacy.get("valid", True):
        parts.append("<p class='bad'>The privacy guarantee is NOT valid for this run: see the warnings below.</p>")
    comp = _comparison_table(r)
    if comp:
        keys = list(comp[0].keys())
        head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(row.get(k)))}</td>" for k in keys) + "</tr>" for row in comp
        )
        parts.append(f"<h2>Models side by side</h2><table><tr>{head}</tr>{rows}</table>")
    for title, png in render_plots(d):
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>")
    for name, title in _SECTION_TITLES.items():
        sec = getattr(r, name)
        if not sec:
            continue
        rows_ = [(k, _fmt(v)) for k, v in sec.items() if k not in _HIDDEN_KEYS or name == "timing"]
        parts.append(f"<h2>{html.escape(title)}</h2>{_html_table(rows_)}")
        for key in ("warnings", "flags"):
            for w in sec.get(key) or []:
                parts.append(f"<p class='warn'>{html.escape(key[:-1])}: {html.escape(str(w))}</p>")
    notes = r.extra.get("notes") or []
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>")
    parts.append(
        f"<details><summary>report.json</summary><pre>{html.escape(json.dumps(d, indent=1)[:200000])}</pre></details>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)
