"""Model-side DP techniques: the ScatterNet front-end and weight standardisation with GroupNorm.

Both are model options, so ``load_model`` rebuilds them, and neither changes the accounting.
"""

from __future__ import annotations

import pytest
import torch

import securetrain
from defenses.privacy import DifferentialPrivacy
from defenses.privacy.modes import verify_engine
from securetrain.models import build_model
from securetrain.models.standardized import WSConv2d, standardize_weight, standardize_weight_vjp
from securetrain.training import TrainConfig


def test_the_standardisation_pullback_equals_autograd():
    torch.manual_seed(0)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 5, 3, 3, 3, dtype=torch.float64)  # four "samples"
    for i in range(4):
        (want,) = torch.autograd.grad(standardize_weight(w, 1e-5), w, g[i])
        assert torch.allclose(standardize_weight_vjp(w.detach(), g, 1e-5)[i], want, atol=1e-10)


def test_every_engine_gets_per_sample_gradients_of_standardised_convolutions_right():
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, norm_groups=4, weight_standardization=True, activation="tanh")
    assert sum(isinstance(m, WSConv2d) for m in model.modules()) == 2
    x = torch.randn(6, 1, 8, 8)
    for engine in ("bk", "ghost", "vmap"):
        assert verify_engine(engine, model, x) is None, engine


@pytest.mark.parametrize("model_kwargs", [{"norm_groups": 4, "weight_standardization": True}, {"J": 1}])
def test_private_training_reloads_and_is_accounted_like_the_plain_cnn(tmp_path, model_kwargs):
    model = "cnn" if "norm_groups" in model_kwargs else "scatter"
    privacy = {}
    for name, kwargs in (("plain-cnn", {}), (model, model_kwargs)):
        cfg = TrainConfig(
            data="digits",
            model=name.removeprefix("plain-"),
            model_kwargs=kwargs,
            epochs=1,
            batch_size=128,
            progress=False,
        )
        dp = DifferentialPrivacy(epsilon=3.0, accountant="rdp", grad_sample_mode="auto")
        result = securetrain.train(cfg, tmp_path / name, [dp], write_html=False)
        privacy[name] = result.report.privacy
        loaded = securetrain.load_model(tmp_path / name)
        x, _ = securetrain.data.load("digits", "test")
        assert torch.equal(loaded(x), result.model.eval()(x))  # load_model rebuilt the same model
    # the front-end / normalisation changes nothing in the accounting; per-sample gradients were verified (bk)
    for key in ("epsilon", "noise_multiplier", "sample_rate", "steps", "valid"):
        assert privacy[model][key] == privacy["plain-cnn"][key], key
    assert privacy[model]["valid"] is True and privacy[model]["grad_sample_mode"] == "bk"


def test_the_scatternet_example_runs():
    import runpy
    from pathlib import Path

    module = runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples" / "private_scatternet.py"))
    out = module["main"](epochs=2)
    assert out["scatter"]["epsilon"] == out["cnn"]["epsilon"] <= 3.0  # same schedule, same accounting
    assert out["scatter"]["validation_accuracy"] > 0.6  # the head learns in two private epochs
    (refit,) = [name for name in out if name.endswith(" refit")]
    # refit on train+validation (1400 samples instead of 1200) at the same epsilon
    assert out[refit]["epsilon"] <= 3.0
    assert out[refit]["sample_rate"] * 1400 == pytest.approx(out["scatter"]["sample_rate"] * 1200)
