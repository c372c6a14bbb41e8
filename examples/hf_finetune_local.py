"""Differentially private fine-tuning of a Hugging Face model stored in a local directory.

You have a sequence classifier's weights on disk (a folder written by ``save_pretrained``
with ``config.json``, ``model.safetensors`` and the tokenizer files, e.g. one you
downloaded with ``huggingface-cli download bert-base-uncased --local-dir ./bert``). This
script fine-tunes it with DP-SGD in the built-in training loop: the whole model
(``--mode full``), only its classification head (``--mode head``) or LoRA adapters
through ``peft`` (``--mode lora``), and prints accuracy, epsilon and the per-sample
gradient engine that ``auto`` picked. securetrain never downloads anything; pickled
``.bin`` weights are not read.

The texts are a small template-generated sentiment set so the script runs anywhere; put
your own ``(texts, labels)`` in ``load_texts``.

Run it:
    pip install 'securetrain[hf]'
    python examples/hf_finetune_local.py --model-dir ./bert --mode lora --epsilon 3
    # no weights at hand? write a tiny random BERT first (accuracy is then near chance):
    python examples/hf_finetune_local.py --write-random-model ./tiny-bert
    python examples/hf_finetune_local.py --model-dir ./tiny-bert --mode lora
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from defenses.privacy import DifferentialPrivacy
from securetrain.hf import (
    SequenceClassifier,
    count_trainable,
    encode_texts,
    load_pretrained,
    load_tokenizer,
    prepare_finetuning,
    random_bert,
)
from securetrain.training import TrainConfig, fit

POSITIVE = ["great", "wonderful", "good", "moving", "brilliant", "fun"]
NEGATIVE = ["awful", "boring", "bad", "dull", "terrible", "weak"]
TEMPLATES = ["the movie was {}", "a {} film", "the plot is {} and the acting {}", "what a {} story"]
FILLER = ["the", "a", "movie", "film", "was", "is", "plot", "and", "acting", "what", "story"]


def load_texts(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """``n`` short reviews and their labels (1 = positive)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randrange(2)
        words = POSITIVE if label else NEGATIVE
        template = rng.choice(TEMPLATES)
        texts.append(template.format(*(rng.choice(words) for _ in range(template.count("{}")))))
        labels.append(label)
    return texts, labels


def write_random_model(path: Path) -> None:
    """A tiny random BERT and a word-level tokenizer for the template vocabulary, saved to ``path``."""
    from transformers import BertTokenizer

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, *POSITIVE, *NEGATIVE]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(str(path / "vocab.txt")).save_pretrained(str(path))
    random_bert(2, hidden=32, layers=2, heads=2, vocab=len(vocab), max_length=64).save_pretrained(str(path))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="folder written by save_pretrained()")
    parser.add_argument("--write-random-model", type=Path, metavar="DIR", help="write a tiny random BERT and exit")
    parser.add_argument("--mode", choices=["full", "head", "lora"], default="lora")
    parser.add_argument("--epsilon", type=float, default=3.0)
    parser.add_argument("--noise-multiplier", type=float, help="fix the noise instead of calibrating to --epsilon")
    parser.add_argument("--accountant", choices=["prv", "rdp"], default="prv")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args(argv)
    if args.write_random_model is not None:
        write_random_model(args.write_random_model)
        return {"written": str(args.write_random_model)}
    if args.model_dir is None:
        parser.error("--model-dir is required (or --write-random-model DIR)")

    torch.manual_seed(0)
    model = prepare_finetuning(load_pretrained(args.model_dir, num_labels=2), args.mode)
    tokenizer = load_tokenizer(args.model_dir)
    texts, labels = load_texts(args.samples)
    x = encode_texts(tokenizer, texts, max_length=args.max_length)
    y = torch.tensor(labels)
    split = int(0.8 * len(texts))
    dp = DifferentialPrivacy(
        epsilon=None if args.noise_multiplier is not None else args.epsilon,
        noise_multiplier=args.noise_multiplier,
        max_epsilon=args.epsilon if args.noise_multiplier is not None else None,
        delta=1e-5,
        max_grad_norm=1.0,
        accountant=args.accountant,
    )
    config = TrainConfig(data="texts", epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, progress=False)
    result = fit(SequenceClassifier(model), (x[:split], y[:split]), (x[split:], y[split:]), config, [dp])
    trainable, total = count_trainable(model)
    privacy = result.sections["privacy"]
    summary = {
        "mode": args.mode,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "engine": dp.engine_name,
        "test_accuracy": result.history[-1].get("test_accuracy"),
        "epsilon": privacy["epsilon"],
        "delta": privacy["delta"],
        "valid": privacy["valid"],
        "steps": privacy["steps"],
    }
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
