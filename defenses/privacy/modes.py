"""Choosing the per-sample gradient engine (``grad_sample_mode``), ``auto`` included.

Every engine is *verified* on the model before training: on a small random batch, its
per-sample gradients must match the gradients of each sample run through the plain model
alone. This catches layers an engine cannot see (a position embedding indexed without the
batch dimension), layers it gets wrong, and models that mix the samples of a batch (which
no engine can make private; then training is refused).

``auto`` tries, in order, ``bk`` (the fastest on the zoo models it supports: 1.5x a
non-private step on the digits CNN at batch 64, against 3.0x for Opacus's hooks and 2.4x
for ExpandedWeights, measured by ``benchmarks/bench_dp.py``), then Opacus's ``hooks``, then
``vmap`` (works for any per-sample model). ``bk`` switches a layer to ghost norms by itself
when its per-sample gradients would take more than 256 MiB, which is the memory-lean mode
for large layers (``ghost`` picks the leaner computation for every layer).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from defenses.privacy.modes import select_engine
    >>> choice = select_engine(nn.Sequential(nn.Linear(4, 3)), "auto", torch.zeros(2, 4))
    >>> choice.name, choice.tried
    ('bk', {})
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from defenses.privacy import layers as _layers  # noqa: F401  (registers bk handlers of the zoo's own layers)
from defenses.privacy.engines import ENGINES, EngineUnsupported, make_engine
from defenses.privacy.engines.base import Engine, first_tensor
from securetrain.errors import ModelError

AUTO_ORDER = ("bk", "hooks", "vmap")
"""Engines ``auto`` tries, fastest first (measured in ``benchmarks/bench_dp.py``)."""

VARIANTS: dict[str, tuple[dict[str, Any], ...]] = {
    "bk": ({}, {"skip_param_grads": False}),
    "ghost": ({}, {"skip_param_grads": False}),
}
"""Settings tried in order for an engine (``bk`` first lets autograd skip the batch gradients)."""

PROBE_BATCH = 3


@dataclass
class EngineChoice:
    """The engine to train with, its name, and why the ones tried before it were skipped."""

    engine: Engine
    name: str
    tried: dict[str, str] = field(default_factory=dict)
    verified: bool = True
    options: dict[str, Any] = field(default_factory=dict)


def probe_inputs(example: Any, batch: int = PROBE_BATCH) -> Any:
    """A random batch shaped like ``example`` (one sample or a batch; integer inputs kept as they are).

    A mapping of tensors (keyword inputs, as for a ``transformers`` model) gives a mapping
    of probe batches, one per entry; anything else, the probe for its first tensor.
    """
    if isinstance(example, Mapping):
        tensors = {k: v for k, v in example.items() if isinstance(v, torch.Tensor)}
        if not tensors:
            return None
        return {k: _probe_tensor(v, batch) for k, v in tensors.items()}
    x = first_tensor(example)
    if x is None:
        return None
    return _probe_tensor(x, batch)


def on_model_device(x: Any, model: nn.Module) -> Any:
    """``x`` (a tensor or a mapping of tensors) on the device of ``model``'s first parameter.

    A model without parameters leaves ``x`` where it is.

    Example:
        >>> on_model_device(torch.zeros(2, 3), nn.Linear(3, 1).to("meta")).device
        device(type='meta')
        >>> on_model_device({"ids": torch.zeros(2, 3)}, nn.Linear(3, 1).to("meta"))["ids"].device
        device(type='meta')
    """
    device = next((p.device for p in model.parameters()), None)
    if device is None:
        return x
    if isinstance(x, Mapping):
        return {k: v.to(device) for k, v in x.items()}
    return x.to(device)


def _probe_tensor(x: torch.Tensor, batch: int) -> torch.Tensor:
    sample = x[0] if x.dim() > 0 and x.shape[0] >= 1 else x
    g = torch.Generator().manual_seed(1234)
    if sample.is_floating_point():
        lo, hi = float(sample.min()), float(sample.max())
        span = hi - lo if hi > lo else 1.0
        rnd = torch.rand((batch, *sample.shape), generator=g).to(sample.dtype) * span + lo
        return rnd.to(sample.device)
    reps = [batch] + [1] * sample.dim()
    return sample.unsqueeze(0).repeat(*reps)


@contextmanager
def _probe_state(model: nn.Module) -> Iterator[None]:
    """Train mode with dropout off, global RNG and gradients untouched afterwards.

    Dropout modules are put in eval mode and their rate set to 0 for the probe: some
    models (``transformers`` attention) apply ``F.dropout`` with a dropout module's ``p``
    but their own training flag.
    """
    modes = [(m, m.training) for m in model.modules()]
    rates = [(m, m.p) for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    grads = [(p, p.grad) for p in model.parameters()]
    rng = torch.get_rng_state()
    try:
        for p, _ in grads:
            p.grad = None
        model.train()
        _dropout_off(model)
        yield
    finally:
        torch.set_rng_state(rng)
        for m, t in modes:
            m.training = t
        for d, rate in rates:
            d.p = rate
        for p, g in grads:
            p.grad = g


def _dropout_off(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
            m.p = 0.0


def _call(model: nn.Module, x: Any) -> torch.Tensor | None:
    """The first tensor of ``model(**x)`` for a mapping of inputs, of ``model(x)`` otherwise."""
    return first_tensor(model(**x) if isinstance(x, Mapping) else model(x))


def _batch_len(x: Any) -> int:
    t = first_tensor(dict(x) if isinstance(x, Mapping) else x)
    return int(t.shape[0]) if t is not None else 0


def _sample(x: Any, i: int) -> Any:
    if isinstance(x, Mapping):
        return {k: v[i : i + 1] for k, v in x.items()}
    return x[i : i + 1]


def _reference(model: nn.Module, x: Any, weights: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    rows: dict[nn.Parameter, list[torch.Tensor]] = {p: [] for p in params}
    for i in range(_batch_len(x)):
        out = _call(model, _sample(x, i))
        assert out is not None
        grads = torch.autograd.grad((out * weights[i : i + 1]).sum(), params, allow_unused=True)
        for p, g in zip(params, grads):
            rows[p].append(torch.zeros_like(p) if g is None else g)
    return {p: torch.stack(v) for p, v in rows.items()}


def verify_engine(
    name: str, model: nn.Module, x: Any, names: dict[int, str] | None = None, **options: Any
) -> str | None:
    """``None`` if engine ``name`` (with ``options``) gets ``model``'s per-sample gradients right on ``x``, else why not.

    ``x``: a batch, or a mapping of batches passed as keyword arguments.
    """
    names = names or {id(p): n for n, p in model.named_parameters()}
    with _probe_state(model), warnings.catch_warnings():
        out = _call(model, x)
        if out is None:
            return "the model's output is not a tensor"
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(99)).to(out.device, out.dtype)
        ref = _reference(model, x, w)
        engine = make_engine(name, **options)
        try:
            warnings.filterwarnings("ignore")  # inside catch_warnings (below): the probe's warnings are noise
            wrapped = engine.attach(model)
            wrapped.train()
            _dropout_off(model)
            out = _call(wrapped, x)
            assert out is not None
            torch.autograd.backward((out * w).sum().div(_batch_len(x)))
            psg = engine.collect()
            got = psg.materialize()
            implied = psg.implied_grads()
            autograd = {p: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for p in ref}
        except EngineUnsupported as exc:
            return str(exc)
        except (RuntimeError, ValueError, NotImplementedError, TypeError, IndexError) as exc:
            return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        finally:
            try:
                engine.detach()
            except (RuntimeError, AttributeError, AssertionError):
                pass
    bad = []
    # float32 noise scales with the largest gradient anywhere (a bias that a normalisation
    # layer cancels has an exactly-zero gradient, computed as +-1e-6)
    scale = max([float(r.abs().max()) for r in ref.values() if r.numel()] + [0.0])
    for p, r in ref.items():
        g = got.get(p)
        if g is None or g.shape != r.shape:
            bad.append(names.get(id(p), "?"))
            continue
        tol = 1e-3 * float(r.abs().max()) + 1e-5 * scale + 1e-7
        if float((g - r).abs().max()) > tol:
            bad.append(names.get(id(p), "?"))
    if bad:
        return "per-sample gradients differ from each sample run alone for: " + ", ".join(bad[:8])
    for p in ref:  # the per-sample gradients must also add up to the batch's gradient
        want = implied.get(p)
        if want is None:
            continue
        tol = 1e-3 * float(autograd[p].abs().max()) + 1e-5 * scale + 1e-7
        if float((want - autograd[p]).abs().max()) > tol:
            bad.append(names.get(id(p), "?"))
    if bad:
        return (
            "per-sample gradients differ from each sample run alone (they do not add up to the batch's gradient) "
            "for: " + ", ".join(bad[:8])
        )
    return None


def select_engine(model: nn.Module, mode: str, example: Any, *, order: tuple[str, ...] = AUTO_ORDER) -> EngineChoice:
    """The engine for ``mode`` (``auto`` or a name of :data:`~defenses.privacy.engines.ENGINES`).

    ``example``: a sample or batch of inputs (for the verification); ``None`` skips it
    (``EngineChoice.verified`` is then ``False``). ``order``: the engines ``auto`` tries, in
    order (augmentation multiplicity, which reads every per-sample gradient, has its own).
    """
    if mode != "auto":
        ENGINES.get(mode)  # unknown names: UnknownNameError listing the choices
    x = probe_inputs(example) if example is not None else None
    if x is not None:
        x = on_model_device(x, model)  # a data set on the CPU, a model on a GPU: the probe follows the model
    names = {id(p): n for n, p in model.named_parameters()}
    if x is None:
        first = order[0] if order else "bk"
        if mode == "auto":
            name = first if first != "bk" or not _bk_unsupported(model) else "hooks"
        else:
            name = mode
        return EngineChoice(make_engine(name), name, verified=False)
    candidates = order if mode == "auto" else (mode,)
    tried: dict[str, str] = {}
    for name in candidates:
        for options in VARIANTS.get(name, ({},)):
            why = verify_engine(name, model, x, names, **options)
            if why is None:
                return EngineChoice(make_engine(name, **options), name, tried, options=dict(options))
            tried[name] = why
    if mode != "auto":
        raise ModelError(
            f"grad_sample_mode {mode!r} cannot compute this model's per-sample gradients: {tried[mode]}. "
            "Use grad_sample_mode='auto' to pick one that can"
        )
    if "vmap" in tried and tried["vmap"].startswith("per-sample gradients differ"):
        raise ModelError(
            "the model mixes the samples of a batch (" + tried["vmap"] + "): each sample's output must depend "
            "on that sample only (no batch statistics, no cross-sample attention or pooling) for per-sample "
            "clipping to bound its influence"
        )
    detail = "; ".join(f"{k}: {v}" for k, v in tried.items())
    raise ModelError(f"no per-sample gradient engine can train this model ({detail})")


def _bk_unsupported(model: nn.Module) -> dict[str, str]:
    from defenses.privacy.engines.bk import BKEngine

    return BKEngine.unsupported(model)
