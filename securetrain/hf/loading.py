"""Hugging Face models from a local directory (never downloaded), and small random ones.

:func:`load_pretrained` reads a model saved with ``save_pretrained`` (or downloaded by
you beforehand) from a directory: ``local_files_only`` (nothing is fetched) and
``use_safetensors`` (weights are never unpickled). :func:`load_tokenizer` reads its
tokenizer the same way and :func:`encode_texts` turns texts into the packed
``(B, 2, L)`` ids-and-mask tensor that :class:`~securetrain.hf.SequenceClassifier` takes.
:func:`random_bert` builds a BERT classifier from a config with random weights (tests,
benchmarks and examples; no download).

``transformers`` is imported when one of these functions runs, not on import; without it
they raise :class:`~securetrain.errors.ConfigurationError` saying what to install.

Example:
    >>> from securetrain.hf.loading import check_model_dir
    >>> check_model_dir("/nonexistent/model")
    Traceback (most recent call last):
    ...
    securetrain.errors.DataNotFoundError: no model directory at /nonexistent/model: ...
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from securetrain.errors import ConfigurationError, DataError, DataNotFoundError, ModelError
from securetrain.hf.adapter import pack_inputs

INSTALL_HINT = "pip install 'securetrain[hf]' (installs transformers and peft)"


def import_transformers() -> ModuleType:
    """The ``transformers`` module, or a :class:`ConfigurationError` saying how to install it."""
    try:
        import transformers
    except ImportError as exc:
        raise ConfigurationError(f"Hugging Face support needs transformers: {INSTALL_HINT}") from exc
    return transformers


def check_model_dir(path: str | Path) -> Path:
    """``path`` as a ``Path`` if it is a directory with a ``config.json``, else :class:`DataNotFoundError`."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DataNotFoundError(
            f"no model directory at {p}: pass the folder written by save_pretrained() (models are never "
            "downloaded by securetrain; fetch the weights yourself first)"
        )
    if not (p / "config.json").is_file():
        raise DataNotFoundError(f"{p} has no config.json: it is not a directory written by save_pretrained()")
    return p


def load_pretrained(path: str | Path, num_labels: int | None = None, **kwargs: Any) -> nn.Module:
    """A sequence classifier from the local directory ``path`` (``AutoModelForSequenceClassification``).

    ``num_labels`` sets the size of the classification head (a new, randomly initialised
    head when it differs from the saved one). Only ``model.safetensors`` weights are read.
    Extra ``kwargs`` go to ``from_pretrained``.
    """
    p = check_model_dir(path)
    transformers = import_transformers()
    if num_labels is not None:
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 2:
            raise ConfigurationError(f"num_labels must be an integer >= 2, got {num_labels!r}")
        kwargs["num_labels"] = num_labels
    try:
        model: nn.Module = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(p), local_files_only=True, use_safetensors=True, **kwargs
        )
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot load a sequence classifier from {p}: {str(exc).splitlines()[0]} (the directory needs "
            "config.json and model.safetensors; pickled .bin weights are not read)"
        ) from exc
    return model


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved in the local directory ``path`` (``AutoTokenizer``, nothing downloaded)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DataNotFoundError(f"no tokenizer directory at {p}")
    transformers = import_transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise DataNotFoundError(f"cannot load a tokenizer from {p}: {str(exc).splitlines()[0]}") from exc


def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int = 128) -> torch.Tensor:
    """``texts`` tokenized, padded and truncated to ``max_length``, packed as ``(B, 2, max_length)``."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise DataError("texts must be a sequence of strings")
    if not texts:
        raise DataError("texts is empty")
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=int(max_length), return_tensors="pt")
    return pack_inputs(enc["input_ids"], enc["attention_mask"])


def random_bert(
    num_labels: int = 2,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int | None = None,
    vocab: int = 1000,
    max_length: int = 128,
    dropout: float = 0.1,
    seed: int = 0,
) -> nn.Module:
    """A ``BertForSequenceClassification`` with random weights built from a config (no download).

    ``random_bert(hidden=512, layers=4, heads=8)`` has the shape of BERT-small.
    """
    transformers = import_transformers()
    config = transformers.BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate if intermediate is not None else 4 * hidden,
        max_position_embeddings=max_length,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        num_labels=num_labels,
    )
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model: nn.Module = transformers.BertForSequenceClassification(config)
    finally:
        torch.random.set_rng_state(state)
    return model


__all__ = [
    "INSTALL_HINT",
    "check_model_dir",
    "encode_texts",
    "import_transformers",
    "load_pretrained",
    "load_tokenizer",
    "random_bert",
]
