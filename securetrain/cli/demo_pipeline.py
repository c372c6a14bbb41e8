"""The demo: every feature of securetrain on the embedded digits data, in one report.

This module sits at the top of the dependency graph (the CLI layer): it wires the core,
``attacks`` and ``defenses`` together. Everything it reports is computed here, in this run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securetrain import data
from securetrain.report import Report, Section
from securetrain.report.view import comparison_rows
from securetrain.runs import RunResult, train
from securetrain.training import Defense, TrainConfig

log = logging.getLogger("securetrain.demo")

DATA = "digits"


@dataclass
class DemoOptions:
    """Settings of :func:`run_demo`."""

    out: str | Path = "demo-out"
    epochs: int | None = None
    epsilon: float = 3.0
    adv_eps: float = 0.1
    quick: bool = False
    seed: int = 0
    progress: bool = True


class _Timer:
    """Logs the start and end of a stage; ``elapsed`` is its duration in seconds."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> _Timer:
        self.t0 = time.perf_counter()
        log.info("%s ...", self.name)
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.t0
        log.info("%s done in %.1f s", self.name, self.elapsed)


def _stage(name: str) -> _Timer:
    return _Timer(name)


HE_NAME = "he (encrypted)"
"""The name of the HE-friendly model in the demo's comparison."""


@dataclass
class _Variant:
    name: str
    result: RunResult


def _attach(run: RunResult, section: Section) -> None:
    """Put an audit section into a run's report and re-save it (JSON and Markdown; HTML at the end)."""
    run.report.add(section)
    run.report.save(run.run_dir, html=False)


def run_demo(opts: DemoOptions) -> Report:
    """Train, attack, audit and encrypt on digits; write ``opts.out/report.*``; return the report."""
    from attacks.evasion import audit_robustness
    from attacks.membership import audit_membership_run as audit_run
    from defenses.adversarial.recommended import recommended_adversarial as adv_recommended
    from defenses.privacy.presets import recommended as dp_recommended
    from securetrain.encrypted.evaluate import evaluate_encrypted

    out = Path(opts.out)
    info = data.get_info(DATA)
    x_test, y_test = data.load(DATA, "test")
    timing: dict[str, float] = {}
    t_start = time.perf_counter()

    def epochs(default: int, quick: int) -> int:
        return opts.epochs if opts.epochs is not None else (quick if opts.quick else default)

    # TrainConfig keyword arguments, like the presets' "train" and the recipes' train settings
    base: dict[str, Any] = {"data": DATA, "model": "cnn", "seed": opts.seed, "progress": opts.progress}
    dp = dp_recommended(DATA, "cnn", epsilon=opts.epsilon)  # the CNN: all four models share an architecture
    dp_train = {k: v for k, v in dp.train.items() if k != "data"}
    if opts.quick and dp_train.get("pretrain"):
        dp_train["pretrain_epochs"] = 2  # the smoke test: public pretraining shortened like the rest
    adv = adv_recommended(private=False, epsilon=opts.adv_eps)
    adv_dp = adv_recommended(private=True, epsilon=opts.adv_eps)

    plans: list[tuple[str, TrainConfig, Callable[[], list[Defense]]]] = [
        ("plain", TrainConfig(**{**base, "epochs": epochs(8, 2)}), lambda: []),
        (
            "private",
            TrainConfig(**{**base, **dp_train, "epochs": epochs(dp_train["epochs"], 3)}),
            lambda: [dp.defense()],
        ),
        (
            "adversarial",
            adv.train_config(**{**base, "epochs": epochs(adv.train.get("epochs", 10), 2)}),
            lambda: [adv.defense()],
        ),
        (
            "private+adversarial",
            adv_dp.train_config(
                **{
                    **base,
                    **dp_train,
                    **adv_dp.train,
                    "epochs": epochs(adv_dp.train.get("epochs", dp_train["epochs"]), 3),
                }
            ),
            lambda: [dp.defense(), adv_dp.defense()],
        ),
    ]
    # refuse bad settings (an adversarial epsilon outside the data's range, a bad privacy budget)
    # before anything is trained or written
    from defenses.adversarial.base import check_epsilon_in_range

    check_epsilon_in_range(opts.adv_eps, info.bounds, f"the inputs of {DATA!r}")
    for _, _, make_defenses in plans:
        make_defenses()
    out.mkdir(parents=True, exist_ok=True)
    variants: list[_Variant] = []
    for name, config, make_defenses in plans:
        with _stage(f"training {name}") as t:
            # the demo owns its output folder: running it again replaces its runs
            run = train(config, out / name.replace("+", "_"), make_defenses(), write_html=False, overwrite=True)
        timing[f"train_{name}_s"] = round(t.elapsed, 2)
        variants.append(_Variant(name, run))

    audit_eps = [opts.adv_eps / 2, opts.adv_eps, 2 * opts.adv_eps]
    n_audit = 100 if opts.quick else x_test.shape[0]
    for v in variants:
        with _stage(f"robustness audit of {v.name}") as t:
            rob = audit_robustness(
                v.result.model,
                x_test[:n_audit],
                y_test[:n_audit],
                epsilons=audit_eps,
                bounds=info.bounds,
                preset="quick",
                seed=opts.seed,
                progress=opts.progress,
            )
        timing[f"audit_{v.name}_s"] = round(t.elapsed, 2)
        _attach(v.result, rob.to_section())

    shadow = 1 if opts.quick else 4  # quick (the smoke test): one shadow model, no canary run
    for v in variants:  # every model, adversarially trained ones included (their defenses rebuild from config)
        with _stage(f"membership audit of {v.name}") as t:
            membership = audit_run(
                v.result.run_dir,
                shadow_models=shadow,
                seed=opts.seed,
                canaries=0 if opts.quick else 200,
                progress=opts.progress,
            )
        timing[f"membership_{v.name}_s"] = round(t.elapsed, 2)
        _attach(v.result, membership)

    with _stage("training the HE-friendly model") as t:
        he_run = train(
            TrainConfig(**{**base, "model": "he", "epochs": epochs(10, 3)}),
            out / "encrypted",
            write_html=False,
            overwrite=True,
        )
    timing["train_he_s"] = round(t.elapsed, 2)
    n_enc = 64 if opts.quick else x_test.shape[0]
    with _stage("encrypted inference") as t:
        enc = evaluate_encrypted(
            he_run.model, x_test[:n_enc], y=y_test[:n_enc], mode="throughput", progress=opts.progress
        )
    timing["encrypted_s"] = round(t.elapsed, 2)
    _attach(he_run, enc)

    for v in variants:
        v.result.report.save(v.result.run_dir)
    he_run.report.save(he_run.run_dir)
    timing["total_s"] = round(time.perf_counter() - t_start, 2)
    report = _combined_report(variants, he_run, timing, opts)
    report.save(out)
    return report


def _entry(name: str, run: RunResult) -> dict[str, Any]:
    """One model of the combined report: its own figures and sections, never another model's."""
    r = run.report
    d = r.to_dict()
    entry: dict[str, Any] = {"name": name, "run_dir": run.run_dir.name}
    entry.update({k: d[k] for k in ("data", "model", "accuracy", "privacy", "robustness", "membership", "encrypted")})
    entry["training"] = r.extra.get("training")
    entry["notes"] = list(r.extra.get("notes") or [])
    entry["timing"] = r.timing
    return entry


def _combined_report(
    variants: list[_Variant], he_run: RunResult, timing: dict[str, float], opts: DemoOptions
) -> Report:
    """The demo's report: the comparison of every model, each model's own sections below it.

    report.json's top-level sections are those of one model, the private+adversarial CNN (no
    section comes from another model); every model's are in ``models``.
    """
    main = next(v for v in variants if v.name == "private+adversarial")
    r = main.result.report
    models = [_entry(v.name, v.result) for v in variants] + [_entry(HE_NAME, he_run)]
    notes = [
        "Every model was trained, attacked and audited in this run on the same data split; each row of the "
        "comparison and each section below is one model's own result, and its run directory holds its full report.",
        "The top-level sections of report.json are those of the private+adversarial CNN; every model's are in "
        "'models'.",
    ]
    return Report(
        data=r.data,
        model={**r.model, "variant": main.name},
        accuracy=r.accuracy,
        privacy=r.privacy,
        robustness=r.robustness,
        membership=r.membership,
        timing=timing,
        extra={
            "comparison": comparison_rows(models),
            "models": models,
            "notes": notes,
            "training": r.extra.get("training"),
            "demo": {"epsilon": opts.epsilon, "adv_eps": opts.adv_eps, "quick": opts.quick, "seed": opts.seed},
        },
    )
