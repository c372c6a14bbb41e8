"""``attacks.membership.audit``: the one-call membership audit of a user's own model and recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import securetrain
from attacks.membership import TrainingRecipe, audit, audit_membership_run
from securetrain import data
from securetrain.errors import AttackError
from securetrain.training import TrainConfig

# only what describes the call differs between the two audits
_DESCRIBING = ("design", "timing_s")


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bc_user_audit")
    securetrain.train(TrainConfig(data="breast_cancer", epochs=3, progress=False), d, write_html=False)
    return d


def _strip(section: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in section.items() if k not in _DESCRIBING}


def test_the_one_call_audit_equals_the_run_directory_audit_on_the_same_recipe(bc_run: Path) -> None:
    """A user's train_fn that happens to be the run's recipe gives the run audit's section, figure for figure."""
    recipe = TrainingRecipe.from_run(bc_run)

    def train_fn(dataset: TensorDataset, seed: int) -> nn.Module:
        x, y = dataset.tensors
        return recipe((x, y), seed)

    members, non_members = data.load("breast_cancer", "train"), data.load("breast_cancer", "test")
    ours = audit(securetrain.load_model(bc_run), train_fn, members, non_members, shadow_models=2, canaries=40)
    theirs = audit_membership_run(bc_run, shadow_models=2, seed=0, canaries=40)
    assert _strip(ours) == _strip(theirs)
    assert ours["shadow_models"] == 2 and ours["canary"]["canaries"] == 40
    assert "train_fn" in ours["design"] and "privacy_violated" not in ours  # no epsilon claimed


def _linear_recipe(dataset: TensorDataset, seed: int) -> nn.Module:
    from securetrain.training import fit

    torch.manual_seed(seed)
    return fit(nn.Linear(4, 2), dataset.tensors, None, TrainConfig(epochs=2, progress=False, seed=seed)).model


def _sets() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(80, 4, generator=g), torch.randint(0, 2, (80,), generator=g)
    return (x[:40], y[:40]), (x[40:], y[40:])


def test_a_claimed_epsilon_is_checked_and_datasets_are_accepted() -> None:
    members, non_members = _sets()
    model = _linear_recipe(TensorDataset(*members), 0)
    out = audit(
        model,
        _linear_recipe,
        TensorDataset(*members),  # map-style Datasets work as well as (x, y)
        TensorDataset(*non_members),
        shadow_models=1,
        attacks=("loss", "lira-offline"),
        canaries=0,
        epsilon=2.0,
    )
    assert isinstance(out["privacy_violated"], bool) and "consistency" in out
    assert out["canary"] is None and set(out["attacks"]) == {"loss", "lira-offline"}
    # alpha split between the two bounds
    assert all(a["bound"]["confidence"] == pytest.approx(1 - 0.05 / 2) for a in out["attacks"].values())


def test_bad_calls_are_refused_before_training() -> None:
    members, non_members = _sets()
    model = nn.Linear(4, 2)
    calls: list[int] = []

    def counting(dataset: TensorDataset, seed: int) -> nn.Module:
        calls.append(seed)
        return nn.Linear(4, 2)

    with pytest.raises(AttackError, match=r"train_fn must be callable as train_fn\(dataset, seed\)"):
        audit(model, lambda dataset: model, members, non_members)  # type: ignore[arg-type,return-value]
    with pytest.raises(AttackError, match=r"members must be \(x, y\) tensors or a map-style Dataset"):
        audit(model, counting, members[0], non_members)  # type: ignore[arg-type]
    with pytest.raises(AttackError, match=r"num_classes must be an integer above the largest label \(1\)"):
        audit(model, counting, members, non_members, num_classes=1)
    with pytest.raises(AttackError, match=r"the number of shadow models must be at least 1"):
        audit(model, counting, members, non_members, shadow_models=0)
    with pytest.raises(AttackError, match=r"members and non-members overlap"):
        audit(model, counting, members, members, shadow_models=1, attacks=("loss",), canaries=0)
    assert calls == []
    with pytest.raises(AttackError, match=r"train_fn returned a str; it must return the trained nn.Module"):
        audit(model, lambda dataset, seed: "model", members, non_members, shadow_models=1)  # type: ignore[arg-type,return-value]
