"""The fixed scattering front-end and the ScatterNet zoo model."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from securetrain import data
from securetrain.errors import ConfigurationError, ModelError
from securetrain.models import build_model
from securetrain.models.scattering import Scattering2D, scattering_paths


def test_a_constant_image_has_only_its_mean_and_no_wavelet_energy():
    # the low-pass filter sums to one and every Morlet wavelet to zero: a constant image gives
    # S0 = the constant and S1 = S2 = 0, whatever the scale
    for shape, J in (((28, 28), 2), ((8, 8), 1), ((12, 10), 2)):
        s = Scattering2D(shape, J=J)
        out = s(torch.full((2, 1, *shape), 0.7))
        assert out.shape == (2, scattering_paths(J, 8, 2), *s.out_size)
        assert torch.allclose(out[:, 0], torch.full_like(out[:, 0], 0.7), atol=1e-3)
        assert out[:, 1:].abs().max() < 1e-4


def test_it_has_no_parameters_and_saves_no_filters():
    s = Scattering2D((28, 28), J=2)
    assert list(s.parameters()) == [] and s.state_dict() == {}
    assert s(torch.rand(1, 3, 28, 28)).shape == (1, 3 * 81, 7, 7)  # every channel scattered


@pytest.mark.skipif(importlib.util.find_spec("kymatio") is None, reason="kymatio (the reference) is not installed")
def test_the_coefficients_equal_kymatios_on_real_images():
    # kymatio.torch does not import beside scipy >= 1.14 (a removed 3-d helper); its 2-d frontend does
    from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D

    for name, J in (("mnist-5k", 2), ("digits", 1), ("digits", 2)):
        x = data.load(name, "validation")[0][:16].float()
        x = x.unsqueeze(1) if x.dim() == 3 else x
        want = ScatteringTorch2D(J=J, shape=tuple(x.shape[-2:]), L=8)(x.contiguous())[:, 0]
        got = Scattering2D(tuple(x.shape[-2:]), J=J)(x)
        assert got.shape == want.shape
        assert float((got - want).norm() / want.norm()) < 1e-4, name


def test_bad_options_are_refused():
    with pytest.raises(ModelError, match="choose a smaller J"):
        Scattering2D((8, 8), J=3)
    with pytest.raises(ConfigurationError, match="'order' must be 1 or 2"):
        Scattering2D((8, 8), J=1, order=3)
    with pytest.raises(ConfigurationError, match="'groups' must divide the 9 scattering channels"):
        build_model("scatter", (1, 8, 8), 10, groups=2)
    with pytest.raises(ConfigurationError, match="'head' must be one of linear, cnn"):
        build_model("scatter", (1, 8, 8), 10, head="mlp")


@pytest.mark.parametrize("kwargs", [{}, {"head": "cnn", "channels": [8], "hidden": 16}, {"order": 1}])
def test_scatternet_trains_only_its_head(kwargs):
    net = build_model("scatter", (1, 8, 8), 10, **kwargs)
    x, y = data.load("digits", "train")
    loss = torch.nn.functional.cross_entropy(net(x[:32]), y[:32])
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())
    assert not any(True for _ in net.scattering.parameters())
