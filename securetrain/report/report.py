"""The :class:`Report` dataclass and its JSON round trip."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from securetrain.errors import ReportError
from securetrain.io import atomic_write_json, atomic_write_text
from securetrain.report.render import render_html, render_markdown
from securetrain.report.schema import SCHEMA, SECTION_KEYS, check_section

MAX_REPORT_BYTES = 256 * 2**20
"""A ``report.json`` larger than this is refused."""
_CORE = ("schema", "data", "model", "accuracy", "privacy", "robustness", "membership", "encrypted", "timing")


@dataclass
class Report:
    """Accuracy, privacy, robustness, measured leakage and encrypted-inference fidelity of one run.

    Sections are plain dicts whose required keys are fixed by the schema
    (:data:`securetrain.report.schema.SECTION_KEYS`); any other top-level key lives in ``extra``.

    Example:
        >>> r = Report(data={"name": "digits"}, model={"name": "cnn"}, accuracy=0.97)
        >>> Report.from_dict(r.to_dict()).accuracy
        0.97
    """

    data: dict[str, Any]
    model: dict[str, Any]
    accuracy: float
    privacy: dict[str, Any] | None = None
    robustness: dict[str, Any] | None = None
    membership: dict[str, Any] | None = None
    encrypted: dict[str, Any] | None = None
    timing: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema: str = SCHEMA

    def validate(self) -> None:
        """Raise :class:`ReportError` if a section misses required keys."""
        if self.schema != SCHEMA:
            raise ReportError(f"unknown report schema {self.schema!r}; this version reads {SCHEMA!r}")
        for name in ("data", "model", "timing"):
            value = getattr(self, name)
            if not isinstance(value, dict):
                raise ReportError(f"report {name!r} must be an object, got {type(value).__name__}")
        for name in SECTION_KEYS:
            check_section(name, getattr(self, name))
        if not isinstance(self.accuracy, (int, float)) or not math.isfinite(float(self.accuracy)):
            raise ReportError(f"report accuracy must be a finite number, got {self.accuracy!r}")

    def set_membership(self, section: dict[str, Any]) -> None:
        """Store a membership-audit section; if it found the privacy claim violated, say so in ``privacy``.

        A measured lower bound above the reported epsilon (with confidence) means the
        accounting is wrong: the privacy section is then marked not valid, with the
        audit's explanation among its warnings.

        Example:
            >>> r = Report(data={}, model={}, accuracy=1.0, privacy={"valid": True, "warnings": []})
            >>> r.set_membership({"privacy_violated": True, "consistency": "bound 2.1 > claimed 0.1"})
            >>> r.privacy["valid"], r.privacy["warnings"][-1]
            (False, 'membership audit: privacy claim violated: bound 2.1 > claimed 0.1')
        """
        self.membership = section
        if self.privacy is not None and section.get("privacy_violated"):
            self.privacy["valid"] = False
            self.privacy["violated_by_audit"] = True
            reason = section.get("consistency") or "the empirical lower bound exceeds the reported epsilon"
            warning = f"membership audit: privacy claim violated: {reason}"
            if warning not in self.privacy.setdefault("warnings", []):
                self.privacy["warnings"].append(warning)

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (schema keys first)."""
        self.validate()
        out: dict[str, Any] = {
            "schema": self.schema,
            "data": self.data,
            "model": self.model,
            "accuracy": float(self.accuracy),
            "privacy": self.privacy,
            "robustness": self.robustness,
            "membership": self.membership,
            "encrypted": self.encrypted,
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
            privacy=obj.get("privacy"),
            robustness=obj.get("robustness"),
            membership=obj.get("membership"),
            encrypted=obj.get("encrypted"),
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
        """Write ``report.json``, ``report.md`` and (by default) ``report.html`` into ``run_dir``."""
        d = Path(run_dir)
        if d.exists() and not d.is_dir():
            raise ReportError(f"{d} is not a directory; give the run directory that holds report.json")
        # Render everything first: a report that cannot be rendered leaves the files on disk as they were.
        try:
            content: dict[str, str | None] = {"json": None, "md": render_markdown(self)}
            if html:
                content["html"] = render_html(self)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            raise ReportError(
                f"the report cannot be rendered: a value has the wrong type or shape ({type(exc).__name__}: {exc}); "
                "fix or regenerate report.json"
            ) from None
        d.mkdir(parents=True, exist_ok=True)
        paths = {name: d / f"report.{name}" for name in content}
        self.write_json(paths["json"])
        for name, text in content.items():
            if text is not None:
                atomic_write_text(paths[name], text)
        return paths
