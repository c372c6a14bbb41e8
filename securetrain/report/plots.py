"""Plots drawn from a report's data; registries so new sections bring their own.

Each plotter takes a dict and returns a matplotlib ``Figure`` or ``None`` when the data it
needs is absent. :data:`PLOTS` holds the plots of one run (they read one report's dict, or
one model's entry of a comparison); :data:`COMPARISON_PLOTS` those that compare models (they
read the report's ``models`` list). Figures are drawn with the Agg backend (no display), and
every figure has a legend.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from securetrain.registry import Registry

Plotter = Callable[[dict[str, Any]], Any]
PLOTS: Registry[tuple[str, Plotter]] = Registry("plot")
"""``(title, plotter)`` of the plots of one run, by name."""
COMPARISON_PLOTS: Registry[tuple[str, Plotter]] = Registry("comparison plot")
"""``(title, plotter)`` of the plots that compare the models of a report's ``models`` list, by name."""


def register_plot(name: str, title: str, *, comparison: bool = False) -> Callable[[Plotter], Plotter]:
    """Register a plotter shown under ``title`` (in :data:`COMPARISON_PLOTS` if ``comparison``)."""

    def deco(fn: Plotter) -> Plotter:
        (COMPARISON_PLOTS if comparison else PLOTS).add(name, (title, fn))
        return fn

    return deco


_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">")
_LINESTYLES = ("-", "--", "-.", ":", "o-", "s--", "^-.", "v:")


def _figure(width: float = 6.0, height: float = 3.6) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def figure_to_base64_png(fig: Any) -> str:
    """Encode a matplotlib figure as a base64 PNG string."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


@register_plot("training", "Training curve")
def plot_training(report: dict[str, Any]) -> Any:
    history = (report.get("training") or {}).get("history") or []
    if not history:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    epochs = [h["epoch"] for h in history]
    (loss_line,) = ax.plot(epochs, [h.get("train_loss", float("nan")) for h in history], "o-", label="train loss")
    lines = [loss_line]
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    if any("test_accuracy" in h for h in history):
        ax2 = ax.twinx()
        (acc_line,) = ax2.plot(
            epochs,
            [h.get("test_accuracy", float("nan")) for h in history],
            "s-",
            color="tab:green",
            label="test accuracy",
        )
        lines.append(acc_line)
        ax2.set_ylabel("test accuracy")
        ax2.set_ylim(0, 1)
    ax.legend(lines, [str(line.get_label()) for line in lines], fontsize=8, loc="center right")
    ax.set_title("Training")
    return fig


@register_plot("privacy", "Privacy budget spent")
def plot_epsilon(report: dict[str, Any]) -> Any:
    privacy = report.get("privacy") or {}
    hist = privacy.get("epsilon_history") or []
    if not hist:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([h[0] for h in hist], [h[1] for h in hist], "-", label="epsilon spent")
    target = privacy.get("target_epsilon")
    if target:
        ax.axhline(float(target), color="tab:red", ls="--", label=f"target {target}")
    ax.set_xlabel("step")
    ax.set_ylabel(f"epsilon (delta={privacy.get('delta')})")
    ax.legend()
    ax.set_title("Epsilon over training")
    return fig


@register_plot("robustness", "Robustness curve")
def plot_robustness(report: dict[str, Any]) -> Any:
    rob = report.get("robustness") or {}
    eps = rob.get("epsilons") or []
    if not eps:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for i, (name, accs) in enumerate((rob.get("attacks") or {}).items()):
        ax.plot(eps, accs, _MARKERS[i % len(_MARKERS)] + "-", label=name, alpha=0.8)
    if rob.get("worst_case"):
        ax.plot(eps, rob["worst_case"], "k-", lw=2.5, label="worst case")
    ax.set_xlabel(f"epsilon ({rob.get('norm', '')})")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("Robust accuracy against perturbation size")
    return fig


@register_plot("membership", "Membership-inference ROC")
def plot_roc(report: dict[str, Any]) -> Any:
    mem = report.get("membership") or {}
    curves = mem.get("roc_curves") or ({mem.get("attack", "attack"): mem["roc"]} if mem.get("roc") else {})
    if not curves:
        return None
    floor = resolvable_fpr(mem)
    fig = _figure(5.0, 4.2)
    ax = fig.add_subplot()
    for i, (name, roc) in enumerate(curves.items()):
        # below 1/n non-members the test set cannot resolve a rate: the curve starts there
        fpr = [max(float(f), floor) for f in roc["fpr"]]
        tpr = [max(float(t), floor) for t in roc["tpr"]]
        style = _LINESTYLES[i % len(_LINESTYLES)]
        auc = ((mem.get("attacks") or {}).get(name) or {}).get("auc")
        label = f"{name} (AUC {auc:.3f})" if isinstance(auc, (int, float)) else name
        ax.plot(fpr, tpr, style, lw=1.8, alpha=0.85, label=label)
    ax.plot([floor, 1], [floor, 1], "k:", label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(floor, 1.05)
    ax.set_xlabel(f"false positive rate (from 1/{round(1 / floor)}, the smallest measurable)")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8)
    ax.set_title("Membership inference (log scale)")
    return fig


@register_plot("dp_audit", "White-box DP-SGD audit: canary statistic")
def plot_dp_audit(report: dict[str, Any]) -> Any:
    audit = (report.get("membership") or {}).get("dp_audit") or {}
    hist = audit.get("histogram") or {}
    edges = hist.get("edges") or []
    if len(edges) < 2:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    ax.bar(edges[:-1], hist.get("excluded") or [], width=widths, align="edge", alpha=0.55, label="excluded canaries")
    ax.bar(edges[:-1], hist.get("included") or [], width=widths, align="edge", alpha=0.55, label="included canaries")
    ax.set_xlabel(str(audit.get("statistic") or "canary statistic"), fontsize=8)
    ax.set_ylabel("canaries")
    ax.legend(fontsize=8)
    bound, claim = audit.get("epsilon_lower_bound"), audit.get("claimed_epsilon")
    ax.set_title(f"epsilon >= {bound} ({audit.get('method')}) vs claimed {claim}")
    return fig


def resolvable_fpr(membership: dict[str, Any]) -> float:
    """The smallest false-positive rate a membership audit can resolve (1/non-members; 1e-3 if unknown).

    Example:
        >>> resolvable_fpr({"nonmembers": 397})
        0.0025188916876574307
    """
    if membership.get("min_resolvable_fpr"):
        return float(membership["min_resolvable_fpr"])
    if membership.get("nonmembers"):
        return 1.0 / float(membership["nonmembers"])
    return 1e-3


@register_plot("sweep", "Privacy-utility curve")
def plot_sweep(report: dict[str, Any]) -> Any:
    sweep = report.get("sweep") or {}
    points = sweep.get("points") or []
    if not points:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([p["epsilon"] for p in points], [p["accuracy"] for p in points], "o-", label="private")
    if sweep.get("non_private_accuracy") is not None:
        ax.axhline(sweep["non_private_accuracy"], color="tab:gray", ls="--", label="non-private")
    ax.set_xscale("log")
    ax.set_xlabel("epsilon")
    ax.set_ylabel("test accuracy")
    ax.legend()
    ax.set_title("Privacy-utility trade-off")
    return fig


def _entries(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in report.get("models") or [] if isinstance(m, dict)]


def _label(entry: dict[str, Any]) -> str:
    return str(entry.get("name", "?"))


def _epsilon(entry: dict[str, Any]) -> float | None:
    eps = (entry.get("privacy") or {}).get("epsilon")
    return float(eps) if isinstance(eps, (int, float)) else None


@register_plot("robustness_comparison", "Robustness of every model", comparison=True)
def plot_robustness_comparison(report: dict[str, Any]) -> Any:
    entries = [m for m in _entries(report) if (m.get("robustness") or {}).get("epsilons")]
    if not entries:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    norm = ""
    for i, m in enumerate(entries):
        rob = m["robustness"]
        norm = rob.get("norm", norm)
        eps, accs = list(rob["epsilons"]), list(rob["worst_case"])
        if rob.get("clean_accuracy") is not None and 0 not in eps:
            eps, accs = [0.0, *eps], [rob["clean_accuracy"], *accs]
        ax.plot(eps, accs, _MARKERS[i % len(_MARKERS)] + "-", label=_label(m))
    ax.set_xlabel(f"epsilon ({norm}); 0 = clean accuracy")
    ax.set_ylabel("worst-case robust accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("Robust accuracy of every model against perturbation size")
    return fig


@register_plot("privacy_utility", "Privacy-utility", comparison=True)
def plot_privacy_utility(report: dict[str, Any]) -> Any:
    entries = _entries(report)
    private = [m for m in entries if _epsilon(m) is not None]
    if not private:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for i, m in enumerate(private):
        ax.plot(
            [_epsilon(m)],
            [m["accuracy"]],
            _MARKERS[i % len(_MARKERS)],
            ms=9,
            label=f"{_label(m)} (epsilon {_epsilon(m):.3g})",
        )
    for i, m in enumerate(m for m in entries if _epsilon(m) is None):
        ax.axhline(float(m["accuracy"]), color=f"C{i + len(private)}", ls="--", label=f"{_label(m)} (no privacy)")
    ax.set_xscale("log")
    ax.set_xlabel("epsilon (the privacy budget spent; smaller is more private)")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    ax.set_title("Accuracy against epsilon, with the non-private models")
    return fig


@register_plot("tradeoff", "Accuracy, robustness and privacy", comparison=True)
def plot_tradeoff(report: dict[str, Any]) -> Any:
    entries = [m for m in _entries(report) if (m.get("robustness") or {}).get("worst_case")]
    if not entries:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for i, m in enumerate(entries):
        rob = m["robustness"]
        eps = _epsilon(m)
        k = len(rob["worst_case"]) // 2  # the middle perturbation size
        privacy = f"epsilon {eps:.3g}" if eps is not None else "no privacy"
        ax.plot(
            [m["accuracy"]],
            [rob["worst_case"][k]],
            _MARKERS[i % len(_MARKERS)],
            ms=9,
            label=f"{_label(m)} ({privacy})",
        )
        at = rob["epsilons"][k]
    ax.set_xlabel("clean test accuracy")
    ax.set_ylabel(f"worst-case robust accuracy at {at:g}")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("Accuracy vs robust accuracy (epsilon in the legend)")
    return fig


@dataclass(frozen=True)
class PlotImage:
    """One drawn plot: ``name`` (file stem), ``title`` and the PNG bytes."""

    name: str
    title: str
    png: bytes

    @property
    def base64(self) -> str:
        """The PNG as base64 text (for a ``data:`` URI)."""
        return base64.b64encode(self.png).decode("ascii")


def draw_plots(report: dict[str, Any], *, comparison: bool = False, prefix: str = "") -> list[PlotImage]:
    """Every registered plot (of one run, or the comparison plots) whose data is in ``report``."""
    registry = COMPARISON_PLOTS if comparison else PLOTS
    out = []
    for name in registry.names():
        title, fn = registry.get(name)
        fig = fn(report)
        if fig is not None:
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            out.append(PlotImage(f"{prefix}{name}", title, buf.getvalue()))
    return out


def render_plots(report: dict[str, Any]) -> list[tuple[str, str]]:
    """``(title, base64 PNG)`` for every registered plot of one run whose data is in ``report``."""
    return [(p.title, p.base64) for p in draw_plots(report)]
