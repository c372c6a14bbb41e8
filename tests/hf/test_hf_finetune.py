"""DP fine-tuning of a tiny random BERT (hidden 32, 2 layers, from a config): full, head-only, LoRA.

Each run goes through the built-in loop (``fit``) or ``protect()``; the reported epsilon is
checked against Opacus's RDP accountant fed the run's own noise, sample rate and steps,
and the parameters that must stay frozen are checked bit for bit.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers", reason="Hugging Face tests need transformers: pip install 'securetrain[hf]'")
pytest.importorskip("peft", reason="Hugging Face tests need peft: pip install 'securetrain[hf]'")

from opacus.accountants import RDPAccountant  # noqa: E402

from defenses.privacy import DifferentialPrivacy  # noqa: E402
from securetrain.hf import (  # noqa: E402
    SequenceClassifier,
    model_output_loss,
    pack_inputs,
    prepare_finetuning,
    random_bert,
)
from securetrain.training import TrainConfig, fit, protect  # noqa: E402

VOCAB, LENGTH, N = 60, 12, 96
DELTA = 1e-3


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids, padding masks (random lengths) and labels (does token 7 occur in the unpadded part?)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, VOCAB, (N, LENGTH), generator=g)
    lengths = torch.randint(4, LENGTH + 1, (N,), generator=g)
    mask = (torch.arange(LENGTH)[None, :] < lengths[:, None]).long()
    y = torch.randint(0, 2, (N,), generator=g)
    pos = (torch.rand(N, generator=g) * (lengths - 1).float()).long()
    ids[y == 1, pos[y == 1]] = 7
    ids = ids * mask  # padding positions hold token 0
    return ids, mask, y


def _model(mode: str) -> torch.nn.Module:
    return prepare_finetuning(random_bert(2, hidden=32, layers=2, heads=2, vocab=VOCAB, max_length=32), mode)


def _rdp_epsilon(privacy: dict[str, object]) -> float:
    acc = RDPAccountant()
    acc.history = [(float(privacy["noise_multiplier"]), float(privacy["sample_rate"]), int(privacy["steps"]))]
    return float(acc.get_epsilon(delta=DELTA))


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    ("mode", "engine"),
    [("full", "vmap"), ("head", "bk"), ("lora", "bk")],
)
def test_dp_finetuning_in_the_training_loop(mode, engine):
    ids, mask, y = _data()
    hf = _model(mode)
    model = SequenceClassifier(hf)
    before = _snapshot(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    dp = DifferentialPrivacy(noise_multiplier=1.0, delta=DELTA, accountant="rdp", max_grad_norm=1.0)
    config = TrainConfig(data="hf-test", epochs=1, batch_size=24, lr=5e-3, progress=False)
    result = fit(model, (pack_inputs(ids, mask), y), None, config, [dp])

    privacy = result.sections["privacy"]
    assert dp.engine_name == engine  # chosen by "auto" after verification on this model
    assert privacy["valid"] is True
    assert privacy["steps"] == result.session.step_count > 0
    assert privacy["epsilon"] == pytest.approx(_rdp_epsilon(privacy), rel=1e-6)
    assert privacy["noise_multiplier"] == 1.0 and privacy["sample_rate"] == pytest.approx(24 / N)
    after = dict(result.model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed and changed <= trainable  # frozen parameters never move
    if mode == "head":
        assert trainable == {"model.classifier.weight", "model.classifier.bias"}
    if mode == "lora":
        assert all("lora_" in n or "modules_to_save" in n for n in trainable)
        assert any("lora_B" in n for n in changed)


def test_dp_lora_through_protect_with_mapping_batches_and_the_loss_adaptor():
    """A peft model used as it is: dict batches, ModelOutput results, model_output_loss."""
    ids, mask, y = _data(1)
    model = _model("lora")
    items = [({"input_ids": ids[i], "attention_mask": mask[i]}, y[i]) for i in range(N)]
    loader = torch.utils.data.DataLoader(items, batch_size=24)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    dp = DifferentialPrivacy(noise_multiplier=1.2, max_epsilon=5.0, delta=DELTA, accountant="rdp", epochs=2)
    model.train()
    with protect(model, opt, loader, [dp], loss_fn=model_output_loss) as session:
        for _ in range(2):
            for x, target in session.train_loader:
                if not session.can_step():
                    break
                session.optimizer.zero_grad()
                session.loss(x, target).backward()
                session.step()
            session.end_epoch()
    privacy = session.report()["privacy"]
    assert dp.engine_name == "bk"
    assert privacy["valid"] is True and privacy["steps"] == session.step_count > 0
    assert privacy["epsilon"] == pytest.approx(_rdp_epsilon(privacy), rel=1e-6)
    assert privacy["epsilon"] <= 5.0 + 1e-9


def test_padding_does_not_change_logits_or_per_sample_gradients():
    """What sits under the padding mask has no influence on a sample's logits or its gradient."""
    ids, mask, y = _data(2)
    model = SequenceClassifier(_model("full"))
    model.eval()
    x = pack_inputs(ids[:4], mask[:4])
    other = ids[:4].clone()
    other[mask[:4] == 0] = 5
    x2 = pack_inputs(other, mask[:4])
    assert torch.equal(model(x), model(x2))
    grads = []
    for inputs in (x, x2):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs[:1]), y[:1]).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.equal(grads[0], grads[1])
    assert bool((mask[:4] == 0).any())  # the data really has padding
