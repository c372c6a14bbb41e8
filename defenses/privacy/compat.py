"""Make a model trainable with per-sample gradients, or say exactly why it is not.

Layers that mix the samples of a batch or keep statistics of the training data break
per-sample clipping. Opacus registers replacements for the usual ones and this module
applies them *in place* (the model object you hold is the one that trains):

* ``BatchNorm*`` -> ``GroupNorm`` (batch statistics mix samples; frozen BatchNorm too;
  ``BatchNorm1d`` gets one group, a layer norm over the features),
* ``nn.LSTM`` / ``nn.GRU`` -> Opacus ``DPLSTM`` / ``DPGRU`` (same weights),
* ``nn.MultiheadAttention`` -> Opacus ``DPMultiheadAttention`` (same weights),
* ``InstanceNorm`` with running statistics -> without them.

Anything else that cannot be handled (a trainable layer that also keeps buffers, for
instance) is refused with :class:`~securetrain.errors.ModelError` naming every offending
module and the fix. When layers are replaced, the optimizer is rebuilt over the new
parameters (same class, same settings).

Example:
    >>> from torch import nn
    >>> from defenses.privacy.compat import make_compatible
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    >>> changes = make_compatible(model)
    >>> type(model[1]).__name__, changes[0].split(":")[0]
    ('GroupNorm', '1')
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from defenses.privacy.engines.base import trainable_leaf_modules
from securetrain.errors import ModelError, PrivacyError


def _fixers() -> tuple[dict[type, object], dict[type, object]]:
    import opacus.validators  # noqa: F401  (registers Opacus's validators and fixers)
    from opacus.validators import ModuleValidator

    return ModuleValidator.VALIDATORS, ModuleValidator.FIXERS


def _is_batchnorm(m: nn.Module) -> bool:
    return isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm))


def _needs_fix(m: nn.Module, validators: dict[type, object]) -> list[str]:
    if _is_batchnorm(m):
        return ["batch statistics mix the samples of a batch"]
    validator = validators.get(type(m))
    if validator is None:
        return []
    was = m.training
    try:
        m.train()
        return [str(e) for e in validator(m)]  # type: ignore[operator]
    finally:
        m.train(was)


def _describe(m: nn.Module) -> str:
    text = repr(m)
    return text if len(text) <= 80 else text[:77] + "..."


def diagnose(model: nn.Module) -> tuple[dict[str, str], dict[str, str]]:
    """``(fixable, unsupported)``: ``{module name: why}`` for layers to replace and layers refused."""
    validators, fixers = _fixers()
    fixable: dict[str, str] = {}
    unsupported: dict[str, str] = {}
    for name, m in model.named_modules():
        problems = _needs_fix(m, validators)
        if not problems:
            continue
        label = name or "(root)"
        if type(m) in fixers or _is_batchnorm(m):
            fixable[label] = f"{type(m).__name__}: {problems[0]}"
        else:
            unsupported[label] = f"{type(m).__name__}: {problems[0]}"
    fixed_names = set(fixable)
    for name, m in trainable_leaf_modules(model):
        label = name or "(root)"
        if label in fixed_names or label in unsupported:
            continue
        if any(True for _ in m.buffers(recurse=False)):
            unsupported[label] = (
                f"{type(m).__name__} has trainable parameters and buffers (state computed from the training "
                "data that DP-SGD does not protect)"
            )
    return fixable, unsupported


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parts = name.split(".")
    parent = model
    for p in parts[:-1]:
        parent = parent._modules[p]  # type: ignore[assignment]
    return parent, parts[-1]


def make_compatible(model: nn.Module, *, fix: bool = True) -> list[str]:
    """Replace fixable layers of ``model`` in place; return what changed (``"name: old -> new"``).

    Raises :class:`ModelError` listing every layer that cannot be used (and, with
    ``fix=False``, every layer that would need replacing).
    """
    fixable, unsupported = diagnose(model)
    if unsupported:
        lines = "; ".join(f"{k} ({v})" for k, v in unsupported.items())
        raise ModelError(
            f"the model has layers that differential privacy cannot train: {lines}. Replace them with "
            "layers without training-data statistics (GroupNorm/LayerNorm instead of BatchNorm-like layers), "
            "or freeze them (requires_grad=False and no buffers)"
        )
    if fixable and not fix:
        lines = "; ".join(f"{k} ({v})" for k, v in fixable.items())
        raise ModelError(
            f"the model has layers that must be replaced for differential privacy: {lines}. Pass fix_model=True "
            "(the default) to replace them automatically (BatchNorm -> GroupNorm, LSTM -> DPLSTM, "
            "MultiheadAttention -> DPMultiheadAttention)"
        )
    if "(root)" in fixable:
        raise ModelError(
            f"the model itself is a {type(model).__name__}, which must be replaced for differential privacy; "
            "wrap it in a container (nn.Sequential(model)) so it can be replaced in place"
        )
    _, fixers = _fixers()
    changes: list[str] = []
    for name in fixable:
        parent, attr = _parent(model, name)
        old = parent._modules[attr]
        assert old is not None
        fixer = fixers.get(type(old))
        if fixer is None:  # BatchNorm subclasses: Opacus's BatchNorm fixer
            fixer = fixers[nn.BatchNorm2d]
        if isinstance(old, nn.BatchNorm1d):
            # (batch, features) inputs have no spatial extent: one group (a layer norm over the
            # features) instead of Opacus's min(32, C) groups, which may hold a single value each
            new = fixer(old, num_groups=1)  # type: ignore[operator]
        else:
            new = fixer(old)  # type: ignore[operator]
        ref: torch.Tensor | None = next(iter(old.parameters()), None)
        if ref is None:
            ref = next(iter(old.buffers()), None)
        if ref is not None:
            new = new.to(ref.device)
        new.train(old.training)
        old_params = list(old.parameters())
        if old_params and not any(p.requires_grad for p in old_params):
            new.requires_grad_(False)  # a frozen layer stays frozen (e.g. the pretrained features of a run)
        parent._modules[attr] = new
        changes.append(f"{name}: {_describe(old)} -> {_describe(new)}")
    return changes


def rebuild_optimizer(
    optimizer: torch.optim.Optimizer, model: nn.Module, old_params: Sequence[nn.Parameter]
) -> torch.optim.Optimizer:
    """The same optimizer over ``model``'s parameters after layers were replaced.

    Parameters that survived keep their group; new parameters join the first group.
    Optimizer state (momentum) of replaced parameters is lost, so call this before training.
    """
    current = {id(p): p for p in model.parameters()}
    kept_ids: set[int] = set()
    groups = []
    for g in optimizer.param_groups:
        params = [p for p in g["params"] if id(p) in current]
        kept_ids.update(id(p) for p in params)
        groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": params})
    new = [p for p in model.parameters() if id(p) not in kept_ids and p.requires_grad]
    if groups:
        groups[0]["params"] = list(groups[0]["params"]) + new
    groups = [g for g in groups if g["params"]]
    try:
        rebuilt = type(optimizer)(groups, **optimizer.defaults)
    except TypeError as exc:
        raise PrivacyError(
            f"could not rebuild the {type(optimizer).__name__} optimizer after replacing layers ({exc}); call "
            "defenses.privacy.make_compatible(model) before creating the optimizer"
        ) from exc
    if any(optimizer.state.get(p) for p in old_params):
        for p in model.parameters():
            if p in optimizer.state:
                rebuilt.state[p] = optimizer.state[p]
    return rebuilt
