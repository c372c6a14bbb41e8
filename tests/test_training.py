from __future__ import annotations

import pytest
import torch
from torch import nn

from securetrain.errors import CheckpointError, ConfigurationError, DataError, ModelError
from securetrain.models import build_model
from securetrain.training import Defense, TrainConfig, fit, protect
from tests.helpers import InterruptAfter, Interrupted


def test_digits_cnn_learns(digits):
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10)
    result = fit(model, digits[0], digits[1], TrainConfig(epochs=5, progress=False), num_classes=10)
    assert result.history[-1]["test_accuracy"] >= 0.95
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resume_matches_uninterrupted_run(tmp_path, digits, optimizer):
    train, test = (digits[0][0][:400], digits[0][1][:400]), digits[1]
    cfg = TrainConfig(epochs=4, batch_size=32, optimizer=optimizer, progress=False, model_kwargs={})

    def run(ckpt, callbacks=(), resume=False):
        torch.manual_seed(0)
        model = build_model("mlp", (1, 8, 8), 10, dropout=0.2)  # dropout: the global RNG matters too
        return fit(model, train, test, cfg, checkpoint_path=ckpt, resume=resume, callbacks=callbacks, num_classes=10)

    full = run(tmp_path / "a.safetensors")
    with pytest.raises(Interrupted):
        run(tmp_path / "b.safetensors", callbacks=[InterruptAfter(2)])
    resumed = run(tmp_path / "b.safetensors", resume=True)
    assert resumed.resumed_from_epoch == 2
    for p, q in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(p, q)
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]


def test_resume_refuses_changed_settings(tmp_path, digits):
    train = (digits[0][0][:128], digits[0][1][:128])
    ckpt = tmp_path / "c.safetensors"
    fit(
        build_model("mlp", (1, 8, 8), 10),
        train,
        None,
        TrainConfig(epochs=1, progress=False),
        checkpoint_path=ckpt,
        num_classes=10,
    )
    with pytest.raises(CheckpointError, match=r"different settings for batch_size"):
        fit(
            build_model("mlp", (1, 8, 8), 10),
            train,
            None,
            TrainConfig(epochs=2, batch_size=16, progress=False),
            checkpoint_path=ckpt,
            resume=True,
            num_classes=10,
        )


def test_data_that_does_not_fit_the_model(digits):
    model = build_model("mlp", (30,), 2)
    with pytest.raises(ModelError, match=r"the model does not accept inputs of shape \(1, 8, 8\)"):
        fit(model, digits[0], None, TrainConfig(epochs=1, progress=False), num_classes=10)
    with pytest.raises(ModelError, match=r"must return logits of shape \(batch, 10\).*got \(2, 2\)"):
        fit(build_model("mlp", (1, 8, 8), 2), digits[0], None, TrainConfig(epochs=1, progress=False), num_classes=10)


def test_bad_training_data(digits):
    x, y = digits[0]
    x = x[:32].clone()
    x[3, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match=r"training data: 1 input\(s\) contain NaN"):
        fit(build_model("mlp", (1, 8, 8), 10), (x, y[:32]), None, TrainConfig(epochs=1, progress=False), num_classes=10)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 4\] for 5 classes"):
        fit(build_model("mlp", (1, 8, 8), 5), digits[0], None, TrainConfig(epochs=1, progress=False), num_classes=5)


def test_bad_config():
    with pytest.raises(ConfigurationError, match="epochs must be at least 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigurationError, match="lr must be positive"):
        TrainConfig(lr=-1)
    with pytest.raises(KeyError, match="unknown optimizer 'rmsprop'; choose one of: adam, sgd"):
        TrainConfig(optimizer="rmsprop")


class _Budget(Defense):
    """A toy defense: scales the loss, vetoes after N steps, keeps state, reports a section."""

    name = "budget-test"
    order = 0

    def __init__(self, max_steps: int, scale: float = 1.0) -> None:
        self.max_steps = max_steps
        self.scale = scale
        self.steps = 0
        self.events: list[str] = []

    def setup(self, session):
        self.events.append("setup")

    def wrap_loss(self, loss_fn):
        def scaled(model, x, y):
            return self.scale * loss_fn(model, x, y)

        return scaled

    def before_step(self, session):
        if self.steps >= self.max_steps:
            session.stop_reason = f"budget of {self.max_steps} steps spent"
            return False
        return True

    def after_step(self, session):
        self.steps += 1

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]

    def report(self, session):
        return {"budget": {"steps": self.steps}}

    def teardown(self, session):
        self.events.append("teardown")


class _Doubler(Defense):
    name = "double-test"

    def wrap_loss(self, loss_fn):
        return lambda model, x, y: 2.0 * loss_fn(model, x, y)


def test_defenses_compose_veto_and_report(digits):
    train = (digits[0][0][:256], digits[0][1][:256])
    budget = _Budget(max_steps=5, scale=0.5)
    result = fit(
        build_model("mlp", (1, 8, 8), 10),
        train,
        None,
        TrainConfig(epochs=3, batch_size=32, progress=False),
        [_Doubler(), budget],
        num_classes=10,
    )
    assert result.session.step_count == 5 and budget.steps == 5
    assert result.session.stop_reason == "budget of 5 steps spent"
    assert result.sections == {"budget": {"steps": 5}}
    assert budget.events == ["setup", "teardown"]
    assert len(result.history) == 1  # stopped inside the first epoch (8 batches)


def test_loss_transforms_chain_in_order():
    model = nn.Linear(3, 2)
    loader = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))]
    with protect(
        model, torch.optim.SGD(model.parameters(), lr=0.1), loader, [_Doubler(), _Budget(10, scale=0.25)]
    ) as session:
        x, y = loader[0]
        base = nn.functional.cross_entropy(model(x), y)
        assert torch.allclose(session.loss(x, y), 0.5 * base)


def test_protect_in_a_hand_written_loop_matches_plain_sgd():
    torch.manual_seed(0)
    a = nn.Linear(3, 2)
    b = nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    data = [(torch.randn(8, 3), torch.randint(0, 2, (8,))) for _ in range(3)]
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    for x, y in data:
        opt_a.zero_grad()
        nn.functional.cross_entropy(a(x), y).backward()
        opt_a.step()
    with protect(b, torch.optim.SGD(b.parameters(), lr=0.1), data) as session:
        for x, y in session.train_loader:
            assert session.can_step()
            session.optimizer.zero_grad()
            session.loss(x, y).backward()
            session.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q)


def test_duplicate_defense_refused():
    with pytest.raises(ConfigurationError, match="each defense may be used once; repeated: double-test"):
        protect(nn.Linear(2, 2), torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), [], [_Doubler(), _Doubler()])


def test_per_sample_loss_shape_is_checked():
    model = nn.Linear(3, 2)
    with protect(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        [],
        loss_fn=lambda m, x, y: nn.functional.cross_entropy(m(x), y),
    ) as session:
        with pytest.raises(
            ValueError, match=r"a per-sample loss must have shape \(4,\), got \(\); use reduction='none'"
        ):
            session.loss(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))


def test_fit_refuses_to_resume_a_checkpoint_with_other_defenses(tmp_path, digits):
    from defenses.privacy import DifferentialPrivacy

    small = (digits[0][0][:128], digits[0][1][:128])
    cfg = TrainConfig(epochs=1, batch_size=32, progress=False)
    ckpt = tmp_path / "ckpt.safetensors"
    fit(build_model("mlp", (1, 8, 8), 10), small, None, cfg, checkpoint_path=ckpt)
    before = ckpt.read_bytes()
    with pytest.raises(CheckpointError, match=r"trained with defenses \[none\], this run has \[privacy\]"):
        fit(
            build_model("mlp", (1, 8, 8), 10),
            small,
            None,
            TrainConfig(epochs=2, batch_size=32, progress=False),
            [DifferentialPrivacy(epsilon=3.0, accountant="rdp")],
            checkpoint_path=ckpt,
            resume=True,
        )
    assert ckpt.read_bytes() == before
