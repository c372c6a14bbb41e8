"""Which parameters of a Hugging Face classifier train: all, the head only, or LoRA adapters.

:func:`prepare_finetuning` takes a ``transformers`` sequence classifier and a mode from
:data:`FINETUNE_MODES`:

* ``full``: every parameter trains;
* ``head``: only the classification head (by default the model's top-level submodule
  called ``classifier``, ``pre_classifier``, ``score`` or ``classification_head``);
  everything else is frozen (``requires_grad=False``);
* ``lora``: the base model is frozen and low-rank adapters (``peft``'s LoRA: two
  ``nn.Linear`` per adapted layer) plus the head are trained.

Frozen parameters are constants to every per-sample gradient engine: they are neither
clipped nor noised, and only trained parameters count in the clipping norm. The result is
a plain ``nn.Module``; wrap it in :class:`~securetrain.hf.SequenceClassifier` to train it.

Example:
    >>> from torch import nn
    >>> class Tiny(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.encoder, self.classifier = nn.Linear(4, 4), nn.Linear(4, 2)
    >>> model = prepare_finetuning(Tiny(), "head")
    >>> [n for n, p in model.named_parameters() if p.requires_grad]
    ['classifier.weight', 'classifier.bias']
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from securetrain.errors import ConfigurationError, ModelError
from securetrain.registry import Registry

DEFAULT_HEADS = ("classifier", "pre_classifier", "score", "classification_head")
"""Top-level submodule names that hold the classification head in ``transformers`` models."""


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapters (``peft``): rank ``r``, scaling ``alpha / r``, dropout, layers to adapt.

    ``target_modules=None`` lets ``peft`` choose its default layers for the architecture
    (the attention's query and value projections for BERT).
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ConfigurationError(f"LoRA rank r must be an integer >= 1, got {self.r!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int) or self.alpha < 1:
            raise ConfigurationError(f"LoRA alpha must be an integer >= 1, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigurationError(f"LoRA dropout must lie in [0, 1), got {self.dropout!r}")


FinetuneMode = Callable[[nn.Module, tuple[str, ...], LoraSettings], nn.Module]
FINETUNE_MODES: Registry[FinetuneMode] = Registry("fine-tuning mode")


def _head_modules(model: nn.Module, head: tuple[str, ...]) -> list[nn.Module]:
    children = dict(model.named_children())
    found = [children[n] for n in head if n in children]
    if not found:
        raise ModelError(
            f"no classification head among the model's top-level modules (looked for {', '.join(head)}; "
            f"it has {', '.join(children) or 'none'}); pass head=('name',) to prepare_finetuning"
        )
    return found


@FINETUNE_MODES.register("full")
def _full(model: nn.Module, head: tuple[str, ...], lora: LoraSettings) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


@FINETUNE_MODES.register("head")
def _head(model: nn.Module, head: tuple[str, ...], lora: LoraSettings) -> nn.Module:
    modules = _head_modules(model, head)
    for p in model.parameters():
        p.requires_grad_(False)
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(True)
    return model


@FINETUNE_MODES.register("lora")
def _lora(model: nn.Module, head: tuple[str, ...], lora: LoraSettings) -> nn.Module:
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError as exc:
        raise ConfigurationError(
            "LoRA fine-tuning needs peft: pip install 'securetrain[hf]' (installs transformers and peft)"
        ) from exc
    present = [n for n, _ in model.named_children() if n in head]
    _head_modules(model, head)  # refuses a model without a head
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules) if lora.target_modules is not None else None,
        modules_to_save=present,
    )
    with warnings.catch_warnings():
        # transformers 5 warns about its own deprecated helper when peft calls it
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        try:
            wrapped: nn.Module = get_peft_model(model, config)
        except ValueError as exc:
            raise ModelError(f"LoRA could not be applied to this model: {exc}") from exc
    return wrapped


def prepare_finetuning(
    model: nn.Module,
    mode: str = "full",
    *,
    head: Sequence[str] = DEFAULT_HEADS,
    lora: LoraSettings | None = None,
) -> nn.Module:
    """``model`` set up for fine-tuning in ``mode`` (``full``, ``head`` or ``lora``; see the module doc).

    ``full`` and ``head`` change ``requires_grad`` in place and return ``model``; ``lora``
    returns a ``peft`` model around it. ``head``: the names of the top-level submodules
    that form the classification head. Raises ``UnknownNameError`` for an unknown mode and
    :class:`~securetrain.errors.ModelError` for a model without such a head.
    """
    apply = FINETUNE_MODES.get(mode)
    if lora is not None and mode != "lora":
        raise ConfigurationError(f"LoRA settings were given but the mode is {mode!r}; use mode='lora'")
    return apply(model, tuple(head), lora or LoraSettings())


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` numbers of parameters of ``model``."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


__all__ = ["DEFAULT_HEADS", "FINETUNE_MODES", "LoraSettings", "count_trainable", "prepare_finetuning"]
