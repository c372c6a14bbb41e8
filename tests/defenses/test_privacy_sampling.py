"""Poisson sampling: inclusion probabilities, physical splitting, empty batches, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from defenses.privacy import DifferentialPrivacy
from defenses.privacy.sampling import PoissonBatches
from securetrain.errors import PrivacyError
from securetrain.training import protect


class DictDataset(Dataset):
    """A map-style data set that is not a TensorDataset (the generic collate path)."""

    def __init__(self, n: int) -> None:
        self.x = torch.arange(n, dtype=torch.float32).unsqueeze(1)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int):
        return {"x": self.x[i], "i": i}


def test_each_sample_joins_each_batch_with_the_sample_rate():
    n, q, steps = 200, 0.1, 400
    ds = TensorDataset(torch.arange(n).float().unsqueeze(1), torch.zeros(n, dtype=torch.long))
    batches = PoissonBatches(ds, sample_rate=q, steps_per_epoch=steps, generator=torch.Generator().manual_seed(0))
    counts = torch.zeros(n)
    sizes = []
    for x, _ in batches:
        counts[x.squeeze(1).long()] += 1
        sizes.append(x.shape[0])
    assert len(sizes) == steps
    # batch size ~ Binomial(n, q): mean n q = 20, sd sqrt(n q (1 - q)) ~ 4.2; the mean of 400 within 4 sd of its sd
    assert abs(sum(sizes) / steps - n * q) < 4 * math.sqrt(n * q * (1 - q) / steps)
    # every sample's inclusion frequency ~ q (sd sqrt(q (1-q) / steps) = 0.015); all within 5 sd
    assert float((counts / steps - q).abs().max()) < 5 * math.sqrt(q * (1 - q) / steps)
    assert len(set(sizes)) > 5  # sizes vary


def test_physical_batches_split_a_logical_batch_and_flag_its_end():
    n = 100
    ds = TensorDataset(torch.arange(n).float().unsqueeze(1), torch.zeros(n, dtype=torch.long))
    flags: list[bool] = []
    phys = PoissonBatches(
        ds,
        sample_rate=0.5,
        steps_per_epoch=4,
        generator=torch.Generator().manual_seed(1),
        physical_batch_size=8,
        on_batch=flags.append,
    )
    whole = PoissonBatches(ds, sample_rate=0.5, steps_per_epoch=4, generator=torch.Generator().manual_seed(1))
    chunks = [x.squeeze(1) for x, _ in phys]
    logical = [x.squeeze(1) for x, _ in whole]
    assert all(c.shape[0] <= 8 for c in chunks)
    assert flags.count(True) == 4 and flags[-1] is True
    rebuilt, cur = [], []
    for c, last in zip(chunks, flags):
        cur.append(c)
        if last:
            rebuilt.append(torch.cat(cur))
            cur = []
    assert [r.tolist() for r in rebuilt] == [lg.tolist() for lg in logical]
    assert len(phys) == 4 * math.ceil(50 / 8)


def test_generic_datasets_and_empty_batches():
    ds = DictDataset(30)
    batches = PoissonBatches(ds, sample_rate=0.02, steps_per_epoch=50, generator=torch.Generator().manual_seed(2))
    got = list(batches)
    empties = [b for b in got if b["x"].shape[0] == 0]
    assert empties and all(b["x"].shape == (0, 1) for b in empties)
    full = [b for b in got if b["x"].shape[0] > 0]
    assert all(torch.equal(b["x"].squeeze(1).long(), b["i"]) for b in full)


def test_the_same_generator_state_draws_the_same_batches():
    ds = TensorDataset(torch.arange(50).float().unsqueeze(1))
    g = torch.Generator().manual_seed(3)
    b = PoissonBatches(ds, sample_rate=0.2, steps_per_epoch=5, generator=g)
    state = g.get_state()
    first = [x.squeeze(1).tolist() for (x,) in b]
    g.set_state(state)
    assert [x.squeeze(1).tolist() for (x,) in b] == first


def test_a_bad_sample_rate_is_refused():
    ds = TensorDataset(torch.zeros(10, 1))
    with pytest.raises(PrivacyError, match=r"sample_rate must be in \(0, 1\], got 1.5"):
        PoissonBatches(ds, sample_rate=1.5, steps_per_epoch=1, generator=torch.Generator())


@pytest.mark.parametrize("mode", ["bk", "hooks", "ew", "vmap"])
def test_training_through_empty_batches_counts_every_step(mode):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(20, 3), torch.randint(0, 2, (20,)))
    model = nn.Sequential(nn.Linear(3, 2))
    dp = DifferentialPrivacy(noise_multiplier=1.0, accountant="rdp", grad_sample_mode=mode, seed=0)
    with protect(model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(data, batch_size=1), [dp]) as session:
        sizes = []
        for _ in range(2):
            for x, y in session.train_loader:
                sizes.append(x.shape[0])
                session.optimizer.zero_grad()
                session.loss(x, y).backward()
                session.step()
    assert 0 in sizes and dp.steps_taken == len(sizes) == 40
    assert dp.report(session)["privacy"]["valid"] is True
