"""The robustness audit in Python: figures, worst case, report section, plot, and PGD vs Foolbox."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from attacks.evasion import FGSM, PGD, audit_robustness, get_attack
from attacks.evasion._foolbox import foolbox
from securetrain.report import Report
from securetrain.report.plots import plot_robustness
from securetrain.report.schema import check_section

pytestmark = pytest.mark.usefixtures("one_thread")

N = 160


@pytest.fixture(scope="module")
def audit(frozen_cnn: nn.Module, digits_test):
    x, y = digits_test
    return audit_robustness(frozen_cnn, x[:N], y[:N], preset="quick", seed=0, progress=False)


def test_section_follows_the_report_schema(audit) -> None:
    section = audit.to_section()
    check_section("robustness", section)
    assert section["norm"] == "linf"
    assert section["epsilons"] == [0.0, 0.05, 0.1, 0.2, 0.3]
    assert set(section["attacks"]) == {"fgsm", "pgd", "apgd-t", "hsj", "random"}
    assert all(len(v) == 5 for v in section["attacks"].values())
    assert section["flags"] == []
    assert section["n_samples"] == N and section["preset"] == "quick"
    assert section["attack_configs"]["pgd"] == {
        "name": "pgd",
        "norm": "linf",
        "kind": "gradient",
        "steps": 20,
        "restarts": 2,
        "rel_stepsize": None,
        "random_start": True,
        "loss": "ce+margin",
    }


def test_worst_case_is_per_sample_over_all_attacks(audit) -> None:
    stacked = torch.stack(list(audit.success.values())).any(0)
    expected = stacked.to(torch.uint8).cummax(0).values.bool()
    assert torch.equal(audit.worst_case_success, expected)
    for e in range(len(audit.epsilons)):
        assert audit.worst_case[e] <= min(accs[e] for accs in audit.attacks.values()) + 1e-12
        assert audit.worst_case[e] == pytest.approx(1 - expected[e].float().mean().item())
    assert all(a >= b for a, b in zip(audit.worst_case, audit.worst_case[1:]))
    # a sample fooled by only one attack still counts as not robust
    only_one = stacked & (torch.stack(list(audit.success.values())).sum(0) == 1)
    assert bool(only_one.any())


def test_epsilon_zero_is_clean_accuracy_and_attacks_bite(audit, frozen_cnn, digits_test) -> None:
    x, y = digits_test
    with torch.no_grad():
        clean = float((frozen_cnn(x[:N]).argmax(1) == y[:N]).float().mean())
    assert audit.clean_accuracy == pytest.approx(clean)
    assert all(accs[0] == pytest.approx(clean) for accs in audit.attacks.values())
    # on digits, PGD at eps 0.1 and 0.3 (Linf) lowers accuracy a lot (PGD-40 measured 0.55 / 0.00)
    assert audit.attacks["pgd"][2] < 0.75
    assert audit.attacks["pgd"][4] < 0.05
    assert audit.attacks["pgd"][2] <= audit.attacks["fgsm"][2] + 0.02
    # a cascade's figures are cumulative: the last attack's equal the worst case
    assert audit.attacks["random"] == audit.worst_case


def test_without_cascade_each_attack_is_measured_on_its_own(frozen_cnn, digits_test) -> None:
    x, y = digits_test
    r = audit_robustness(
        frozen_cnn, x[:N], y[:N], attacks=["fgsm", "pgd", "random"], preset="quick", cascade=False, progress=False
    )
    assert not r.cascade and r.attacked["random"] == r.attacked["pgd"]
    assert r.attacks["pgd"][2] < r.attacks["random"][2]
    assert r.worst_case[2] <= r.attacks["pgd"][2]
    assert any(c["name"] == "non_monotone" and not c["skipped"] for c in r.to_section()["checks"])


def test_report_round_trip_and_plot(audit, tmp_path) -> None:
    report = Report(
        data={"name": "digits"}, model={"name": "cnn"}, accuracy=audit.clean_accuracy, robustness=audit.to_section()
    )
    report.save(tmp_path)
    again = Report.from_json(tmp_path)
    assert again.robustness == audit.to_section()
    fig = plot_robustness(again.to_dict())
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["fgsm", "pgd", "apgd-t", "hsj", "random", "worst case"]
    assert "Robustness curve" in (tmp_path / "report.html").read_text()


def test_same_seed_same_audit(frozen_cnn, digits_test, audit) -> None:
    x, y = digits_test
    again = audit_robustness(frozen_cnn, x[:N], y[:N], preset="quick", seed=0, progress=False, checks=False)
    assert again.attacks == audit.attacks and again.worst_case == audit.worst_case


def test_batches_give_the_same_deterministic_figures(frozen_cnn, digits_test) -> None:
    x, y = digits_test
    kw = dict(attacks=["fgsm", PGD(steps=10, random_start=False)], epsilons=[0.05, 0.1], checks=False, progress=False)
    whole = audit_robustness(frozen_cnn, x[:100], y[:100], batch_size=512, **kw)
    split = audit_robustness(frozen_cnn, x[:100], y[:100], batch_size=30, **kw)
    assert whole.attacks == split.attacks


def test_l2_audit(frozen_cnn, digits_test) -> None:
    x, y = digits_test
    r = audit_robustness(frozen_cnn, x[:64], y[:64], norm="l2", preset="quick", epsilons=[0.0, 1.0], progress=False)
    assert r.norm == "l2" and set(r.attacks) == {"pgd-l2", "deepfool", "apgd-t-l2", "hsj-l2", "random-l2"}
    assert r.worst_case[1] < r.clean_accuracy
    assert r.flags == []


def test_pgd_matches_foolbox_linf_pgd(frozen_cnn, digits_test) -> None:
    """Without random start our PGD follows the same path as Foolbox's LinfPGD; it also keeps
    any misclassified iterate, so it may only be stronger."""
    x, y = digits_test
    x, y = x[:200], y[:200]
    eps, steps = 0.1, 20
    ours = PGD(steps=steps, restarts=1, random_start=False, rel_stepsize=0.025 * 40 / steps)
    r = ours(frozen_cnn, x, y, [eps], seed=0)
    fb = foolbox()
    for p in frozen_cnn.parameters():
        p.requires_grad_(False)
    try:
        fmodel = fb.PyTorchModel(frozen_cnn, bounds=(0, 1), device="cpu")
        attack = fb.attacks.LinfPGD(steps=steps, abs_stepsize=0.025 * 40 / steps * eps, random_start=False)
        _, _, success = attack(fmodel, x, y, epsilons=[eps])
    finally:
        for p in frozen_cnn.parameters():
            p.requires_grad_(True)
    theirs = 1.0 - float(success[0].float().mean())
    assert r.robust_accuracy[0] <= theirs + 1e-9
    assert r.robust_accuracy[0] >= theirs - 3 / len(y)


def test_perturb_for_adversarial_training(trained_cnn, digits_test) -> None:
    x, y = digits_test
    xb, yb = x[:64], y[:64]
    trained_cnn.train()
    pgd = PGD(steps=7, restarts=1)
    x_adv = pgd.perturb(trained_cnn, xb, yb, 0.1, seed=0)
    assert trained_cnn.training
    assert not x_adv.requires_grad
    assert float((x_adv - xb).abs().max()) <= 0.1 + 1e-6 and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    with torch.no_grad():
        trained_cnn.eval()
        ce = nn.functional.cross_entropy
        clean_loss, adv_loss = ce(trained_cnn(xb), yb), ce(trained_cnn(x_adv), yb)
    assert adv_loss > 2 * clean_loss
    fast = FGSM(random_start=True, rel_stepsize=1.25).perturb(trained_cnn, xb, yb, 0.1, seed=0)
    assert float((fast - xb).abs().max()) <= 0.1 + 1e-6
    assert torch.equal(pgd.perturb(trained_cnn, xb, yb, 0.0), xb)


def test_importing_attacks_does_not_import_foolbox() -> None:
    code = "import sys, attacks, attacks.evasion; print('foolbox' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_attack_instances_are_immutable_configuration() -> None:
    a = get_attack("pgd", steps=5)
    with pytest.raises(AttributeError):
        a.steps = 6  # type: ignore[misc]
    assert a == get_attack("pgd", steps=5)
    assert repr(a) == "PGD(steps=5, restarts=4, rel_stepsize=None, random_start=True, loss='ce+margin')"
