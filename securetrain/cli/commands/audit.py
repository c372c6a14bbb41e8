"""``securetrain audit``: attack a trained run and put the results into its report.

Runs the robustness audit (``attacks.evasion``) on the run's test split and fills the report's
``robustness`` section (with its gradient-masking flags); with ``--membership`` also runs
membership inference (``attacks.membership.audit_run``) and fills ``membership``. The report
(JSON, Markdown and HTML with the robustness curve) is re-saved in place.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from securetrain.cli.output import HelpFormatter, add_output_arguments, emit, json_result, show_progress
from securetrain.cli.specs import add_device_argument, add_spec_arguments
from securetrain.errors import ConfigurationError
from securetrain.report import MembershipSection

if TYPE_CHECKING:
    from securetrain.report import Report


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "audit",
        help="attack a trained run (evasion, optionally membership inference) and update its report",
        description=(
            "Audit the model in DIR on its data set's test split: robust accuracy per attack and epsilon, "
            "the per-sample worst case and gradient-masking flags go into the report's robustness section."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("dir", help="run directory (from `securetrain train` or `securetrain demo`)")
    p.add_argument(
        "--attacks",
        default=None,
        help="comma-separated attack names, e.g. fgsm,pgd,hsj,random (default: the preset's attacks for --norm)",
    )
    p.add_argument(
        "--eps",
        default=None,
        help="comma-separated perturbation sizes in input units, e.g. 0.05,0.1,0.2 (default: 0,0.05,0.1,0.2,0.3 for linf)",
    )
    p.add_argument(
        "--norm", default="linf", choices=["linf", "l2"], help="perturbation norm, one per audit (default: linf)"
    )
    p.add_argument("--preset", default="default", help="attack strength: default (strong, the default) or quick")
    p.add_argument(
        "--samples", type=int, default=None, help="audit a seeded random subset of N test samples (default: all)"
    )
    p.add_argument("--batch-size", type=int, default=512, help="samples attacked at once (default: 512)")
    p.add_argument(
        "--seed", type=int, default=0, help="random seed for attacks, the sample subset and shadow models (default: 0)"
    )
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks")
    p.add_argument(
        "--membership", action="store_true", help="also run membership inference (fills the membership section)"
    )
    p.add_argument("--shadow-models", type=int, default=4, help="shadow models for membership inference (default: 4)")
    p.add_argument(
        "--dp-audit",
        action="store_true",
        help="also run the white-box DP-SGD audit (one extra private run with Dirac gradient canaries); "
        "fills membership.dp_audit and marks the epsilon not valid if the audit refutes it",
    )
    p.add_argument("--canaries", type=int, default=1000, help="canaries of the white-box DP-SGD audit (default: 1000)")
    p.add_argument("--no-html", action="store_true", help="skip report.html")
    add_spec_arguments(p)
    add_device_argument(p, "attack (and train shadow models)")
    add_output_arguments(p)
    p.set_defaults(func=run)


def parse_names(text: str | None, flag: str = "--attacks") -> list[str] | None:
    """``"fgsm, pgd"`` -> ``["fgsm", "pgd"]``; None stays None."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",")]
    if not names or any(not t for t in names):
        raise ConfigurationError(f"{flag} must be comma-separated names without empty entries, got {text!r}")
    return names


def parse_floats(text: str | None, flag: str = "--eps") -> list[float] | None:
    """``"0.05,0.1"`` -> ``[0.05, 0.1]``; None stays None."""
    if text is None:
        return None
    try:
        return [float(t) for t in text.split(",")]
    except ValueError:
        raise ConfigurationError(f"{flag} must be comma-separated numbers, e.g. 0.05,0.1,0.2, got {text!r}") from None


def membership_section(
    run_dir: Path, shadow_models: int, seed: int, *, progress: bool = False, **run_options: Any
) -> MembershipSection:
    """The membership section from ``attacks.membership.audit_run`` (imported only when asked for)."""
    try:
        from attacks.membership import audit_membership_run as audit_run
    except ModuleNotFoundError as exc:
        if exc.name in ("attacks", "attacks.membership"):
            raise ConfigurationError(
                "--membership needs the attacks.membership package, which is not installed in this "
                "environment; install securetrain with its attacks package or drop --membership"
            ) from exc
        raise
    except ImportError as exc:
        raise ConfigurationError(
            f"attacks.membership does not provide audit_run ({exc}); update the attacks package or drop --membership"
        ) from exc
    if progress:
        run_options = {**run_options, "progress": True}
    section = audit_run(run_dir, shadow_models=shadow_models, seed=seed, **run_options)
    return MembershipSection.from_dict(section)  # a copy; an older audit may give the JSON form


def run(args: argparse.Namespace) -> int:
    from securetrain.report import Report
    from securetrain.runlock import lock_run_for_update

    run_dir = Path(args.dir)
    if args.dp_audit and (args.canaries is None or args.canaries < 4):
        raise ConfigurationError(f"--canaries must be at least 4 for --dp-audit, got {args.canaries}")
    with lock_run_for_update(run_dir, command="audit"):  # refused before attacking if not writable or busy
        report = Report.from_json(run_dir)
        if args.dp_audit and report.privacy is None:
            raise ConfigurationError(
                "--dp-audit needs a run trained with differential privacy (--dp); this run has no privacy section"
            )
        return _audit(args, run_dir, report)


def _audit(args: argparse.Namespace, run_dir: Path, report: Report) -> int:
    from attacks.evasion.run_dir import audit_robustness_run as audit_run
    from securetrain.cli.output import summary

    result = audit_run(
        run_dir,
        attacks=parse_names(args.attacks),
        epsilons=parse_floats(args.eps),
        norm=args.norm,
        preset=args.preset,
        samples=args.samples,
        seed=args.seed,
        batch_size=args.batch_size,
        checks=not args.no_checks,
        progress=show_progress(args),
        model=args.model,
        data=args.data,
        device=args.device,
    )
    report.add(result.to_section())
    report.timing["robustness_audit_s"] = round(result.time_s, 3)
    written = ["robustness"]
    human_dp = ""
    if args.membership:
        options = {"model": args.model, "data": args.data, "device": args.device}
        report.add(membership_section(run_dir, args.shadow_models, args.seed, progress=show_progress(args), **options))
        written += ["membership"] + (["privacy"] if report.privacy is not None else [])
    if args.dp_audit:
        from attacks.audit.dp_audit import audit_dp_sgd, merge_into_membership

        dp = audit_dp_sgd(run_dir, canaries=args.canaries, seed=args.seed)
        report.set_membership(merge_into_membership(report.membership, dp))
        written += [name for name in ("membership", "privacy") if name not in written]
        human_dp = dp.explanation + "\n"
    report.save(run_dir, html=not args.no_html)
    human = f"robust accuracy ({result.norm}, {result.n_samples} test samples)\n{result.table()}\n"
    emit(args, human + human_dp + summary(report, run_dir), json_result("audit", run_dir, report, written))
    return 0
