"""DifferentialPrivacy: known answers (plain SGD, clipping, noise), budget, resume, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from defenses.privacy import DifferentialPrivacy, accounting
from securetrain.errors import (
    CheckpointError,
    ModelError,
    PrivacyBudgetExhausted,
    PrivacyError,
    UnknownNameError,
)
from securetrain.training import TrainConfig, fit, protect


def _data(n: int = 200, d: int = 6, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y)


def _model(d: int = 6, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, 2))


def _train(session, steps: int | None = None, record: list | None = None) -> int:
    taken = 0
    for x, y in session.train_loader:
        if not session.can_step() or (steps is not None and taken >= steps):
            break
        if record is not None:
            record.append((x.clone(), y.clone()))
        session.optimizer.zero_grad()
        session.loss(x, y).backward()
        session.step()
        taken += 1
    return taken


# --------------------------------------------------------------------------- known answers


@pytest.mark.parametrize("mode", ["bk", "hooks", "vmap"])
def test_zero_noise_and_infinite_clipping_give_plain_sgd_on_the_same_batches(mode):
    data = _data()
    model = _model()
    plain = _model()
    plain.load_state_dict(model.state_dict())
    dp = DifferentialPrivacy(noise_multiplier=0.0, max_grad_norm=1e12, grad_sample_mode=mode, seed=3)
    with protect(model, torch.optim.SGD(model.parameters(), lr=0.5), DataLoader(data, batch_size=20), [dp]) as session:
        batches: list = []
        _train(session, steps=8, record=batches)
    opt = torch.optim.SGD(plain.parameters(), lr=0.5)
    for x, y in batches:  # DP-SGD averages over the expected batch size (20), not the drawn one
        opt.zero_grad()
        (F.cross_entropy(plain(x), y, reduction="sum") / 20).backward()
        opt.step()
    assert len({int(x.shape[0]) for x, _ in batches}) > 1  # Poisson: batch sizes vary
    for p, q in zip(model.parameters(), plain.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_fixed_batches_without_noise_or_clipping_are_exactly_mean_loss_sgd():
    data = _data()
    model, plain = _model(), _model()
    dp = DifferentialPrivacy(noise_multiplier=0.0, max_grad_norm=1e12, poisson_sampling=False)
    with protect(model, torch.optim.SGD(model.parameters(), lr=0.5), DataLoader(data, batch_size=25), [dp]) as session:
        _train(session)
    opt = torch.optim.SGD(plain.parameters(), lr=0.5)
    for x, y in DataLoader(data, batch_size=25):
        opt.zero_grad()
        F.cross_entropy(plain(x), y).backward()
        opt.step()
    for p, q in zip(model.parameters(), plain.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_every_clipped_per_sample_gradient_is_within_max_grad_norm():
    data = TensorDataset(torch.randn(64, 6) * 50, torch.randint(0, 2, (64,)))  # large gradients
    model = _model()
    dp = DifferentialPrivacy(noise_multiplier=0.0, max_grad_norm=0.3, seed=1)
    with protect(model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(data, batch_size=16), [dp]) as session:
        seen: list[torch.Tensor] = []
        inspect = session.optimizer.inspect

        def capture(psg):
            inspect(psg)
            flat = torch.cat([g.flatten(1) for g in psg.materialize().values()], 1)
            seen.append(flat)

        session.optimizer.inspect = capture
        _train(session, steps=4)
        factors = session.optimizer.last_clip_factors
        last = seen[-1]
        assert float(last.norm(dim=1).max()) > 0.3  # the raw gradients do exceed C
        assert float((last * factors[:, None]).norm(dim=1).max()) <= 0.3 * (1 + 1e-5)


def test_the_update_of_one_sample_is_bounded_by_the_clipping_norm():
    x = torch.full((1, 6), 100.0)
    data = TensorDataset(x.repeat(10, 1), torch.zeros(10, dtype=torch.long))
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    dp = DifferentialPrivacy(noise_multiplier=0.0, max_grad_norm=0.5, poisson_sampling=False)
    with protect(model, torch.optim.SGD(model.parameters(), lr=1.0), DataLoader(data, batch_size=1), [dp]) as session:
        _train(session, steps=1)
        delta = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
        assert 0.49 < float(delta.norm()) <= 0.5 * (1 + 1e-5)  # lr * C / expected batch (1)


def test_the_noise_has_the_configured_standard_deviation():
    data = TensorDataset(torch.randn(100, 50), torch.zeros(100, dtype=torch.long))
    torch.manual_seed(0)
    model = nn.Linear(50, 40)  # 2040 parameters
    sigma, C, batch = 1.7, 0.4, 10

    def zero_loss(m, x, y):  # per-sample gradients are exactly zero: the update is pure noise
        return m(x).sum(1) * 0.0

    dp = DifferentialPrivacy(noise_multiplier=sigma, max_grad_norm=C, seed=5)
    with protect(
        model, torch.optim.SGD(model.parameters(), lr=1.0), DataLoader(data, batch_size=batch), [dp], loss_fn=zero_loss
    ) as session:
        noise = []
        for _ in range(5):
            before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
            _train(session, steps=1)
            after = torch.cat([p.detach().flatten() for p in model.parameters()])
            noise.append((before - after) * batch)  # SGD lr=1: update = noise / expected batch
        z = torch.cat(noise)
        n = z.numel()
        assert abs(float(z.mean())) < 4 * sigma * C / math.sqrt(n)
        # the sample standard deviation of n normals is within 3% of the truth with overwhelming probability
        assert float(z.std()) == pytest.approx(sigma * C, rel=0.03)
        assert float(torch.corrcoef(torch.stack([noise[0], noise[1]]))[0, 1]).__abs__() < 0.05


def test_physical_batches_give_the_same_training_as_whole_logical_batches():
    data = _data(n=120)
    results = []
    for phys in (None, 7):
        model = _model()
        dp = DifferentialPrivacy(noise_multiplier=1.0, max_grad_norm=0.5, physical_batch_size=phys, seed=11)
        with protect(
            model, torch.optim.SGD(model.parameters(), lr=0.2), DataLoader(data, batch_size=30), [dp]
        ) as session:
            for _ in range(2):
                _train(session)
        results.append((model, dp.steps_taken, session.step_count))
    (m1, s1, phys1), (m2, s2, phys2) = results
    assert s1 == s2 == 8 and phys2 > phys1  # same logical steps, more physical ones
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["hooks", "ew", "ghost"])
def test_every_engine_trains_to_the_same_weights_as_bk(mode):
    data = _data(n=120)
    finals = []
    for m in ("bk", mode):
        model = _model()
        dp = DifferentialPrivacy(noise_multiplier=0.8, max_grad_norm=0.5, grad_sample_mode=m, seed=2)
        with protect(
            model, torch.optim.Adam(model.parameters(), lr=0.01), DataLoader(data, batch_size=30), [dp]
        ) as session:
            _train(session)
        finals.append(model)
    for p, q in zip(finals[0].parameters(), finals[1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- budget


def test_training_stops_at_the_last_step_that_fits_the_budget_and_says_so():
    data = _data(n=200)
    sigma, q, target = 2.0, 40 / 200, 2.0
    fits = accounting.max_steps("rdp", noise_multiplier=sigma, sample_rate=q, delta=1e-5, target=target)
    assert 0 < fits < 30
    model = _model()
    dp = DifferentialPrivacy(epsilon=target, noise_multiplier=sigma, delta=1e-5, accountant="rdp", seed=0)
    result = fit(
        model, (data.tensors[0], data.tensors[1]), None, TrainConfig(epochs=6, batch_size=40, progress=False), [dp]
    )
    privacy = result.sections["privacy"]
    assert privacy["steps"] == fits == privacy["budget_steps"]
    assert privacy["stopped_by_budget"] is True
    assert privacy["epsilon"] <= target
    assert accounting.epsilon("rdp", [(sigma, q, fits + 1)], 1e-5) > target
    assert result.session.stop_reason.startswith(
        f"stopped after {fits} steps: one more step would spend more than the target epsilon 2"
    )
    assert any("privacy budget" in n for n in result.session.notes)
    assert len(result.history) < 6


def test_max_epsilon_caps_a_calibrated_run():
    data = _data(n=200)
    dp = DifferentialPrivacy(noise_multiplier=2.0, max_epsilon=1.5, accountant="rdp", seed=0)
    result = fit(_model(), data.tensors, None, TrainConfig(epochs=8, batch_size=40, progress=False), [dp])
    privacy = result.sections["privacy"]
    assert privacy["stopped_by_budget"] and privacy["epsilon"] <= 1.5
    assert "max_epsilon 1.5" in result.session.stop_reason


def test_a_target_epsilon_is_never_exceeded_and_the_plan_is_used_up():
    data = _data(n=200)
    dp = DifferentialPrivacy(epsilon=2.0, accountant="rdp", seed=0)
    result = fit(_model(), data.tensors, None, TrainConfig(epochs=3, batch_size=20, progress=False), [dp])
    privacy = result.sections["privacy"]
    assert privacy["steps"] == privacy["planned_steps"] == 30
    assert 1.9 < privacy["epsilon"] <= 2.0
    assert not privacy["stopped_by_budget"] and privacy["valid"]
    eps_rows = [h["epsilon"] for h in result.history]
    assert eps_rows == sorted(eps_rows) and eps_rows[-1] == pytest.approx(privacy["epsilon"])


def test_the_optimizer_itself_refuses_a_step_past_the_budget():
    data = _data(n=100)
    model = _model()
    dp = DifferentialPrivacy(epsilon=2.0, noise_multiplier=2.0, accountant="rdp", seed=0)
    with protect(model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(data, batch_size=25), [dp]) as session:
        with pytest.raises(PrivacyBudgetExhausted, match="one more step would spend more than the target epsilon 2"):
            for _ in range(1000):  # a loop that never asks can_step()
                for xb, yb in session.train_loader:
                    session.optimizer.zero_grad()
                    session.loss(xb, yb).backward()
                    session.step()
        assert dp.epsilon_spent() <= 2.0 and dp.steps_taken == dp.budget_steps > 0


# --------------------------------------------------------------------------- resume


class _Kill(Exception):
    pass


class _KillAfter:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, session) -> None:
        if session.epoch == self.epoch:
            raise _Kill()


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_kill_and_resume_gives_the_same_epsilon_and_weights(tmp_path, accountant):
    from securetrain.runs import train

    cfg = TrainConfig(data="breast_cancer", epochs=3, batch_size=32, progress=False, seed=4)

    def dp():
        return DifferentialPrivacy(epsilon=2.0, accountant=accountant)

    full = train(cfg, tmp_path / "full", [dp()], write_html=False)
    with pytest.raises(_Kill):
        train(cfg, tmp_path / "cut", [dp()], callbacks=[_KillAfter(1)], write_html=False)
    resumed = train(cfg, tmp_path / "cut", [dp()], resume=True, write_html=False)
    assert resumed.train_result.resumed_from_epoch == 1
    a, b = full.report.privacy, resumed.report.privacy
    assert b["steps"] == a["steps"] and b["epsilon"] == a["epsilon"]
    assert b["epsilon_history"] == a["epsilon_history"]
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_resuming_with_other_privacy_settings_is_refused(tmp_path):
    from securetrain.runs import train

    cfg = TrainConfig(data="breast_cancer", epochs=2, batch_size=32, progress=False)
    with pytest.raises(_Kill):
        train(
            cfg,
            tmp_path,
            [DifferentialPrivacy(epsilon=2.0, accountant="rdp")],
            callbacks=[_KillAfter(1)],
            write_html=False,
        )
    with pytest.raises(CheckpointError, match=r"cannot resume .*privacy epsilon: 2.0 in the run, 4.0 now"):
        train(cfg, tmp_path, [DifferentialPrivacy(epsilon=4.0, accountant="rdp")], resume=True, write_html=False)


def test_the_state_carries_history_and_generators():
    data = _data(n=100)
    dp = DifferentialPrivacy(noise_multiplier=1.0, accountant="rdp", seed=0)
    model = _model()
    with protect(model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(data, batch_size=25), [dp]) as session:
        _train(session, steps=3)
        state = dp.state_dict()
        assert state["history"] == [[1.0, 0.25, 3]]
        assert isinstance(state["sampler_rng"], torch.Tensor) and isinstance(state["noise_rng"], torch.Tensor)
        nxt = [b[0].shape[0] for b, _ in zip(session.train_loader, range(2))]
        dp.load_state_dict(state)
        again = [b[0].shape[0] for b, _ in zip(session.train_loader, range(2))]
        assert nxt == again


# --------------------------------------------------------------------------- models


def test_batchnorm_is_replaced_and_the_change_reported():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    dp = DifferentialPrivacy(noise_multiplier=1.0, accountant="rdp")
    with protect(model, opt, DataLoader(_data(), batch_size=20), [dp]) as session:
        assert type(model[1]).__name__ == "GroupNorm"
        assert session.optimizer.original_optimizer.defaults["momentum"] == 0.5
        assert {id(p) for p in session.optimizer.params} == {id(p) for p in model.parameters()}
        _train(session, steps=2)
    privacy = dp.report(session)["privacy"]
    assert privacy["model_changes"][0].startswith("1: BatchNorm1d(8")
    assert "GroupNorm" in privacy["model_changes"][0] and privacy["valid"]


def test_lstm_and_attention_are_replaced_with_their_dp_versions():
    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(4, 8, batch_first=True)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            h, _ = self.lstm(x)
            a, _ = self.attn(h, h, h)
            return self.head(a[:, -1])

    torch.manual_seed(0)
    model = Seq()
    w_before = model.lstm.weight_ih_l0.detach().clone()
    data = TensorDataset(torch.rand(60, 5, 4), torch.randint(0, 2, (60,)))
    dp = DifferentialPrivacy(noise_multiplier=1.0, accountant="rdp")
    with protect(model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(data, batch_size=20), [dp]) as session:
        assert type(model.lstm).__name__ == "DPLSTM" and type(model.attn).__name__ == "DPMultiheadAttention"
        torch.testing.assert_close(model.lstm.weight_ih_l0, w_before)  # same weights
        assert _train(session, steps=2) == 2
    changes = dp.report(session)["privacy"]["model_changes"]
    assert [c.split(":")[0] for c in changes] == ["lstm", "attn"]


def test_an_unsupported_custom_layer_is_refused_with_the_list_and_the_fix():
    class RunningScale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(8))
            self.register_buffer("running_mean", torch.zeros(8))

        def forward(self, x):
            self.running_mean.mul_(0.9).add_(0.1 * x.mean(0).detach())
            return x * self.scale

    model = nn.Sequential(nn.Linear(6, 8), RunningScale(), nn.Linear(8, 2))
    with (
        pytest.raises(
            ModelError, match=r"cannot train: 1 \(RunningScale has trainable parameters and buffers.*freeze them"
        ),
        protect(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            DataLoader(_data(), batch_size=20),
            [DifferentialPrivacy(noise_multiplier=1.0)],
        ),
    ):
        pass


def test_fix_model_false_refuses_batchnorm():
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    with (
        pytest.raises(ModelError, match=r"must be replaced for differential privacy: 1 \(BatchNorm1d.*fix_model=True"),
        protect(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            DataLoader(_data(), batch_size=20),
            [DifferentialPrivacy(noise_multiplier=1.0, fix_model=False)],
        ),
    ):
        pass


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"epsilon": 0}, r"epsilon must be positive, got 0; a target epsilon is a positive number"),
        ({"epsilon": -1.0}, r"epsilon must be positive, got -1.0"),
        ({"epsilon": 1.0, "delta": 0.0}, r"delta must be in \(0, 1\), got 0.0"),
        ({"epsilon": 1.0, "delta": 1.0}, r"delta must be in \(0, 1\), got 1.0"),
        ({"epsilon": 1.0, "delta": -1e-5}, r"delta must be in \(0, 1\)"),
        (
            {"epsilon": 1.0, "max_grad_norm": 0},
            r"max_grad_norm must be positive, got 0; it is the per-sample clipping norm",
        ),
        ({"epsilon": 1.0, "max_grad_norm": -2.0}, r"max_grad_norm must be positive"),
        ({}, r"give a target epsilon \(epsilon=...\) or a noise_multiplier"),
        ({"noise_multiplier": -1.0}, r"noise_multiplier must be a finite number >= 0, got -1.0"),
        ({"noise_multiplier": 0.0, "epsilon": 1.0}, r"noise_multiplier=0 spends an infinite epsilon"),
        ({"epsilon": 3.0, "max_epsilon": 2.0}, r"max_epsilon \(2.0\) is below the target epsilon \(3.0\)"),
        ({"epsilon": 1.0, "physical_batch_size": 0}, r"physical_batch_size must be at least 1, got 0"),
        ({"epsilon": "three"}, r"epsilon must be a number, got 'three'"),
    ],
)
def test_bad_settings_are_clear_typed_errors(kwargs, match):
    with pytest.raises(PrivacyError, match=match):
        DifferentialPrivacy(**kwargs)


def test_unknown_accountant_and_mode_list_the_choices():
    with pytest.raises(UnknownNameError, match="unknown accountant 'moments'; choose one of: gdp, prv, rdp"):
        DifferentialPrivacy(epsilon=1.0, accountant="moments")
    with pytest.raises(
        UnknownNameError, match="unknown grad_sample_mode 'fast'; choose one of: bk, ew, functorch, ghost, hooks, vmap"
    ):
        DifferentialPrivacy(epsilon=1.0, grad_sample_mode="fast")


def test_a_target_unreachable_for_the_schedule_is_refused():
    data = _data(n=200)
    with pytest.raises(PrivacyError, match=r"target epsilon 0.05 is unreachable for this schedule"):
        fit(
            _model(),
            data.tensors,
            None,
            TrainConfig(epochs=2, batch_size=20, progress=False),
            [DifferentialPrivacy(epsilon=0.05, accountant="rdp")],
        )
    with pytest.raises(
        PrivacyError,
        match=r"target epsilon 0.5 is unreachable for this schedule: with noise multiplier 0.3.*a single step already spends epsilon",
    ):
        fit(
            _model(),
            data.tensors,
            None,
            TrainConfig(epochs=2, batch_size=20, progress=False),
            [DifferentialPrivacy(epsilon=0.5, noise_multiplier=0.3, accountant="rdp")],
        )


def test_a_target_without_a_planned_length_is_refused_in_a_hand_written_loop():
    model = _model()
    with (
        pytest.raises(PrivacyError, match="say how long you will train: pass epochs= or steps="),
        protect(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            DataLoader(_data(), batch_size=20),
            [DifferentialPrivacy(epsilon=1.0)],
        ),
    ):
        pass


def test_a_batch_larger_than_the_data_is_refused():
    model = _model()
    with (
        pytest.raises(PrivacyError, match=r"the batch size \(500\) is larger than the training set \(200\)"),
        protect(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            DataLoader(_data(), batch_size=500),
            [DifferentialPrivacy(noise_multiplier=1.0)],
        ),
    ):
        pass


def test_an_optimizer_over_other_parameters_is_refused():
    model = _model()
    other = nn.Linear(3, 3)
    with (
        pytest.raises(PrivacyError, match="the optimizer updates parameters that are not the model's"),
        protect(
            model,
            torch.optim.SGD(other.parameters(), lr=0.1),
            DataLoader(_data(), batch_size=20),
            [DifferentialPrivacy(noise_multiplier=1.0)],
        ),
    ):
        pass


def test_a_large_delta_is_reported():
    model = _model()
    dp = DifferentialPrivacy(noise_multiplier=1.0, delta=0.01, accountant="rdp")
    with protect(
        model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(_data(), batch_size=20), [dp]
    ) as session:
        _train(session, steps=1)
    privacy = dp.report(session)["privacy"]
    assert any("delta=0.01 is not below 1/n=0.005" in w for w in privacy["warnings"])
    assert any("delta=0.01 is not below 1/n" in n for n in session.notes)


def test_the_default_delta_is_below_one_over_n():
    model = _model()
    dp = DifferentialPrivacy(noise_multiplier=1.0, accountant="rdp")
    with protect(model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(_data(n=200), batch_size=20), [dp]):
        pass
    assert dp.delta == 1e-5 < 1 / 200
    model = _model()
    dp = DifferentialPrivacy(noise_multiplier=1.0, accountant="rdp")
    big = TensorDataset(torch.randn(50_000, 6), torch.zeros(50_000, dtype=torch.long))
    with protect(model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(big, batch_size=500), [dp]):
        pass
    assert dp.delta == pytest.approx(0.1 / 50_000)


def test_an_iterable_dataset_cannot_be_poisson_sampled():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            for _ in range(40):
                yield torch.randn(6), torch.tensor(0)

    model = _model()
    loader = DataLoader(Stream(), batch_size=10)
    dp = DifferentialPrivacy(noise_multiplier=1.0, batch_size=10)
    with (
        pytest.raises(PrivacyError, match="Poisson sampling needs a DataLoader over a map-style dataset"),
        protect(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, [dp], dataset_size=40),
    ):
        pass
    assert all(not m._forward_hooks for m in model.modules())  # nothing left attached


# --------------------------------------------------------------------------- settings, budget, rebuild


def test_the_config_rebuilds_an_equal_defense():
    from securetrain.training import Defense

    dp = DifferentialPrivacy(
        epsilon=3.0,
        delta=1e-6,
        max_grad_norm=0.5,
        accountant="rdp",
        max_epsilon=4.0,
        physical_batch_size=16,
        grad_sample_mode="hooks",
        epochs=3,
        batch_size=32,
        seed=9,
        fix_model=False,
    )
    rebuilt = Defense.from_config(dp.config())
    assert type(rebuilt) is DifferentialPrivacy and rebuilt is not dp
    assert rebuilt.settings == dp.settings and rebuilt.config() == dp.config()
    assert Defense.from_config(DifferentialPrivacy(noise_multiplier=1.0).config()).settings.noise_multiplier == 1.0
    assert rebuilt.target_epsilon == 3.0 and rebuilt.accountant == "rdp" and rebuilt.max_epsilon == 4.0


def test_the_settings_are_frozen_and_converted():
    import dataclasses

    from defenses.privacy import PrivacyConfig

    cfg = PrivacyConfig(epsilon=2, max_grad_norm=1, epochs=3.0, physical_batch_size=8)
    assert (cfg.epsilon, cfg.max_grad_norm, cfg.epochs, cfg.physical_batch_size) == (2.0, 1.0, 3, 8)
    assert type(cfg.epsilon) is float and type(cfg.epochs) is int
    assert cfg.budget_cap == 2.0 and PrivacyConfig(epsilon=3.0, max_epsilon=2.5, noise_multiplier=1.0).budget_cap == 2.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epsilon = 5.0  # type: ignore[misc]
    assert PrivacyConfig(**cfg.as_dict()) == cfg


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"epsilon": 1.0, "epochs": 0}, r"epochs must be at least 1, got 0"),
        ({"epsilon": 1.0, "steps": 2.5}, r"steps must be at least 1, got 2.5"),
        ({"epsilon": 1.0, "batch_size": True}, r"batch_size must be at least 1, got True"),
        ({"epsilon": float("nan")}, r"epsilon must be positive, got nan"),
        ({"epsilon": 1.0, "max_epsilon": -1}, r"max_epsilon must be positive, got -1; it is a hard cap"),
        ({"noise_multiplier": float("inf")}, r"noise_multiplier must be a finite number >= 0, got inf"),
        ({"noise_multiplier": "1"}, r"noise_multiplier must be a number, got '1'"),
        ({"epsilon": 1.0, "delta": "x"}, r"delta must be a number in \(0, 1\), got 'x'"),
        ({"epsilon": 1.0, "seed": 1.5}, r"seed must be an integer, got 1.5"),
    ],
)
def test_privacy_config_refuses_bad_settings(kwargs, match):
    from defenses.privacy import PrivacyConfig

    with pytest.raises(PrivacyError, match=match):
        PrivacyConfig(**kwargs)
    with pytest.raises(PrivacyError, match=match):
        DifferentialPrivacy(**kwargs)


def test_the_budget_spends_records_and_stops_at_the_cap():
    from defenses.privacy import PrivacyBudget
    from defenses.privacy.budget import HistoryEntry

    sigma, q, cap = 1.0, 0.05, 2.0
    budget = PrivacyBudget("rdp", delta=1e-5, noise_multiplier=sigma, sample_rate=q, cap=cap)
    fits = accounting.max_steps("rdp", noise_multiplier=sigma, sample_rate=q, delta=1e-5, target=cap)
    assert budget.budget_steps == fits > 0 and budget.spent() == 0.0
    for _ in range(fits):
        assert budget.fits_one_more() and budget.stop_reason() is None
        budget.record()
    assert budget.history == (HistoryEntry(sigma, q, fits),) and budget.steps == fits
    assert (
        budget.spent() == pytest.approx(accounting.epsilon("rdp", [(sigma, q, fits)], 1e-5)) and budget.spent() <= cap
    )
    assert not budget.fits_one_more()
    assert budget.stop_reason().startswith(
        f"stopped after {fits} steps: one more step would spend more than the target epsilon 2"
    )


def test_a_budget_with_mixed_rates_asks_the_accountant():
    from defenses.privacy import PrivacyBudget

    budget = PrivacyBudget("rdp", delta=1e-5, noise_multiplier=1.0, sample_rate=0.05, cap=3.0, cap_name="max_epsilon")
    steps = 0
    while budget.fits_one_more():
        budget.record(groups=2 if steps % 2 else 1)  # every other step two hooked passes: rate 2q
        steps += 1
    assert steps > 3 and budget.steps == steps
    assert [(e.sample_rate, e.steps) for e in budget.history[:3]] == [(0.05, 1), (0.1, 1), (0.05, 1)]
    assert budget.spent() <= 3.0 < accounting.epsilon("rdp", [*map(tuple, budget.history), (1.0, 0.05, 1)], 1e-5)
    assert "max_epsilon 3" in budget.stop_reason()
    gdp = PrivacyBudget("gdp", delta=1e-5, noise_multiplier=1.0, sample_rate=0.05)
    gdp.record(1)
    assert gdp.report_accountant == "gdp"
    gdp.record(2)
    assert gdp.report_accountant == "rdp"  # gdp cannot analyse mixed rates


def test_the_budget_state_round_trips():
    from defenses.privacy import PrivacyBudget

    def make():
        return PrivacyBudget("rdp", delta=1e-5, noise_multiplier=1.2, sample_rate=0.1, cap=5.0)

    budget = make()
    for groups in (1, 1, 2, 1):
        budget.record(groups)
    state = budget.state_dict()
    assert state == {"history": [[1.2, 0.1, 2], [1.2, 0.2, 1], [1.2, 0.1, 1]]}
    again = make()
    again.load_state_dict(state)
    assert again.history == budget.history and again.spent() == budget.spent() and again.steps == 4
    assert again.fits_one_more() == budget.fits_one_more()
    with pytest.raises(PrivacyError, match="a privacy history entry must be"):
        again.load_state_dict({"history": [[1.0, 0.1]]})


def test_the_steps_that_fit_are_computed_once_per_schedule():
    from defenses.privacy.budget import max_steps_within

    max_steps_within.cache_clear()
    args = ("rdp", 1.3, 0.02, 1e-5, 2.5)
    first = max_steps_within(*args)
    assert (
        max_steps_within(*args)
        == first
        == accounting.max_steps("rdp", noise_multiplier=1.3, sample_rate=0.02, delta=1e-5, target=2.5)
    )
    assert max_steps_within.cache_info().hits >= 1


def test_the_private_optimizer_is_recognised_and_not_wrapped_twice():
    from securetrain.training import PrivateOptimizer

    model = _model()
    dp = DifferentialPrivacy(noise_multiplier=1.0, accountant="rdp", seed=0)
    with protect(
        model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(_data(), batch_size=20), [dp]
    ) as session:
        assert isinstance(session.optimizer, PrivateOptimizer)
        assert not isinstance(session.optimizer, torch.optim.Optimizer)  # a wrapper, not a subclass
        assert session.optimizer.state_dict() == session.optimizer.original_optimizer.state_dict()
        with (
            pytest.raises(PrivacyError, match="already wrapped for differential privacy"),
            protect(
                session.model,
                session.optimizer,
                session.train_loader,
                [DifferentialPrivacy(noise_multiplier=1.0)],
                dataset_size=200,
            ),
        ):
            pass
    assert not isinstance(session.optimizer, PrivateOptimizer)  # the user's optimizer is given back
