"""What a rendered report shows, as plain data the templates lay out.

:func:`build_page` turns a report into a :class:`Page`: a headline, the comparison table when
the report compares several models (its ``models`` list), plots, then one group of sections per
model whose titles name the model. Nested values become small tables, never a dict's repr.

Example:
    >>> page = build_page({"schema": "securetrain.report/1", "data": {"name": "digits"},
    ...                    "model": {"name": "cnn"}, "accuracy": 0.9, "privacy": None,
    ...                    "robustness": None, "membership": None, "encrypted": None, "timing": {}})
    >>> page.title, [g.title for g in page.groups]
    ('securetrain report: cnn on digits', ['cnn on digits'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from securetrain.report.schema import SECTION_KEYS
from securetrain.report.sections import MembershipSection, PrivacySection, RobustnessSection, Section, as_section

HIDDEN_KEYS = frozenset(
    {
        "roc",
        "roc_curves",
        "epsilon_history",
        "layers",
        "timing",
        "attack_details",
        "attack_configs",
        "checks",
        "warnings",
        "flags",
        "notes",
        "bound",
        "consistency_check",
    }
)
"""Bulky detail kept in report.json but left out of the tables (plots or sentences show it)."""

MAX_LIST = 12
"""Longer lists are cut to this many values in a table cell."""
MAX_ROWS = 40
"""Nested tables show at most this many rows."""


@dataclass
class Cell:
    """One table cell: its text and an optional style (``ok``, ``bad``, ``muted``)."""

    text: str
    style: str = ""


@dataclass
class Table:
    """A small table: a caption, column heads and rows of cells."""

    head: list[str]
    rows: list[list[Cell]]
    caption: str = ""


@dataclass
class PlotRef:
    """A plot: title, file name (beside report.md) and the PNG as base64 (for the HTML)."""

    title: str
    file: str
    base64: str


@dataclass
class SectionView:
    """One section of one model: title (naming the model), sentences, tables, warnings."""

    title: str
    anchor: str
    sentences: list[str] = field(default_factory=list)
    alert: str = ""
    tables: list[Table] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    plots: list[PlotRef] = field(default_factory=list)


@dataclass
class Group:
    """Everything about one model: a summary table, its plots, its sections."""

    title: str
    anchor: str
    summary: Table
    plots: list[PlotRef] = field(default_factory=list)
    sections: list[SectionView] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    location: str = ""


@dataclass
class Page:
    """A whole report page."""

    title: str
    lead: list[str]
    comparison: Table | None
    plots: list[PlotRef]
    groups: list[Group]
    notes: list[str]
    json_text: str = ""
    timing: Table | None = None


# ---------------------------------------------------------------------- formatting


def fmt(value: Any) -> str:
    """A value as short text: floats to 4 significant digits, lists cut, mappings as ``k: v; ...``.

    Example:
        >>> fmt(0.123456), fmt([1, 2.5]), fmt({"a": 1, "b": [0.5]}), fmt(None)
        ('0.1235', '1, 2.5', 'a: 1; b: 0.5', '-')
    """
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    if isinstance(value, (Mapping, list, tuple)) and not value:
        return "none"
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        shown = ", ".join(fmt(x) for x in value[:MAX_LIST])
        return shown + (f", ... ({len(value)} values)" if len(value) > MAX_LIST else "")
    return str(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split()) or "section"


def nested_tables(key: str, value: Any) -> list[Table]:
    """A nested value as small tables (empty if the value fits a cell).

    A mapping of scalars is a key/value table; a mapping of mappings, or a list of mappings,
    is one row per entry with a column per inner key.

    Example:
        >>> [t.head for t in nested_tables("attacks", {"loss": {"auc": 0.6}, "lira": {"auc": 0.7}})]
        [['attacks', 'auc']]
    """
    if isinstance(value, Mapping) and value and all(_is_scalar(v) for v in value.values()):
        rows = [[Cell(str(k)), Cell(fmt(v))] for k, v in list(value.items())[:MAX_ROWS]]
        return [Table([key, "value"], rows, caption=key)]
    entries: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(value, Mapping) and value and all(isinstance(v, Mapping) for v in value.values()):
        entries = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        entries = [(str(i + 1), v) for i, v in enumerate(value)]
    if entries:
        cols: list[str] = []
        for _, inner in entries:
            cols += [k for k in inner if k not in cols and k not in HIDDEN_KEYS]
        rows = [[Cell(name)] + [Cell(fmt(inner.get(c))) for c in cols] for name, inner in entries[:MAX_ROWS]]
        return [Table([key, *cols], rows, caption=key)]
    if isinstance(value, list) and any(isinstance(v, (Mapping, list)) for v in value):
        return [Table([key], [[Cell(fmt(v))] for v in value[:MAX_ROWS]], caption=key)]
    return []


def section_view(section: Section, owner: str) -> SectionView:
    """The view of one section; ``owner`` (the model's name) starts its title."""
    title = f"{owner}: {section.title}"
    view = SectionView(title=title, anchor=_slug(title), sentences=section.explain())
    scalars: list[list[Cell]] = []
    skip: set[str] = set()
    shown: Mapping[str, Any] = section
    if isinstance(section, RobustnessSection):
        view.tables.append(robustness_table(section))
        skip = {"epsilons", "attacks", "worst_case"}
    if isinstance(section, MembershipSection):
        shown = _resolvable_only(section)
    for key, value in shown.items():
        if key in HIDDEN_KEYS or key in skip:
            continue
        tables = [] if _is_scalar(value) else nested_tables(key, value)
        if tables:
            view.tables += tables
        else:
            scalars.append([Cell(key), Cell(fmt(value))])
    view.tables.insert(0, Table(["key", "value"], scalars))
    view.warnings = [str(w) for w in section.get("warnings") or []]
    view.flags = [str(f) for f in section.get("flags") or []]
    if isinstance(section, PrivacySection) and not section.valid:
        view.alert = f"The privacy guarantee of {owner} is NOT valid: see the warnings below."
    return view


def _resolvable_only(section: MembershipSection) -> dict[str, Any]:
    """The section's figures without TPRs at false-positive rates below 1/non-members (not measurable)."""
    floor = section.resolvable_fpr()

    def keep(rates: Any) -> Any:
        if floor is None or not isinstance(rates, Mapping):
            return rates
        return {k: v for k, v in rates.items() if (_as_float(k) or 0.0) >= floor * (1 - 1e-9)}

    out = dict(section)
    out["tpr_at_fpr"] = keep(section.tpr_at_fpr)
    attacks = out.get("attacks")
    if isinstance(attacks, Mapping):
        out["attacks"] = {
            name: ({**a, "tpr_at_fpr": keep(a["tpr_at_fpr"])} if isinstance(a, Mapping) and "tpr_at_fpr" in a else a)
            for name, a in attacks.items()
        }
    return out


def _as_float(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def robustness_table(section: RobustnessSection) -> Table:
    """Robust accuracy: one row per attack and the worst case, one column per epsilon."""
    head = ["attack"] + [f"{section.norm} {fmt(e)}" for e in section.epsilons]
    rows = [[Cell(name)] + [Cell(fmt(a)) for a in accs] for name, accs in section.attacks.items()]
    rows.append([Cell("worst case", "ok")] + [Cell(fmt(a), "ok") for a in section.worst_case])
    return Table(head, rows, caption="robust accuracy per attack and epsilon")


# ---------------------------------------------------------------------- headline figures


def privacy_badge(privacy: Mapping[str, Any] | None) -> Cell:
    """Epsilon with a valid / NOT VALID badge (``-`` for a model trained without privacy)."""
    if not privacy:
        return Cell("- (not private)", "muted")
    eps = privacy.get("epsilon")
    text = f"{fmt(eps)} at delta {fmt(privacy.get('delta'))}"
    if privacy.get("valid"):
        return Cell(f"{text} (valid)", "ok")
    return Cell(f"{text} (NOT VALID)", "bad")


def summary_rows(d: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The headline figures of one model's report dict, as ``(label, text)`` rows."""
    rows = [
        ("data", str((d.get("data") or {}).get("name", "?"))),
        ("model", str((d.get("model") or {}).get("name", "?"))),
        ("accuracy", fmt(d.get("accuracy"))),
    ]
    before = (d.get("model") or {}).get("pretraining")
    if before:
        rows.append(("before training", str(before)))
    privacy = d.get("privacy")
    badge = f"epsilon {privacy_badge(privacy).text}" if privacy else "none (not trained with differential privacy)"
    rows.append(("privacy", badge))
    rob = d.get("robustness")
    if rob:
        pairs = ", ".join(f"{fmt(e)}: {fmt(a)}" for e, a in zip(rob["epsilons"], rob["worst_case"]))
        rows.append(("worst-case robust accuracy", f"{rob['norm']} epsilon -> accuracy: {pairs}"))
    mem = d.get("membership")
    if mem:
        rows.append(
            (
                "membership inference",
                f"AUC {fmt(mem['auc'])}, empirical epsilon >= {fmt(mem['epsilon_lower_bound'])}",
            )
        )
    enc = d.get("encrypted")
    if enc:
        rows.append(
            (
                "encrypted inference",
                f"{enc['scheme']} {enc['mode']}: agreement {fmt(enc['agreement'])}, {fmt(enc['per_sample_s'])} s/sample",
            )
        )
    return rows


def comparison_rows(models: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per model: accuracy, epsilon and validity, robust accuracy per epsilon, leakage, encryption.

    Values are numbers (or ``None``), for report.json; :func:`build_page` formats them.

    Example:
        >>> comparison_rows([{"name": "plain", "accuracy": 0.98}])[0]["model"]
        'plain'
    """
    epsilons: list[float] = []
    for m in models:
        for e in (m.get("robustness") or {}).get("epsilons") or []:
            if e not in epsilons:
                epsilons.append(e)
    rows = []
    for m in models:
        privacy = m.get("privacy") or None
        row: dict[str, Any] = {
            "model": m.get("name"),
            "accuracy": m.get("accuracy"),
            "epsilon": privacy.get("epsilon") if privacy else None,
            "delta": privacy.get("delta") if privacy else None,
            "dp_valid": privacy.get("valid") if privacy else None,
        }
        rob = as_section("robustness", m.get("robustness"))
        for e in epsilons:
            row[f"robust@{e:g}"] = rob.at(e) if isinstance(rob, RobustnessSection) else None
        mem = as_section("membership", m.get("membership"))
        low = mem.lowest_resolvable_tpr() if isinstance(mem, MembershipSection) else None
        row["mia_auc"] = mem.auc if isinstance(mem, MembershipSection) else None
        row["tpr"] = low[1] if low else None
        row["at_fpr"] = float(low[0]) if low else None
        row["empirical_epsilon_lower_bound"] = mem.epsilon_lower_bound if isinstance(mem, MembershipSection) else None
        enc = m.get("encrypted")
        row["encrypted_agreement"] = enc.get("agreement") if enc else None
        rows.append(row)
    return rows


def comparison_table(models: Sequence[Mapping[str, Any]]) -> Table:
    """The comparison as a display table (badges on epsilon)."""
    rows = comparison_rows(models)
    robust = [k for k in rows[0] if k.startswith("robust@")] if rows else []
    head = ["model", "accuracy", "epsilon (delta)"] + [f"robust acc. at {k[7:]}" for k in robust]
    head += ["MIA AUC", "TPR at lowest resolvable FPR", "empirical epsilon >=", "encrypted agreement"]
    out = []
    for m, row in zip(models, rows):
        cells = [Cell(str(row["model"])), Cell(fmt(row["accuracy"])), privacy_badge(m.get("privacy"))]
        cells += [Cell(fmt(row[k])) for k in robust]
        tpr = f"{fmt(row['tpr'])} at FPR {fmt(row['at_fpr'])}" if row["tpr"] is not None else "-"
        cells += [Cell(fmt(row["mia_auc"])), Cell(tpr), Cell(fmt(row["empirical_epsilon_lower_bound"]))]
        cells.append(Cell(fmt(row["encrypted_agreement"])))
        out.append(cells)
    return Table(head, out)


# ---------------------------------------------------------------------- the page


def _group(entry: Mapping[str, Any], name: str, plots: list[PlotRef]) -> Group:
    data = (entry.get("data") or {}).get("name")
    title = f"{name} on {data}" if data else name
    group = Group(
        title=title,
        anchor=_slug(title),
        summary=Table(["figure", "value"], [[Cell(k), Cell(v)] for k, v in summary_rows(entry)]),
        plots=plots,
        notes=[str(n) for n in entry.get("notes") or []],
        location=str(entry.get("run_dir") or ""),
    )
    for key in SECTION_KEYS:
        section = as_section(key, entry.get(key))
        if section is not None:
            group.sections.append(section_view(section, name))
    timing = entry.get("timing")
    if isinstance(timing, Mapping) and timing:
        rows = [[Cell(str(k)), Cell(fmt(v))] for k, v in timing.items()]
        group.sections.append(
            SectionView(title=f"{name}: Timing", anchor=_slug(f"{name} timing"), tables=[Table(["key", "value"], rows)])
        )
    return group


def _timing_table(timing: Any) -> Table | None:
    if not isinstance(timing, Mapping) or not timing:
        return None
    return Table(["step", "value"], [[Cell(str(k)), Cell(fmt(v))] for k, v in timing.items()], caption="Timing")


def build_page(
    d: Mapping[str, Any],
    plots: Mapping[str, list[PlotRef]] | None = None,
    *,
    json_text: str = "",
) -> Page:
    """The page of report dict ``d``; ``plots`` maps ``""`` (comparison) or a model's name to its plots."""
    plots = plots or {}
    models = [m for m in d.get("models") or [] if isinstance(m, Mapping)]
    data = (d.get("data") or {}).get("name", "?")
    notes = [str(n) for n in d.get("notes") or []]
    if models:
        names = [str(m.get("name", "?")) for m in models]
        lead = [
            f"Each row below is one model trained on {data} ({', '.join(names)}); each has its own section "
            "further down, and its own run directory. No figure mixes models."
        ]
        lead += [
            f"{m.get('name', '?')}: {(m.get('model') or {})['pretraining']} (before and during its training on {data})."
            for m in models
            if (m.get("model") or {}).get("pretraining")
        ]
        return Page(
            title=f"securetrain report: {len(models)} models on {data}",
            lead=lead,
            comparison=comparison_table(models),
            plots=plots.get("", []),
            groups=[_group(m, str(m.get("name", "?")), plots.get(str(m.get("name")), [])) for m in models],
            notes=notes,
            json_text=json_text,
            timing=_timing_table(d.get("timing")),
        )
    name = str((d.get("model") or {}).get("name", "?"))
    group = _group(d, name, plots.get(name, []))
    group.notes = []  # the page's notes are the run's
    return Page(
        title=f"securetrain report: {name} on {data}",
        lead=[],
        comparison=None,
        plots=[],
        groups=[group],
        notes=notes,
        json_text=json_text,
    )


__all__ = [
    "Cell",
    "Group",
    "Page",
    "PlotRef",
    "SectionView",
    "Table",
    "build_page",
    "comparison_rows",
    "comparison_table",
    "fmt",
    "nested_tables",
    "privacy_badge",
    "section_view",
    "summary_rows",
]
