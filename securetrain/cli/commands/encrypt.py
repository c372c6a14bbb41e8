"""``securetrain encrypt``: run the run directory's model under CKKS and fill the report's
``encrypted`` section."""

from __future__ import annotations

import argparse
import sys

from securetrain.cli.output import (
    HelpFormatter,
    add_output_arguments,
    emit,
    is_quiet,
    json_result,
    show_progress,
    wants_json,
)
from securetrain.cli.specs import add_spec_arguments


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "encrypt",
        help="encrypted inference (TenSEAL CKKS) on the test split; fills the report's encrypted section",
        description=(
            "Compile the run's model for CKKS, plan parameters at 128-bit security, encrypt the test split on a "
            "client, evaluate on a server that holds only the public context, decrypt, and record agreement with "
            "the plaintext model, errors, timings and sizes in DIR/report.json (and report.md/html)."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("dir", help="run directory (from `securetrain train`)")
    p.add_argument(
        "--mode",
        choices=("throughput", "latency"),
        default="throughput",
        help="throughput: the batch across ciphertext slots; latency: one sample per ciphertext",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        help="test samples to encrypt (default: all for throughput, 32 for latency)",
    )
    p.add_argument(
        "--convert",
        choices=("none", "square", "poly"),
        default="none",
        help="convert a model that is not HE-friendly (activation to use), then fine-tune it",
    )
    p.add_argument("--fine-tune-epochs", type=int, default=3, help="fine-tuning epochs after --convert")
    p.add_argument("--min-scale-bits", type=int, default=26, help="smallest CKKS scale (precision) accepted")
    p.add_argument("--max-poly-modulus-degree", type=int, default=32768, help="largest ring the planner may pick")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=600.0,
        help="refuse up front a plan whose estimated encrypted-inference time exceeds this",
    )
    p.add_argument(
        "--variant",
        default=None,
        help="use this packing variant instead of the planner's cheapest (latency: im2col, bsgs, expanded, diagonal)",
    )
    p.add_argument("--no-html", action="store_true", help="skip report.html")
    add_spec_arguments(p)
    add_output_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math

    from securetrain.errors import ConfigurationError
    from securetrain.runlock import lock_run_for_update

    if not (math.isfinite(args.max_seconds) and args.max_seconds > 0):
        raise ConfigurationError(f"--max-seconds must be a positive number of seconds, got {args.max_seconds}")
    if args.variant is not None:
        from securetrain.encrypted.packing import get_packing

        known = get_packing(args.mode).variants
        if args.variant not in known:
            raise ConfigurationError(
                f"--variant {args.variant!r} is not a {args.mode} variant; choose one of {', '.join(known)}"
            )

    with lock_run_for_update(args.dir, command="encrypt"):  # refused before encrypting if not writable or busy
        return _encrypt(args)


def _encrypt(args: argparse.Namespace) -> int:
    from securetrain.encrypted.estimate import estimate_plan
    from securetrain.encrypted.evaluate import evaluate_encrypted
    from securetrain.encrypted.server import EncryptedModel
    from securetrain.encrypted.validator import FineTune, format_issues, make_he_friendly, validate
    from securetrain.errors import EncryptionError
    from securetrain.report import Report
    from securetrain.rundir import RunDir

    run = RunDir.open(args.dir, model=args.model, data=args.data)
    run.check_specs_given()
    report = Report.from_json(args.dir)
    model = run.load_model()
    shape = run.data.input_shape
    x_test, y_test = run.load_data("test")
    x_train, y_train = run.load_data("train")
    converted = None
    issues = validate(model)
    if issues:
        if args.convert == "none":
            raise EncryptionError(
                "the model cannot run under CKKS:\n"
                + format_issues(issues)
                + "\nrerun with --convert square (or poly) to convert and fine-tune it, or train an HE-friendly "
                "model: securetrain train --model he"
            )
        model = make_he_friendly(
            model,
            activation=args.convert,
            input_shape=shape,
            fine_tune=FineTune(x_train, y_train, epochs=args.fine_tune_epochs),
        )
        converted = {
            "activation": args.convert,
            "fine_tune_epochs": args.fine_tune_epochs,
            "fixed": [str(i) for i in issues],
        }
    samples = args.samples
    if samples is None:
        samples = x_test.shape[0] if args.mode == "throughput" else min(32, x_test.shape[0])
    if not 1 <= samples <= x_test.shape[0]:  # before planning: a refused command prints no plan
        raise EncryptionError(f"samples must be between 1 and {x_test.shape[0]}, got {samples}")
    em = EncryptedModel.build(
        model,
        args.mode,
        calibration=x_train[:512],
        input_shape=shape,
        min_scale_bits=args.min_scale_bits,
        max_poly_modulus_degree=args.max_poly_modulus_degree,
        variants=None if args.variant is None else (args.variant,),
    )
    estimate = estimate_plan(em, samples)
    if not is_quiet(args):  # under --json the plan is a log line on stderr: stdout stays one JSON object
        stream = sys.stderr if wants_json(args) else sys.stdout
        stream.write("\n".join(estimate.lines()) + "\n")
        stream.flush()
    if estimate.total_s > args.max_seconds:
        other = "throughput" if args.mode == "latency" else "latency"
        raise EncryptionError(
            f"refused before encrypting: the {args.mode} plan is estimated at {estimate.total_s:.0f} s for {samples} "
            f"samples ({estimate.per_sample_s:.2f} s each), over --max-seconds {args.max_seconds:g}. To go faster: "
            f"fewer --samples, --mode {other}, a smaller model (fewer channels or hidden units, one activation less), "
            "or allow more time with --max-seconds"
        )
    section = evaluate_encrypted(
        model,
        x_test,
        mode=args.mode,
        samples=samples,
        y=y_test,
        input_shape=shape,
        calibration=x_train[:512],
        encrypted_model=em,
        progress=show_progress(args),
    )
    section["estimate"] = {
        "per_sample_s": estimate.per_sample_s,
        "total_s": estimate.total_s,
        "request_bytes": estimate.request_bytes,
        "public_context_bytes": estimate.public_context_bytes,
    }
    if converted is not None:
        section["converted"] = converted
    report.add(section)
    report.save(args.dir, html=not args.no_html)
    s = section
    lines = [
        f"encrypted inference   CKKS {s['mode']} ({s['variant']}), N={s['poly_modulus_degree']}, "
        f"chain {s['coeff_mod_bit_sizes']}, {s['security_bits']}-bit security",
        f"samples               {s['samples']}",
        f"argmax agreement      {s['agreement']:.4f}",
        f"max |logit error|     {s['max_abs_error']:.3g} (tolerance {s['tolerance']:.3g})",
        f"latency per request   {s['latency_s']:.3f} s",
        f"time per sample       {s['per_sample_s'] * 1e3:.2f} ms",
    ]
    if "per_sample_full_slots_s" in s:
        lines.append(
            f"  at full slots       {s['per_sample_full_slots_s'] * 1e3:.3f} ms ({s['slots']} samples per chunk)"
        )
    lines += [
        f"public context        {s['public_context_bytes'] / 1e6:.1f} MB",
        f"one ciphertext        {s['ciphertext_bytes'] / 1e6:.2f} MB",
        f"report: {args.dir}/report.json",
    ]
    emit(args, "\n".join(lines) + "\n", json_result("encrypt", args.dir, report, ["encrypted"]))
    return 0
