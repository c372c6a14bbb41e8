"""The :class:`Report` dataclass and its JSON round trip."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from securetrain.errors import ReportError
from securetrain.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from securetrain.report.plots import PlotImage
from securetrain.report.render import draw_report_plots, render_html, render_markdown
from securetrain.report.schema import SCHEMA, SECTION_KEYS
from securetrain.report.sections import (
    SECTIONS,
    EncryptedSection,
    MembershipSection,
    PrivacySection,
    RobustnessSection,
    Section,
    as_section,
)

MAX_REPORT_BYTES = 256 * 2**20
"""A ``report.json`` larger than this is refused."""
_CORE = ("schema", "data", "model", "accuracy", "privacy", "robustness", "membership", "encrypted", "timing")


S = TypeVar("S", bound=Section)


def _section_dict(section: Section | None) -> dict[str, Any] | None:
    return None if section is None else section.to_dict()


def _read(obj: dict[str, Any], key: str, cls: type[S]) -> S | None:
    value = obj.get(key)
    return None if value is None else cls.from_dict(value)


@dataclass
class Report:
    """Accuracy, privacy, robustness, measured leakage and encrypted-inference fidelity of one run.

    Sections are typed objects (:mod:`securetrain.report.sections`, registered in ``SECTIONS``);
    :meth:`add` puts one in its place. A plain dict given or assigned to a section attribute is
    converted to its section class (and checked against the schema). Any other top-level key
    lives in ``extra``.

    Example:
        >>> from securetrain.report.sections import RobustnessSection
        >>> r = Report(data={"name": "digits"}, model={"name": "cnn"}, accuracy=0.97)
        >>> r.add(RobustnessSection(norm="linf", epsilons=[0.1], attacks={"pgd": [0.8]}, worst_case=[0.8]))
        >>> again = Report.from_dict(r.to_dict())
        >>> again.accuracy, type(again.robustness).__name__, again.robustness.worst_case
        (0.97, 'RobustnessSection', [0.8])
    """

    data: dict[str, Any]
    model: dict[str, Any]
    accuracy: float
    privacy: PrivacySection | None = None
    robustness: RobustnessSection | None = None
    membership: MembershipSection | None = None
    encrypted: EncryptedSection | None = None
    timing: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA

    def __setattr__(self, name: str, value: Any) -> None:
        if name in SECTION_KEYS and value is not None and not isinstance(value, Section):
            value = as_section(name, value)  # a dict (the JSON form): checked and converted
        super().__setattr__(name, value)

    def sections(self) -> dict[str, Section | None]:
        """The typed sections by report key (``None`` where a section is absent)."""
        return {name: getattr(self, name) for name in SECTION_KEYS}

    def add(self, section: Section) -> None:
        """Put ``section`` in its place (``section.key``) and let it update the others.

        A membership audit that found the privacy claim violated marks the privacy section not
        valid, with the audit's explanation among its warnings.

        Example:
            >>> from securetrain.report.sections import MembershipSection
            >>> r = Report(data={}, model={}, accuracy=1.0, privacy={
            ...     "epsilon": 0.1, "delta": 1e-5, "accountant": "prv", "noise_multiplier": 5.0,
            ...     "max_grad_norm": 1.0, "sample_rate": 0.01, "steps": 10, "poisson_sampling": True,
            ...     "valid": True, "warnings": []})
            >>> r.add(MembershipSection(attack="loss", auc=0.9, tpr_at_fpr={}, advantage=0.6,
            ...       epsilon_lower_bound=2.1, privacy_violated=True, consistency="bound 2.1 > claimed 0.1"))
            >>> r.privacy.valid, r.privacy.warnings[-1]
            (False, 'membership audit: privacy claim violated: bound 2.1 > claimed 0.1')
        """
        if not isinstance(section, Section):
            raise ReportError(
                f"Report.add takes a report section object (one of {', '.join(SECTIONS.names())}), "
                f"got {type(section).__name__}; convert a dict with SECTIONS.get(key).from_dict(d)"
            )
        if SECTIONS.get(section.key) is not type(section) and not isinstance(section, SECTIONS.get(section.key)):
            raise ReportError(f"{type(section).__name__} is not the registered section class of {section.key!r}")
        setattr(self, section.key, section)
        section.merge_into(self.sections())

    def validate(self) -> None:
        """Raise :class:`ReportError` if a section misses required keys."""
        if self.schema != SCHEMA:
            raise ReportError(f"unknown report schema {self.schema!r}; this version reads {SCHEMA!r}")
        for name in ("data", "model", "timing"):
            value = getattr(self, name)
            if not isinstance(value, dict):
                raise ReportError(f"report {name!r} must be an object, got {type(value).__name__}")
        for name in SECTION_KEYS:
            section = getattr(self, name)
            if section is not None:
                as_section(name, section.to_dict())  # required keys and their types
        if not isinstance(self.accuracy, (int, float)) or not math.isfinite(float(self.accuracy)):
            raise ReportError(f"report accuracy must be a finite number, got {self.accuracy!r}")

    def set_membership(self, section: MembershipSection | dict[str, Any]) -> None:
        """Store a membership-audit section (a dict is converted); same as :meth:`add`.

        A measured lower bound above the reported epsilon (with confidence) means the
        accounting is wrong: the privacy section is then marked not valid, with the
        audit's explanation among its warnings.
        """
        self.add(section if isinstance(section, MembershipSection) else MembershipSection.from_dict(section))

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (schema keys first)."""
        self.validate()
        out: dict[str, Any] = {
            "schema": self.schema,
            "data": self.data,
            "model": self.model,
            "accuracy": float(self.accuracy),
            "privacy": _section_dict(self.privacy),
            "robustness": _section_dict(self.robustness),
            "membership": _section_dict(self.membership),
            "encrypted": _section_dict(self.encrypted),
            "timing": self.timing,
        }
        for k, v in self.extra.items():
            if k in out:
                raise ReportError(f"extra report key {k!r} clashes with a schema key")
            out[k] = v
        return out

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Report:
        """Build a report from a parsed ``report.json``."""
        if not isinstance(obj, dict):
            raise ReportError("a report must be a JSON object")
        missing = [k for k in ("schema", "data", "model", "accuracy") if k not in obj]
        if missing:
            raise ReportError(f"report is missing keys: {', '.join(missing)}")
        report = cls(
            data=obj["data"],
            model=obj["model"],
            accuracy=obj["accuracy"],
            privacy=_read(obj, "privacy", PrivacySection),
            robustness=_read(obj, "robustness", RobustnessSection),
            membership=_read(obj, "membership", MembershipSection),
            encrypted=_read(obj, "encrypted", EncryptedSection),
            timing=obj.get("timing") or {},
            extra={k: v for k, v in obj.items() if k not in _CORE},
            schema=obj["schema"],
        )
        report.validate()
        return report

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Report:
        """Read ``report.json`` (or a run directory containing one)."""
        p = Path(path)
        if p.is_dir():
            p = p / "report.json"
        if not p.is_file():
            raise ReportError(f"no report at {p}; run `securetrain train` or `securetrain demo` first")
        if p.stat().st_size > MAX_REPORT_BYTES:
            raise ReportError(f"{p} is too large for a report ({p.stat().st_size} bytes)")
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ReportError(f"{p} is not valid JSON ({type(exc).__name__}: {exc})") from None
        try:
            return cls.from_dict(obj)
        except ReportError as exc:
            raise ReportError(f"{p}: {exc}") from None

    def write_json(self, path: str | os.PathLike[str]) -> None:
        """Atomically write the report as JSON."""
        atomic_write_json(path, self.to_dict())

    def save(self, run_dir: str | os.PathLike[str], *, html: bool = True) -> dict[str, Path]:
        """Write ``report.json``, ``report.md`` and (by default) ``report.html`` into ``run_dir``.

        With ``html``, the plots are also saved as ``report_*.png`` files beside ``report.md``,
        which links them (the HTML embeds the same images).
        """
        d = Path(run_dir)
        if d.exists() and not d.is_dir():
            raise ReportError(f"{d} is not a directory; give the run directory that holds report.json")
        # Render everything first: a report that cannot be rendered leaves the files on disk as they were.
        try:
            plots: dict[str, list[PlotImage]] = draw_report_plots(self.to_dict()) if html else {}
            content: dict[str, str | None] = {"json": None, "md": render_markdown(self, plots)}
            if html:
                content["html"] = render_html(self, plots)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            raise ReportError(
                f"the report cannot be rendered: a value has the wrong type or shape ({type(exc).__name__}: {exc}); "
                "fix or regenerate report.json"
            ) from None
        d.mkdir(parents=True, exist_ok=True)
        paths = {name: d / f"report.{name}" for name in content}
        for image in (p for group in plots.values() for p in group):
            paths[image.name] = d / f"{image.name}.png"
            atomic_write_bytes(paths[image.name], image.png)
        self.write_json(paths["json"])
        for name, text in content.items():
            if text is not None:
                atomic_write_text(paths[name], text)
        return paths
