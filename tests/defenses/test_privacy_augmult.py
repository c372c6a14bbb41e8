"""Augmentation multiplicity: K views averaged inside the per-sample gradient, before clipping.

Known answers: identical views give the gradients of the run without multiplicity; distinct
views give the mean of the views' gradients computed one at a time; the clip applies to the
average. Accounting, physical batches, resume and the command line around them.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from defenses.privacy import AUGMENTATIONS, Augmentation, DifferentialPrivacy
from defenses.privacy.augment import RandomShift, default_augmentation
from defenses.privacy.augmult import AugmentedViews, AveragedViews
from defenses.privacy.engines import make_engine
from defenses.privacy.optimizer import CLIP_EPS, DPSGDOptimizer
from securetrain.errors import ConfigurationError, PrivacyError, UnknownNameError
from securetrain.training import TrainConfig, protect

pytestmark = pytest.mark.usefixtures("one_thread")


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(128, 10))


def _ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y, reduction="none")


def _digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    from securetrain import data

    x, y = data.load("digits", "train")
    return x[:n], y[:n]


def _per_sample(engine_name: str, views: int, augment: str, x, y, seed: int = 5) -> dict[str, torch.Tensor]:
    """The engine's per-sample gradients of the augmult loss, averaged over the views."""
    engine = make_engine(engine_name)
    wrapped = engine.attach(_cnn())
    try:
        losses = AugmentedViews(views, augment, torch.Generator().manual_seed(seed)).loss(_ce, wrapped, x, y)
        losses.mean().backward()
        psg = engine.collect()
        if views > 1:
            psg = AveragedViews(psg, views)
        assert psg.batch_size == x.shape[0]
        names = {p: n for n, p in engine.plain.named_parameters()}
        return {names[p]: g for p, g in psg.materialize().items()}
    finally:
        engine.detach()


def _reference(rows: torch.Tensor, labels: torch.Tensor, views: int) -> dict[str, torch.Tensor]:
    """Each row's gradient alone (plain autograd, one row at a time), averaged over each sample's views."""
    model = _cnn()
    grads: dict[str, list[torch.Tensor]] = {n: [] for n, _ in model.named_parameters()}
    for row, label in zip(rows, labels):
        loss = F.cross_entropy(model(row[None]), label[None])
        for (n, _), g in zip(model.named_parameters(), torch.autograd.grad(loss, list(model.parameters()))):
            grads[n].append(g)
    return {n: torch.stack(gs).view(-1, views, *gs[0].shape).mean(1) for n, gs in grads.items()}


@pytest.mark.parametrize("engine_name", ["bk", "hooks", "vmap"])
def test_identical_views_give_the_per_sample_gradients_without_augmult(engine_name):
    x, y = _digits(6)
    plain = _per_sample(engine_name, 1, "identity", x, y)
    copies = _per_sample(engine_name, 4, "identity", x, y)
    for name, g in plain.items():
        torch.testing.assert_close(copies[name], g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("engine_name", ["bk", "hooks", "ew", "vmap"])
def test_distinct_views_give_the_mean_of_the_view_gradients_computed_one_at_a_time(engine_name):
    x, y = _digits(6)
    k = 3
    rows = AugmentedViews(k, "shift1", torch.Generator().manual_seed(5)).expand(x)  # the rows the engine sees
    assert rows.shape == (18, 1, 8, 8)
    assert not torch.equal(rows[0::k], rows[1::k])  # the views are really different
    assert torch.equal(rows.view(6, k, 1, 8, 8).sum((2, 3, 4)) <= x.sum((1, 2, 3))[:, None], torch.ones(6, k) > 0)
    got = _per_sample(engine_name, k, "shift1", x, y)
    want = _reference(rows, y.repeat_interleave(k), k)
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-6)
    unaugmented = _reference(x, y, 1)
    assert not torch.allclose(got["0.weight"], unaugmented["0.weight"], atol=1e-4)


def test_the_clip_bounds_the_average_of_the_views_not_each_view():
    x, y = _digits(8)
    k, clip = 4, 0.05
    engine = make_engine("bk")
    wrapped = engine.attach(_cnn())
    params = engine.params()
    opt = DPSGDOptimizer(
        torch.optim.SGD(params, lr=0.0),
        engine=engine,
        noise_multiplier=0.0,
        max_grad_norm=clip,
        expected_batch_size=8,
        views=k,
    )
    views = AugmentedViews(k, "shift1", torch.Generator().manual_seed(1))
    rows = AugmentedViews(k, "shift1", torch.Generator().manual_seed(1)).expand(x)
    views.loss(_ce, wrapped, x, y).mean().backward()
    opt.step()
    # by hand: average each sample's view gradients, clip that average, sum, divide by the batch
    per_row = _reference(rows, y.repeat_interleave(k), 1)
    names = [n for n, _ in engine.plain.named_parameters()]
    means = {n: per_row[n].view(8, k, *per_row[n].shape[1:]).mean(1) for n in names}
    norms = torch.sqrt(sum(means[n].flatten(1).pow(2).sum(1) for n in names))
    factors = (clip / (norms + CLIP_EPS)).clamp(max=1.0)
    assert (norms * factors <= clip * (1 + 1e-5)).all() and (factors < 1).all()  # every average was clipped
    torch.testing.assert_close(opt.last_clip_factors, factors, rtol=1e-4, atol=1e-7)
    for n, p in zip(names, params):
        want = (means[n] * factors.view(-1, *[1] * (means[n].dim() - 1))).sum(0) / 8
        torch.testing.assert_close(p.grad, want, rtol=1e-4, atol=1e-8)
    # clipping each view and then averaging would give another step: the test tells them apart
    view_norms = torch.sqrt(sum(per_row[n].flatten(1).pow(2).sum(1) for n in names))
    view_factors = (clip / (view_norms + CLIP_EPS)).clamp(max=1.0)
    w = params[0]
    first = per_row[names[0]]
    per_view = (first * view_factors.view(-1, *[1] * (first.dim() - 1))).sum(0) / (8 * k)
    assert (w.grad - per_view).norm() > 1e-3 * w.grad.norm()
    engine.detach()


def _private_run(**settings):
    x, y = _digits(192)
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    model = _cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    dp = DifferentialPrivacy(accountant="rdp", seed=3, epochs=1, **settings)
    drawn = []
    with protect(model, opt, loader, [dp]) as session:
        for xb, yb in session.train_loader:
            if not session.can_step():
                break
            drawn.append(xb.shape[0])
            session.optimizer.zero_grad()
            session.loss(xb, yb).backward()
            session.step()
    return model, session.report()["privacy"], drawn, dp


def test_augmult_is_accounted_as_the_same_run_without_it():
    _, plain, plain_batches, _ = _private_run(epsilon=2.0)
    model, views, view_batches, dp = _private_run(epsilon=2.0, augmult=4)
    for key in ("epsilon", "noise_multiplier", "sample_rate", "steps", "delta", "valid"):
        assert views[key] == plain[key], key
    assert views["valid"] and not views["warnings"]
    assert view_batches == plain_batches  # the same Poisson batches of samples
    assert (views["augmult"], views["augment"]) == (4, "shift1")
    assert views["grad_sample_mode"] == "ew" and plain["grad_sample_mode"] == "bk"  # auto's order for views
    assert (plain["augmult"], plain["augment"]) == (1, None)
    assert "augment_rng" in dp.state_dict() and dp.config()["augmult"] == 4


def test_physical_batches_give_the_step_of_the_whole_batch():
    whole_model, whole, _, _ = _private_run(noise_multiplier=1.0, augmult=2)
    split_model, split, split_batches, _ = _private_run(noise_multiplier=1.0, augmult=2, physical_batch_size=16)
    assert max(split_batches) <= 16 and split["steps"] == whole["steps"] == 3
    assert split["valid"] and split["epsilon"] == whole["epsilon"]
    for a, b in zip(whole_model.parameters(), split_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_a_resumed_run_continues_the_augmentations(tmp_path):
    from securetrain.runs import train

    cfg = TrainConfig(data="digits", model="mlp", epochs=2, batch_size=200, progress=False, seed=4)

    def dp():
        return DifferentialPrivacy(noise_multiplier=1.0, accountant="rdp", augmult=2)

    class Kill(Exception):
        pass

    class KillAfterFirstEpoch:
        def on_epoch_end(self, session) -> None:
            if session.epoch == 1:
                raise Kill()

    full = train(cfg, tmp_path / "full", [dp()], write_html=False)
    with pytest.raises(Kill):
        train(cfg, tmp_path / "cut", [dp()], callbacks=[KillAfterFirstEpoch()], write_html=False)
    resumed = train(cfg, tmp_path / "cut", [dp()], resume=True, write_html=False)
    assert resumed.train_result.resumed_from_epoch == 1
    assert resumed.report.privacy["epsilon"] == full.report.privacy["epsilon"]
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_the_command_line_records_augmult_and_rebuilds_it(tmp_path):
    from securetrain.cli.main import main
    from securetrain.training import DefenseStack

    out = tmp_path / "run"
    args = ["train", "--data", "digits", "--model", "mlp", "--dp", "--epochs", "1", "--batch-size", "300"]
    assert main([*args, "--augmult", "2", "--augment", "shift1", "--out", str(out), "--no-html"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    (saved,) = cfg["defenses"]
    assert (saved["augmult"], saved["augment"]) == (2, "shift1")
    rebuilt = next(iter(DefenseStack.from_config(cfg["defenses"])))
    assert (rebuilt.settings.augmult, rebuilt.settings.augment) == (2, "shift1")
    privacy = json.loads((out / "report.json").read_text())["privacy"]
    assert (privacy["augmult"], privacy["augment"], privacy["valid"]) == (2, "shift1", True)
    assert main(["train", "--data", "digits", "--augmult", "2", "--out", str(tmp_path / "x")]) != 0


def test_data_that_is_not_images_needs_a_named_augmentation():
    x = torch.randn(64, 5)
    y = torch.randint(0, 2, (64,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)

    def run(**settings):
        model = nn.Linear(5, 2)
        dp = DifferentialPrivacy(noise_multiplier=1.0, accountant="rdp", epochs=1, **settings)
        with protect(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, [dp]) as session:
            for xb, yb in session.train_loader:
                session.optimizer.zero_grad()
                session.loss(xb, yb).backward()
                session.step()
        return session.report()["privacy"]

    with pytest.raises(PrivacyError, match=r"samples of shape \(5,\) are not images \(C, H, W\)"):
        run(augmult=2)
    with pytest.raises(PrivacyError, match=r"the shift1 augmentation translates images of shape \(C, H, W\)"):
        run(augmult=2, augment="shift1")

    class Jitter(Augmentation):
        name = "jitter-test"

        def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            return x + 0.01 * torch.randn(x.shape, generator=generator)

    with AUGMENTATIONS.temporarily("jitter-test", Jitter):
        privacy = run(augmult=3, augment="jitter-test")
    assert privacy["valid"] and (privacy["augmult"], privacy["augment"]) == (3, "jitter-test")


def test_bad_settings_are_refused():
    with pytest.raises(PrivacyError, match="augmult must be at least 1, got 0"):
        DifferentialPrivacy(epsilon=1.0, augmult=0)
    with pytest.raises(PrivacyError, match="augmult must be at most 256 views per sample, got 1000000"):
        DifferentialPrivacy(epsilon=1.0, augmult=1_000_000)  # would ask for tens of GB, not a typed error
    with pytest.raises(UnknownNameError, match="shift1"):
        DifferentialPrivacy(epsilon=1.0, augmult=2, augment="rotate")
    with pytest.raises(ConfigurationError, match="max_memory_mb does not measure augmentation multiplicity"):
        DifferentialPrivacy(epsilon=1.0, augmult=2, max_memory_mb=100)
    with pytest.raises(PrivacyError, match=r"shifts by up to 4 pixels, too far for 8x8 images"):
        RandomShift(4, name="shift4").check((1, 8, 8))
    assert default_augmentation((3, 32, 32)) == "shift4"
    grads = make_engine("vmap")
    model = grads.attach(nn.Linear(3, 2))
    model(torch.randn(5, 3)).sum().backward()
    with pytest.raises(PrivacyError, match="5 per-sample gradients cannot be 2 views of each sample"):
        AveragedViews(grads.collect(), 2)
    grads.detach()


def test_shifted_rows_keep_the_standard_memory_layout():
    # ExpandedWeights' convolution backward fails on rows with other strides (found on 28x28 images)
    x = torch.rand(3, 1, 28, 28)
    for name in ("shift2", "flip-shift4"):
        out = AUGMENTATIONS.get(name)()(x, torch.Generator().manual_seed(0))
        assert out.stride() == torch.empty(out.shape).stride(), name

    class Permuted(Augmentation):  # a user's augmentation whose result has other strides
        def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            return x.permute(0, 2, 3, 1).clone().permute(0, 3, 1, 2)

    rows = AugmentedViews(2, Permuted(), torch.Generator()).expand(x)
    assert rows.stride() == torch.empty(rows.shape).stride() and torch.equal(rows, x.repeat_interleave(2, 0))
    engine = make_engine("ew")
    model = engine.attach(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 26 * 26, 2)))
    F.cross_entropy(model(AUGMENTATIONS.get("shift2")()(x, torch.Generator())), torch.tensor([0, 1, 0])).backward()
    assert engine.collect().batch_size == 3
    engine.detach()


def test_flips_mirror_about_half_the_images():
    x = torch.arange(32.0 * 32).view(1, 1, 32, 32).repeat(400, 1, 1, 1)
    out = AUGMENTATIONS.get("flip-shift4")()(x, torch.Generator().manual_seed(0))
    # the centre pixel's column ordering tells a mirrored image (decreasing) from a plain one
    mirrored = (out[:, 0, 16, 10] > out[:, 0, 16, 20]).float().mean()
    assert 0.4 < float(mirrored) < 0.6
    assert out.shape == x.shape and not torch.equal(out, x)
