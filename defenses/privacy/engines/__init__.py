"""Per-sample gradient engines, by name (the ``grad_sample_mode`` option).

=========  ===========================================================================
``bk``     book-keeping (ours): norms from activations and output gradients, one backward
``ghost``  ``bk`` picking, per layer, what needs less memory (ghost norms for large layers)
``hooks``  Opacus ``GradSampleModule`` (Opacus's default)
``functorch``  Opacus with ``torch.func`` per layer
``ew``     PyTorch ExpandedWeights through Opacus
``vmap``   ``torch.func`` over the whole model: any per-sample model, slowest
=========  ===========================================================================

``auto`` (see :mod:`defenses.privacy.modes`) picks the first of ``bk``, ``hooks``, ``vmap``
whose per-sample gradients match an independent per-sample computation on the model.

Example:
    >>> from defenses.privacy.engines import make_engine
    >>> make_engine("ghost").policy
    'ghost'
"""

from __future__ import annotations

from collections.abc import Callable

from defenses.privacy.engines.base import (
    EmptyGrads,
    Engine,
    EngineUnsupported,
    HookToggle,
    PerSampleGrads,
    StepTap,
    trainable_leaf_modules,
)
from defenses.privacy.engines.bk import BKEngine, GhostEngine, register_layer
from defenses.privacy.engines.opacus_gsm import EWEngine, FunctorchEngine, HooksEngine
from defenses.privacy.engines.vmap import VmapEngine
from securetrain.registry import Registry

ENGINES: Registry[Callable[[], Engine]] = Registry("grad_sample_mode")
ENGINES.add("bk", BKEngine)
ENGINES.add("ghost", GhostEngine)
ENGINES.add("hooks", HooksEngine)
ENGINES.add("functorch", FunctorchEngine)
ENGINES.add("ew", EWEngine)
ENGINES.add("vmap", VmapEngine)


def make_engine(name: str, **options: object) -> Engine:
    """A fresh engine registered as ``name`` (raises ``UnknownNameError`` listing the choices)."""
    return ENGINES.get(name)(**options)


__all__ = [
    "ENGINES",
    "BKEngine",
    "EWEngine",
    "EmptyGrads",
    "Engine",
    "EngineUnsupported",
    "FunctorchEngine",
    "GhostEngine",
    "HookToggle",
    "HooksEngine",
    "PerSampleGrads",
    "StepTap",
    "VmapEngine",
    "make_engine",
    "register_layer",
    "trainable_leaf_modules",
]
