"""Hugging Face ``transformers`` models with securetrain: DP fine-tuning, full, head-only or LoRA.

Installed with ``pip install 'securetrain[hf]'`` (``transformers`` and ``peft``); this
package imports neither until a function that needs them runs.

* :class:`SequenceClassifier` makes a ``transformers`` classifier a plain
  ``model(x) -> logits`` module over packed token ids and padding masks, so the training
  loop (``securetrain.training.fit``), ``protect()``, the per-sample gradient engines and
  the audits take it like any other model;
* :func:`prepare_finetuning` chooses what trains: ``full``, ``head`` or ``lora`` (peft);
* :func:`model_output_loss` is the per-sample loss for a model used as it is (mapping
  inputs, ``ModelOutput`` results, padding left out of token-level losses);
* :func:`load_pretrained`, :func:`load_tokenizer`, :func:`encode_texts` read a model from a
  local directory; :func:`random_bert` builds a small random one.

Example:
    >>> from securetrain.hf import FINETUNE_MODES
    >>> sorted(FINETUNE_MODES.names())
    ['full', 'head', 'lora']
"""

from __future__ import annotations

from securetrain.hf.adapter import SequenceClassifier, output_logits, pack_inputs, padding_bias, unpack_inputs
from securetrain.hf.finetune import (
    DEFAULT_HEADS,
    FINETUNE_MODES,
    LoraSettings,
    count_trainable,
    prepare_finetuning,
)
from securetrain.hf.loading import (
    check_model_dir,
    encode_texts,
    import_transformers,
    load_pretrained,
    load_tokenizer,
    random_bert,
)
from securetrain.hf.loss import IGNORE_INDEX, call_model, model_output_loss

__all__ = [
    "DEFAULT_HEADS",
    "FINETUNE_MODES",
    "IGNORE_INDEX",
    "LoraSettings",
    "SequenceClassifier",
    "call_model",
    "check_model_dir",
    "count_trainable",
    "encode_texts",
    "import_transformers",
    "load_pretrained",
    "load_tokenizer",
    "model_output_loss",
    "output_logits",
    "pack_inputs",
    "padding_bias",
    "prepare_finetuning",
    "random_bert",
    "unpack_inputs",
]
