"""The physical batch chosen from a memory budget (``max_memory_mb``): fits, monotone, same training, resumed."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from defenses.privacy import DifferentialPrivacy
from defenses.privacy.cli import OPTION
from defenses.privacy.memory import SAFETY, measure_step_memory, step_peak_mb
from securetrain.errors import ConfigurationError, PrivacyError
from securetrain.training import Defense, protect


def _data(n: int = 160, d: int = 32) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def _model(d: int = 32) -> nn.Module:
    torch.manual_seed(0)  # dropout: the probe steps must leave torch's generator as it was
    return nn.Sequential(nn.Linear(d, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 2))


def _session(dp: DifferentialPrivacy, data: TensorDataset, model: nn.Module | None = None):
    model = model if model is not None else _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return protect(model, opt, DataLoader(data, batch_size=40), [dp])


def _train(session, steps: int) -> None:
    taken = 0
    for x, y in session.train_loader:
        if taken >= steps:
            break
        session.optimizer.zero_grad()
        session.loss(x, y).backward()
        if session.step():
            taken += 1


def test_the_chosen_physical_batch_fits_and_grows_with_the_budget():
    data = _data()
    with _session(DifferentialPrivacy(noise_multiplier=1.0, physical_batch_size=4, seed=0), data) as s:
        fit = measure_step_memory(s.model, s.defenses.defenses[0].engine, data)
        assert fit.per_sample_mb > 0
        chosen = []
        for k in (4, 12, 36):
            budget = fit.peak_mb(k) / (1 - SAFETY)
            batch = fit.physical_batch(budget)
            assert k - 1 <= batch <= k  # a budget that admits about k samples gives about k
            assert step_peak_mb(s.model, s.defenses.defenses[0].engine, data, batch) <= budget
            chosen.append(batch)
    assert chosen == sorted(chosen) and chosen[0] < chosen[-1]


def test_setup_picks_the_batch_and_trains_as_with_that_batch_given():
    data = _data()
    budget = 0.06
    auto = DifferentialPrivacy(noise_multiplier=1.0, max_memory_mb=budget, seed=3)
    m_auto = _model()
    with _session(auto, data, m_auto) as s:
        chosen = auto.physical_batch_size
        assert chosen is not None and 1 <= chosen < 40  # the budget splits the logical batches
        assert s.train_loader.physical_batch_size == chosen
        assert auto.memory_fit is not None and auto.memory_fit.peak_mb(chosen) <= (1 - SAFETY) * budget
        _train(s, 3)
        section = s.report()["privacy"]
    assert section["physical_batch_size"] == chosen and section["max_memory_mb"] == budget
    assert section["memory_per_sample_mb"] == pytest.approx(auto.memory_fit.per_sample_mb, abs=1e-4)
    given = DifferentialPrivacy(noise_multiplier=1.0, physical_batch_size=chosen, seed=3)
    m_given = _model()
    with _session(given, data, m_given) as s:
        _train(s, 3)
    for p, q in zip(m_auto.parameters(), m_given.parameters()):
        assert torch.equal(p, q)
    bigger = DifferentialPrivacy(noise_multiplier=1.0, max_memory_mb=4 * budget, seed=3)
    with _session(bigger, data):
        assert bigger.physical_batch_size is not None and bigger.physical_batch_size > chosen


def test_resume_keeps_the_physical_batch_of_the_interrupted_run():
    data = _data()
    first = DifferentialPrivacy(noise_multiplier=1.0, max_memory_mb=0.3, seed=1)
    with _session(first, data) as s:
        _train(s, 1)
        state = first.state_dict()
    assert state["physical_batch_size"] == first.physical_batch_size
    again = DifferentialPrivacy(noise_multiplier=1.0, max_memory_mb=1.2, seed=1)
    with _session(again, data) as s:
        assert again.physical_batch_size != first.physical_batch_size  # a new measurement would differ
        again.load_state_dict(state)
        assert again.physical_batch_size == s.train_loader.physical_batch_size == first.physical_batch_size


def test_bad_budgets_are_refused():
    with pytest.raises(ConfigurationError, match="give max_memory_mb or physical_batch_size, not both"):
        DifferentialPrivacy(noise_multiplier=1.0, max_memory_mb=100, physical_batch_size=8)
    with pytest.raises(PrivacyError, match="max_memory_mb must be positive, got -1"):
        DifferentialPrivacy(noise_multiplier=1.0, max_memory_mb=-1)
    with pytest.raises(PrivacyError, match="max_memory_mb needs poisson_sampling=True"):
        DifferentialPrivacy(noise_multiplier=1.0, max_memory_mb=100, poisson_sampling=False)
    dp = DifferentialPrivacy(noise_multiplier=1.0, max_memory_mb=1e-4)
    model = _model()
    with (
        pytest.raises(
            ConfigurationError,
            match=r"max_memory_mb 0.0001 is below what a private step on one sample needs: .* MB fixed \+ "
            r"[0-9.e-]+ MB per sample\), .*give at least",
        ),
        _session(dp, _data(), model),
    ):
        pass
    assert all(not m._forward_hooks for m in model.modules())  # nothing left attached


def test_config_and_command_line_carry_the_budget():
    dp = DifferentialPrivacy(epsilon=2.0, max_memory_mb=256)
    rebuilt = Defense.from_config(dp.config())
    assert rebuilt.settings == dp.settings and rebuilt.max_memory_mb == 256.0
    p = argparse.ArgumentParser()
    OPTION.add_arguments(p)
    assert OPTION.build(p.parse_args(["--dp", "--epsilon", "3", "--max-memory-mb", "512"])).max_memory_mb == 512.0
    with pytest.raises(ConfigurationError, match="--max-memory-mb only apply with --dp"):
        OPTION.build(p.parse_args(["--max-memory-mb", "512"]))


class _Kill(Exception):
    pass


class _KillAfter:
    def on_epoch_end(self, session) -> None:
        if session.epoch == 1:
            raise _Kill()


def test_a_killed_and_resumed_run_with_a_memory_budget_ends_as_an_uninterrupted_one(tmp_path):
    from securetrain.runs import train
    from securetrain.training import TrainConfig

    cfg = TrainConfig(data="breast_cancer", epochs=2, batch_size=32, progress=False, seed=4)

    def dp():
        return DifferentialPrivacy(epsilon=2.0, accountant="rdp", max_memory_mb=0.06)

    full = train(cfg, tmp_path / "full", [dp()], write_html=False)
    with pytest.raises(_Kill):
        train(cfg, tmp_path / "cut", [dp()], callbacks=[_KillAfter()], write_html=False)
    resumed = train(cfg, tmp_path / "cut", [dp()], resume=True, write_html=False)
    a, b = full.report.privacy, resumed.report.privacy
    assert 1 <= a["physical_batch_size"] < 32 and b["physical_batch_size"] == a["physical_batch_size"]
    assert b["epsilon"] == a["epsilon"] and b["steps"] == a["steps"]
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_sweep_picks_each_runs_physical_batch_from_the_budget(tmp_path, capsys):
    """``securetrain sweep --max-memory-mb``: every private run measures its step and records the
    chosen batch; contradicting or bad budgets are refused before any run is trained."""
    import json

    from securetrain.cli.main import main

    argv = ["sweep", "--data", "breast_cancer", "--model-kwargs", "{}", "--epochs", "1", "--no-progress"]
    argv += ["--no-baseline", "--no-html", "--accountant", "rdp", "--epsilons", "4", "--max-memory-mb", "1"]
    assert main([*argv, "--out", str(tmp_path / "sweep")]) == 0
    capsys.readouterr()
    report = json.loads((tmp_path / "sweep" / "epsilon_4" / "report.json").read_text())
    privacy = report["privacy"]
    assert privacy["max_memory_mb"] == 1.0
    fixed, per_sample = privacy["memory_fixed_mb"], privacy["memory_per_sample_mb"]
    chosen = privacy["physical_batch_size"]
    assert chosen >= 1 and fixed + chosen * per_sample <= (1 - SAFETY) * 1.0
    assert fixed + (chosen + 1) * per_sample > (1 - SAFETY) * 1.0  # the largest that fits

    for extra, message in [
        (["--physical-batch-size", "8"], "give max_memory_mb or physical_batch_size, not both"),
        (["--max-memory-mb", "nan"], "max_memory_mb"),
    ]:
        out = tmp_path / f"bad{len(extra[0])}"
        assert main([*argv, *extra, "--out", str(out)]) != 0
        assert message in capsys.readouterr().err
        assert not (out / "epsilon_4").exists()  # refused before training
