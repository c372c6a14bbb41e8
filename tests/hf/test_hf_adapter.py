"""securetrain.hf without a model download: inputs, masks, losses, fine-tuning modes, loading errors."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import securetrain.hf
from securetrain.errors import ConfigurationError, DataError, DataNotFoundError, ModelError
from securetrain.hf import (
    SequenceClassifier,
    load_pretrained,
    model_output_loss,
    pack_inputs,
    prepare_finetuning,
    random_bert,
    unpack_inputs,
)


def test_securetrain_hf_imports_transformers_and_peft_only_inside_functions() -> None:
    """The core imports without the [hf] extra: no module-level import of transformers or peft."""
    root = Path(securetrain.hf.__file__).parent
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only (functions import them lazily)
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] in {"transformers", "peft"} for n in names), path.name


def test_missing_transformers_is_a_configuration_error_saying_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'securetrain\[hf\]'"):
        random_bert()


def test_inputs_are_packed_checked_and_unpacked() -> None:
    ids, mask = torch.tensor([[3, 4, 0]]), torch.tensor([[1, 1, 0]])
    packed = pack_inputs(ids, mask)
    got_ids, got_mask = unpack_inputs(packed)
    assert torch.equal(got_ids, ids) and torch.equal(got_mask, mask)
    assert torch.equal(unpack_inputs(ids)[1], torch.ones_like(ids))
    with pytest.raises(DataError, match="attention_mask must hold only 0"):
        pack_inputs(ids, torch.tensor([[1, 2, 0]]))
    with pytest.raises(DataError, match="attention_mask must have the shape of input_ids"):
        pack_inputs(ids, torch.ones(1, 4))
    with pytest.raises(DataError, match=r"packed as \(batch, 2, length\)"):
        unpack_inputs(torch.zeros(2, 3, 4))


def test_token_losses_are_per_sample_means_over_unpadded_labelled_positions() -> None:
    class Fixed(nn.Module):
        def __init__(self, logits: torch.Tensor) -> None:
            super().__init__()
            self.logits = logits

        def forward(self, input_ids: torch.Tensor, **masks: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": self.logits}

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, generator=g)
    y = torch.tensor([[0, 1, 2, -100], [2, 2, 1, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    losses = model_output_loss(Fixed(logits), {"input_ids": y.clamp(min=0), "attention_mask": mask}, y)
    ce = torch.nn.functional.cross_entropy
    want0 = ce(logits[0, :3], y[0, :3])  # the -100 label is not counted
    want1 = ce(logits[1, :2], y[1, :2])  # nor the padded positions
    torch.testing.assert_close(losses, torch.stack([want0, want1]))
    seq = model_output_loss(Fixed(logits[:, 0]), {"input_ids": y, "attention_mask": mask}, torch.tensor([1, 2]))
    torch.testing.assert_close(seq, ce(logits[:, 0], torch.tensor([1, 2]), reduction="none"))
    with pytest.raises(DataError, match="token logits"):
        model_output_loss(Fixed(logits), {"input_ids": y}, torch.tensor([1, 2]))


def test_fine_tuning_modes_set_what_trains() -> None:
    pytest.importorskip("transformers", reason="needs transformers: pip install 'securetrain[hf]'")
    full = prepare_finetuning(random_bert(2, vocab=50, max_length=16), "full")
    assert all(p.requires_grad for p in full.parameters())
    head = prepare_finetuning(random_bert(2, vocab=50, max_length=16), "head")
    assert {n for n, p in head.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}
    with pytest.raises(ModelError, match="no classification head among the model's top-level modules"):
        prepare_finetuning(nn.Sequential(nn.Linear(2, 2)), "head")
    with pytest.raises(ConfigurationError, match="use mode='lora'"):
        from securetrain.hf import LoraSettings

        prepare_finetuning(random_bert(2, vocab=50, max_length=16), "head", lora=LoraSettings())


def test_the_additive_mask_gives_the_models_own_masked_logits() -> None:
    pytest.importorskip("transformers", reason="needs transformers: pip install 'securetrain[hf]'")
    raw = random_bert(3, vocab=50, max_length=16).eval()
    ids = torch.randint(1, 50, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    want = raw(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(SequenceClassifier(raw)(pack_inputs(ids, mask)), want)
    torch.testing.assert_close(SequenceClassifier(raw, additive_mask=False)(pack_inputs(ids, mask)), want)


def test_loading_refuses_missing_directories_and_pickled_weights(tmp_path) -> None:
    pytest.importorskip("transformers", reason="needs transformers: pip install 'securetrain[hf]'")
    with pytest.raises(DataNotFoundError, match="no model directory at"):
        load_pretrained(tmp_path / "missing")
    model = random_bert(2, vocab=50, max_length=16)
    model.save_pretrained(str(tmp_path / "m"))
    loaded = load_pretrained(tmp_path / "m", num_labels=2)
    assert torch.equal(loaded.classifier.weight, model.classifier.weight)
    (tmp_path / "m" / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(ModelError, match="pickled .bin weights are not read"):
        load_pretrained(tmp_path / "m")
