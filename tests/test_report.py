from __future__ import annotations

import json

import pytest

from securetrain.errors import ReportError
from securetrain.report import (
    SECTION_KEYS,
    SECTIONS,
    EncryptedSection,
    MembershipSection,
    PrivacySection,
    Report,
    RobustnessSection,
    render_html,
    render_markdown,
)


def _full_report() -> Report:
    return Report(
        data={"name": "digits"},
        model={"name": "cnn"},
        accuracy=0.97,
        privacy={
            "epsilon": 2.9,
            "delta": 1e-5,
            "accountant": "prv",
            "noise_multiplier": 1.1,
            "max_grad_norm": 1.0,
            "sample_rate": 0.05,
            "steps": 100,
            "poisson_sampling": True,
            "valid": False,
            "warnings": ["sampler is not Poisson"],
            "epsilon_history": [[1, 0.5], [100, 2.9]],
        },
        robustness={
            "norm": "linf",
            "epsilons": [0.05, 0.1],
            "attacks": {"pgd": [0.8, 0.5]},
            "worst_case": [0.8, 0.5],
            "flags": [],
        },
        membership={
            "attack": "loss",
            "auc": 0.6,
            "tpr_at_fpr": {"0.001": 0.0, "0.01": 0.02},
            "advantage": 0.1,
            "epsilon_lower_bound": 0.2,
            "roc": {"fpr": [0, 0.5, 1], "tpr": [0, 0.7, 1]},
        },
        extra={"training": {"history": [{"epoch": 1, "train_loss": 1.0, "test_accuracy": 0.9}]}},
    )


def test_json_roundtrip(tmp_path):
    r = _full_report()
    r.save(tmp_path)
    again = Report.from_json(tmp_path)
    assert again.to_dict() == r.to_dict()
    obj = json.loads((tmp_path / "report.json").read_text())
    assert obj["schema"] == "securetrain.report/1"
    assert list(obj)[:9] == [
        "schema",
        "data",
        "model",
        "accuracy",
        "privacy",
        "robustness",
        "membership",
        "encrypted",
        "timing",
    ]


def test_renderings_show_the_figures_and_warnings():
    r = _full_report()
    md = render_markdown(r)
    assert "epsilon 2.9 at delta 1e-05 (NOT VALID)" in md
    assert "sampler is not Poisson" in md
    page = render_html(r)
    assert page.count("data:image/png;base64,") == 4  # training, epsilon, robustness, ROC
    assert "NOT valid" in page


def test_missing_section_keys_are_refused(tmp_path):
    r = _full_report()
    with pytest.raises(ReportError, match=r"'delta' is a required key of report section 'privacy'"):
        del r.privacy["delta"]
    obj = r.to_dict()
    del obj["privacy"]["delta"]
    with pytest.raises(ReportError, match=r"report section 'privacy' is missing keys: delta"):
        Report.from_dict(obj)
    (tmp_path / "report.json").write_text(
        json.dumps({"schema": "securetrain.report/9", "data": {}, "model": {}, "accuracy": 1})
    )
    with pytest.raises(ReportError, match=r"unknown report schema 'securetrain.report/9'"):
        Report.from_json(tmp_path)
    (tmp_path / "report.json").write_text("{oops")
    with pytest.raises(ReportError, match=r"is not valid JSON"):
        Report.from_json(tmp_path)
    with pytest.raises(ReportError, match=r"no report at"):
        Report.from_json(tmp_path / "missing")


# ---------------------------------------------------------------------- typed sections

SECTION_CLASSES = {
    "privacy": PrivacySection,
    "robustness": RobustnessSection,
    "membership": MembershipSection,
    "encrypted": EncryptedSection,
}


def _encrypted() -> dict:
    return {
        "scheme": "CKKS",
        "poly_modulus_degree": 8192,
        "coeff_mod_bit_sizes": [40, 30, 40],
        "security_bits": 128,
        "mode": "throughput",
        "agreement": 1.0,
        "max_abs_error": 0.01,
        "latency_s": 4.0,
        "per_sample_s": 0.01,
        "ciphertext_bytes": 300000,
        "public_context_bytes": 2000000,
    }


def test_sections_registry_holds_one_class_per_schema_section():
    assert {k: SECTIONS.get(k) for k in SECTION_KEYS} == SECTION_CLASSES
    for key, cls in SECTION_CLASSES.items():
        assert cls.key == key and cls.title
        assert set(SECTION_KEYS[key]) <= set(cls.field_names())  # every schema key is a typed field


def test_report_holds_typed_sections_and_round_trips_unknown_keys(tmp_path):
    r = _full_report()
    r.add(EncryptedSection.from_dict({**_encrypted(), "galois_keys": False}))
    for key, cls in SECTION_CLASSES.items():
        assert type(getattr(r, key)) is cls, key
    # keys another producer adds (new figures) survive the JSON round trip unchanged
    r.robustness["first_breaker"] = {"pgd": 7, "apgd-t": 2}
    r.membership.extra["dp_audit"] = {"epsilon_lower_bound": 0.4, "method": "canaries"}
    r.save(tmp_path, html=False)
    again = Report.from_json(tmp_path)
    assert again.robustness.extra == {"first_breaker": {"pgd": 7, "apgd-t": 2}}
    assert again.membership["dp_audit"]["method"] == "canaries"
    assert again.encrypted.extra["galois_keys"] is False
    assert again.privacy.epsilon == 2.9 and again.privacy.valid is False
    assert again.to_dict() == r.to_dict()
    # a section reads like the JSON object it is written as
    assert dict(again.robustness) == json.loads((tmp_path / "report.json").read_text())["robustness"]


def test_assigning_a_dict_converts_and_checks_it():
    r = _full_report()
    r.encrypted = _encrypted()
    assert isinstance(r.encrypted, EncryptedSection) and r.encrypted.security_bits == 128
    with pytest.raises(ReportError, match=r"report section 'encrypted' is missing keys: scheme"):
        r.encrypted = {k: v for k, v in _encrypted().items() if k != "scheme"}
    with pytest.raises(ReportError, match=r"'agreement' must be a number or null"):
        r.encrypted = {**_encrypted(), "agreement": "all"}


def test_add_takes_section_objects_and_a_violating_audit_marks_privacy():
    r = _full_report()
    r.privacy.valid = True
    with pytest.raises(ReportError, match=r"Report.add takes a report section object"):
        r.add({"attack": "loss"})  # type: ignore[arg-type]
    r.add(
        MembershipSection(
            attack="lira",
            auc=0.9,
            tpr_at_fpr={"0.01": 0.5},
            advantage=0.7,
            epsilon_lower_bound=4.0,
            privacy_violated=True,
            consistency="bound 4 > claimed 2.9",
        )
    )
    assert r.privacy.valid is False and r.privacy.violated_by_audit is True
    assert r.privacy.warnings[-1] == "membership audit: privacy claim violated: bound 4 > claimed 2.9"


def test_optional_fields_are_written_only_when_set():
    m = MembershipSection(attack="loss", auc=0.5, tpr_at_fpr={}, advantage=0.0, epsilon_lower_bound=None)
    d = m.to_dict()
    assert "roc_curves" not in d and "roc_curves" not in m and d["epsilon_lower_bound"] is None
    m.roc_curves = {"loss": {"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]}}
    assert m.to_dict()["roc_curves"]["loss"]["tpr"] == [0.0, 1.0]


def test_lowest_resolvable_tpr_skips_rates_below_one_over_n():
    m = MembershipSection(
        attack="loss",
        auc=0.6,
        tpr_at_fpr={"0.0001": 0.0, "0.001": 0.01, "0.01": 0.05},
        advantage=0.1,
        epsilon_lower_bound=0.2,
        nonmembers=397,
    )
    assert m.resolvable_fpr() == pytest.approx(1 / 397)
    assert m.lowest_resolvable_tpr() == ("0.01", 0.05)


# ---------------------------------------------------------------------- renderings


def _comparison_report() -> Report:
    base = _full_report().to_dict()
    models = []
    for name, eps in (("plain", None), ("private", 2.9)):
        entry = {k: base[k] for k in ("data", "model", "accuracy", "robustness", "membership")}
        entry["membership"] = {
            **entry["membership"],
            "nonmembers": 397,
            "roc_curves": {
                "loss": {"fpr": [0.0, 0.01, 0.5, 1.0], "tpr": [0.0, 0.05, 0.7, 1.0]},
                "lira": {"fpr": [0.0, 0.01, 0.5, 1.0], "tpr": [0.0, 0.1, 0.8, 1.0]},
            },
        }
        entry["privacy"] = {**base["privacy"], "epsilon": eps, "valid": True} if eps else None
        entry.update(name=name, encrypted=None, training=base["training"])
        models.append(entry)
    models.append(
        {"name": "he", "data": base["data"], "model": {"name": "he"}, "accuracy": 0.9, "encrypted": _encrypted()}
    )
    return Report.from_dict({**base, "models": models})


def test_comparison_report_leads_with_the_table_and_names_the_model_in_every_section(tmp_path):
    import html5lib

    r = _comparison_report()
    paths = r.save(tmp_path)
    page = (tmp_path / "report.html").read_text()
    html5lib.HTMLParser(strict=True).parse(page)  # raises on any parse error
    doc = html5lib.parse(page, namespaceHTMLElements=False)
    body = doc.find("body")
    first = [el for el in body.iter() if el.tag in ("h2", "table")][:2]
    assert [el.tag for el in first] == ["h2", "table"] and first[0].text == "Models side by side"
    rows = first[1].find("tbody").findall("tr")
    assert [tr[0].text for tr in rows] == ["plain", "private", "he"]
    assert "(valid)" in "".join(rows[1].itertext()) and "not private" in "".join(rows[0].itertext())
    titles = ["".join(h.itertext()) for h in body.iter("h3")]
    assert titles, "no section titles"
    for title in titles:
        assert title.split(":")[0] in ("plain", "private", "he"), title
    assert "{'" not in page and "{&#39;" not in page
    # comparison plots, and each model's own plots, embedded; the same plots beside report.md
    pngs = sorted(p.name for p in tmp_path.glob("report_*.png"))
    assert {"report_robustness_comparison.png", "report_privacy_utility.png", "report_tradeoff.png"} <= set(pngs)
    assert "report_private_membership.png" in pngs and "report_plain_training.png" in pngs
    assert page.count("data:image/png;base64,") == len(pngs)
    md = paths["md"].read_text()
    assert md.index("## Models side by side") < md.index("## plain on digits")
    for name in pngs:
        assert f"]({name})" in md
    assert "{'" not in md


def test_html_of_a_single_run_is_valid_and_explains_its_figures():
    import html5lib

    page = render_html(_full_report(), plots={})  # the plots are checked above; here the text
    html5lib.HTMLParser(strict=True).parse(page)
    for sentence in ("changes the probability of any outcome", "cannot show that a model is private", "worst case"):
        assert sentence in page
    assert "{'" not in page


def test_roc_plot_starts_at_the_smallest_resolvable_fpr():
    from securetrain.report.plots import plot_roc

    r = _comparison_report().to_dict()["models"][0]
    fig = plot_roc(r)
    ax = fig.axes[0]
    assert ax.get_xlim()[0] == pytest.approx(1 / 397)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["loss", "lira"] and labels[-1] == "chance"
