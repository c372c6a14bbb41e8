"""Plots drawn from a report's data; a registry so new sections bring their own.

Each plotter takes the report as a dict and returns a matplotlib ``Figure`` or ``None``
when the data it needs is absent. Figures are drawn with the Agg backend (no display).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

from securetrain.registry import Registry

Plotter = Callable[[dict[str, Any]], Any]
PLOTS: Registry[tuple[str, Plotter]] = Registry("plot")


def register_plot(name: str, title: str) -> Callable[[Plotter], Plotter]:
    """Register a plotter shown under ``title`` in HTML reports."""

    def deco(fn: Plotter) -> Plotter:
        PLOTS.add(name, (title, fn))
        return fn

    return deco


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
    ax.plot(epochs, [h.get("train_loss", float("nan")) for h in history], "o-", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    if any("test_accuracy" in h for h in history):
        ax2 = ax.twinx()
        ax2.plot(
            epochs,
            [h.get("test_accuracy", float("nan")) for h in history],
            "s-",
            color="tab:green",
            label="test accuracy",
        )
        ax2.set_ylabel("test accuracy")
        ax2.set_ylim(0, 1)
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
    for name, accs in (rob.get("attacks") or {}).items():
        ax.plot(eps, accs, "o-", label=name, alpha=0.8)
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
    fig = _figure(5.0, 4.2)
    ax = fig.add_subplot()
    for name, roc in curves.items():
        fpr = [max(f, 1e-5) for f in roc["fpr"]]
        tpr = [max(t, 1e-5) for t in roc["tpr"]]
        ax.plot(fpr, tpr, label=name)
    ax.plot([1e-5, 1], [1e-5, 1], "k:", label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false positive rate")
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
    ax.set_xlabel("canary statistic (sum over steps of the update along the canary)")
    ax.set_ylabel("canaries")
    ax.legend(fontsize=8)
    bound, claim = audit.get("epsilon_lower_bound"), audit.get("claimed_epsilon")
    ax.set_title(f"epsilon >= {bound} ({audit.get('method')}) vs claimed {claim}")
    return fig


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


def render_plots(report: dict[str, Any]) -> list[tuple[str, str]]:
    """``(title, base64 PNG)`` for every registered plot whose data is in ``report``."""
    out = []
    for name in PLOTS.names():
        title, fn = PLOTS.get(name)
        fig = fn(report)
        if fig is not None:
            out.append((title, figure_to_base64_png(fig)))
    return out
