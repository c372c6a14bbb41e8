"""The defense registry and its seams: entry points, config round trips, rebuilds from run directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import securetrain
from securetrain.errors import ConfigurationError, UnknownNameError
from securetrain.rundir import RunDir
from securetrain.training import (
    DEFENSES,
    Defense,
    DefenseStack,
    RunPlan,
    TrainConfig,
    get_defense_class,
    get_defense_options,
    protect,
)

ROOT = Path(__file__).resolve().parents[1]


def test_builtin_defenses_come_from_the_entry_points():
    assert {"privacy", "adversarial"} <= set(DEFENSES.names())
    assert get_defense_class("privacy").__name__ == "DifferentialPrivacy"
    assert get_defense_class("adversarial").__name__ == "AdversarialTraining"
    options = get_defense_options()
    assert [type(o).__name__ for o in options] == ["PrivacyOption", "AdversarialOption"]


def test_unknown_defense_names_the_choices_and_how_to_register():
    with pytest.raises(
        UnknownNameError,
        match=r"unknown defense \(register it with securetrain.training.DEFENSES.add.*"
        r"'mystery'; choose one of: adversarial, privacy",
    ):
        Defense.from_config({"name": "mystery"})
    with pytest.raises(ConfigurationError, match="a defense config must be a mapping with a 'name'"):
        Defense.from_config({"epsilon": 1.0})


@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "adversarial", "method": "pgd", "epsilon": 0.1, "steps": 3, "restarts": 2},
        {"name": "adversarial", "method": "fgsm", "epsilon": 0.05},
        {"name": "adversarial", "method": "trades", "epsilon": 0.1, "beta": 2.0, "steps": 2},
        {"name": "privacy", "epsilon": 3.0, "delta": 1e-6, "max_grad_norm": 0.5, "accountant": "rdp", "epochs": 4},
    ],
    ids=["pgd", "fgsm", "trades", "privacy"],
)
def test_every_builtin_defense_round_trips_through_its_config(cfg):
    first = Defense.from_config(cfg)
    again = Defense.from_config(first.config())
    assert type(again) is type(first)
    assert again.config() == first.config()
    for key, value in cfg.items():
        assert first.config()[key] == value


def test_a_stack_round_trips_and_totals_forward_passes():
    stack = DefenseStack.from_config(
        [
            {"name": "privacy", "noise_multiplier": 1.0, "epochs": 1},
            {"name": "adversarial", "method": "trades", "epsilon": 0.1},
        ]
    )
    assert [d.name for d in stack] == ["privacy", "adversarial"]
    assert stack.forward_passes_per_step == 2  # TRADES makes two hooked passes of the same samples
    assert DefenseStack.from_config(stack.config()).config() == stack.config()
    with pytest.raises(ConfigurationError, match="a defense stack config must be a list of defense configs"):
        DefenseStack.from_config({"name": "privacy"})  # type: ignore[arg-type]


def test_a_defense_whose_config_is_not_its_constructor_must_say_how_to_rebuild():
    class Odd(Defense):
        name = "odd-test"

        def __init__(self, amount: float = 0.1) -> None:
            self.amount = amount

        def config(self):
            return {"name": self.name, "smoothing": self.amount}

    with DEFENSES.temporarily("odd-test", Odd):
        with pytest.raises(
            ConfigurationError,
            match=r"cannot rebuild defense 'odd-test': Odd takes no setting\(s\) "
            r"smoothing; override Odd.from_config",
        ):
            Defense.from_config(Odd().config())
    assert "odd-test" not in DEFENSES


def test_a_registered_non_defense_is_refused():
    with DEFENSES.temporarily("not-a-defense-test", object):  # type: ignore[arg-type]
        with pytest.raises(
            ConfigurationError,
            match=r"the registered defense .not-a-defense-test. is <class .object.>, not a Defense subclass",
        ):
            get_defense_class("not-a-defense-test")


def test_the_legacy_forward_pass_attribute_warns_and_still_counts():
    with pytest.deprecated_call(match="privacy_forward_passes is deprecated; set forward_passes_per_step"):

        class Legacy(Defense):
            name = "legacy-test"
            privacy_forward_passes = 3

    assert Legacy.forward_passes_per_step == 3
    assert DefenseStack([Legacy()]).forward_passes_per_step == 3


def test_protect_tears_down_when_the_loop_raises():
    events: list[str] = []

    class Hooked(Defense):
        name = "hooked-test"

        def setup(self, session):
            events.append("setup")

        def teardown(self, session):
            events.append("teardown")

    model = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="boom"):
        with protect(model, torch.optim.SGD(model.parameters(), lr=0.1), [], [Hooked()]):
            raise RuntimeError("boom")
    assert events == ["setup", "teardown"]


def test_protect_outside_with_is_deprecated_but_works():
    model = nn.Linear(3, 2)
    session = protect(model, torch.optim.SGD(model.parameters(), lr=0.1), [])
    with pytest.deprecated_call(match=r"outside a 'with' block is deprecated"):
        loss = session.loss(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    assert loss.shape == ()


def test_session_end_epoch_collects_defense_metrics_and_plan_is_typed():
    class Metric(Defense):
        name = "metric-test"

        def epoch_metrics(self, session):
            return {"seen": float(session.step_count)}

    model = nn.Linear(3, 2)
    data = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))] * 3
    plan = RunPlan(epochs=1, bounds=(0, 1))
    with protect(model, torch.optim.SGD(model.parameters(), lr=0.1), data, [Metric()], plan=plan) as session:
        for x, y in session.train_loader:
            session.optimizer.zero_grad()
            session.loss(x, y).backward()
            session.step()
        row = session.end_epoch(train_loss=0.5)
    assert row == {"epoch": 1, "steps": 3, "seen": 3.0, "train_loss": 0.5}
    assert session.history == [row] and session.plan.bounds == (0.0, 1.0) and session.last_batch_size == 4
    with pytest.raises(ConfigurationError, match=r"RunPlan.epochs must be an integer >= 1, got 0"):
        RunPlan(epochs=0)


@pytest.mark.parametrize("dp", [False, True], ids=["plain", "dp"])
@pytest.mark.parametrize("method", ["pgd", "fgsm", "trades"])
def test_adversarial_runs_rebuild_their_recipe_for_shadow_models(tmp_path, method, dp):
    from attacks.membership import TrainingRecipe
    from defenses.adversarial import make_adversarial
    from defenses.privacy import DifferentialPrivacy

    defenses: list[Defense] = [make_adversarial(method, 0.5, **({} if method == "fgsm" else {"steps": 1}))]
    if dp:
        defenses.insert(0, DifferentialPrivacy(epsilon=3.0, accountant="rdp"))
    securetrain.train(TrainConfig(data="breast_cancer", epochs=1, progress=False), tmp_path, defenses, write_html=False)
    run = RunDir.open(tmp_path)
    assert [c["name"] for c in run.defense_configs] == (["privacy"] if dp else []) + ["adversarial"]
    adv_cfg = run.defense_configs[-1]
    assert adv_cfg["bounds"] is None  # resolved from the data again when rebuilt, not frozen at (0, 1)
    recipe = TrainingRecipe.from_run(tmp_path)
    assert recipe.private is dp
    x, y = run.load_data("train")
    shadow = recipe((x[:64], y[:64]), seed=1)  # trains with the rebuilt defenses
    assert isinstance(shadow, nn.Module) and not shadow.training


@pytest.mark.slow
# the CLI path once, on the heaviest combination (every method x DP is covered above through the recipe)
@pytest.mark.parametrize("flags", [["--adversarial", "trades", "--dp", "--accountant", "rdp"]], ids=["trades+dp"])
def test_cli_membership_audit_works_on_adversarial_runs(tmp_path, flags):
    from securetrain.cli.main import main

    run = tmp_path / "run"
    base = [sys.executable, "-m", "securetrain.cli.main"]
    # training through the CLI in this process; the audit in a fresh one, which has only the run
    # directory to rebuild the defenses from
    train = [
        "train",
        "--data",
        "breast_cancer",
        "--epochs",
        "1",
        "--out",
        str(run),
        "--adv-eps",
        "0.5",
        "--no-progress",
        "--no-html",
        *flags,
    ]
    if "--dp" in flags:
        train += ["--epsilon", "3"]
    if "trades" in flags:
        train += ["--adv-steps", "1"]
    assert main(train) == 0
    audit = subprocess.run(
        base
        + [
            "audit",
            str(run),
            "--attacks",
            "fgsm",
            "--eps",
            "0.5",
            "--samples",
            "20",
            "--membership",
            "--shadow-models",
            "1",
            "--no-progress",
            "--no-html",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert audit.returncode == 0, audit.stderr
    report = json.loads((run / "report.json").read_text())
    assert 0.0 <= report["membership"]["auc"] <= 1.0
    assert report["membership"]["epsilon_lower_bound"] >= 0.0


def test_third_party_defense_example_runs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("third_party_defense", ROOT / "examples" / "third_party_defense.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = module.main()
    assert summary["rebuilt"] == "LabelSmoothing" and summary["amount"] == 0.2
    assert summary["history_smoothing"] == 0.2 and summary["section"]["batches"] > 0
    assert summary["accuracy"] > 0.8


def test_opening_a_run_for_serving_imports_neither_training_nor_distributed(tmp_path):
    securetrain.train(TrainConfig(data="breast_cancer", epochs=1, progress=False), tmp_path, write_html=False)
    code = (
        "import sys; from securetrain.rundir import RunDir; m = RunDir.open(sys.argv[1]).load_model(); "
        "bad = [n for n in sys.modules if n.startswith(('securetrain.training', 'securetrain.distributed'))]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
