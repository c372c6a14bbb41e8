"""Two processes on CPU with gloo: the distributed run is the single-process run of the same global schedule.

One spawned job (2 ranks) runs every scenario, to pay the start-up once; the single-process
references are computed in the test process. Each rank saves what it measured; the tests
compare ranks with each other and with the references.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from securetrain import data as st_data
from securetrain.checkpoint import load_state, save_state

from ..helpers import InterruptAfter, Interrupted
from . import result_path, run_workers

pytestmark = pytest.mark.timeout(400)

NOISE = 1.0  # noise multiplier of the private runs
BATCH = 64  # global (logical) batch
SIGMA, CLIP, NOISE_BATCH, NOISE_STEPS = 2.0, 0.5, 40, 10  # the noise-measurement run: one epoch of 400 samples


def _data():
    from securetrain import data

    return data.load("breast_cancer", "train"), data.load("breast_cancer", "test")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 2))


def _config(epochs: int = 2, optimizer: str = "sgd"):
    from securetrain.training import TrainConfig

    return TrainConfig(
        data="breast_cancer",
        epochs=epochs,
        batch_size=BATCH,
        optimizer=optimizer,
        lr=0.1,
        momentum=0.0,
        seed=3,
        progress=False,
    )


def _dp(physical_batch_size=None):
    from defenses.privacy import DifferentialPrivacy

    return DifferentialPrivacy(
        noise_multiplier=NOISE, max_grad_norm=1.0, accountant="rdp", delta=1e-5, physical_batch_size=physical_batch_size
    )


def _pgd():
    from defenses.adversarial import PGDAdversarialTraining

    return PGDAdversarialTraining(epsilon=0.3, steps=2)


def _fit(defenses, *, distributed, epochs=2, optimizer="sgd", checkpoint=None, resume=False, callbacks=()):
    from securetrain.training import fit

    train, test = _data()
    return fit(
        _model(),
        train,
        test,
        _config(epochs, optimizer),
        defenses,
        num_classes=2,
        bounds=(-12.0, 12.0),
        distributed=distributed,
        checkpoint_path=checkpoint,
        resume=resume,
        callbacks=callbacks,
    )


def _summary(result) -> dict:
    privacy = result.sections.get("privacy") or {}
    return {
        "params": {k: v.detach().clone() for k, v in result.model.state_dict().items()},
        "epsilon": privacy.get("epsilon"),
        "steps": result.session.step_count,
        "privacy_steps": privacy.get("steps"),
        "sample_rate": privacy.get("sample_rate"),
        "valid": privacy.get("valid"),
        "train_loss": [h["train_loss"] for h in result.history],
        "test_accuracy": [h["test_accuracy"] for h in result.history],
        "world_sizes": [h.get("world_size", 1) for h in result.history],
        "replica_checks": (result.distributed or {}).get("replica_checks", 0),
        "world_size": result.world_size,
    }


def _noise_run(rank: int) -> dict:
    """Zero per-sample gradients: every parameter change of plain SGD (lr 1) is noise / B."""
    from defenses.privacy import DifferentialPrivacy
    from securetrain.distributed import distribute
    from securetrain.training import protect

    torch.manual_seed(0)
    model = nn.Linear(50, 20, bias=False)
    x_all = torch.randn(400, 50)
    x_all[:, 0] = torch.arange(400.0)  # the first feature names the sample
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x_all, torch.zeros(400, dtype=torch.long)), batch_size=NOISE_BATCH
    )
    # no seed given: each rank seeds its sampler from its own global generator, seeded differently here;
    # distribute() must give every rank rank 0's sampler state
    torch.manual_seed(100 + rank)
    dp = DifferentialPrivacy(noise_multiplier=SIGMA, max_grad_norm=CLIP, accountant="rdp", steps=NOISE_STEPS)
    session = protect(
        model, torch.optim.SGD(model.parameters(), lr=1.0), loader, [dp], loss_fn=lambda m, x, y: m(x).sum(1) * 0.0
    ).__enter__()
    handle = distribute(session)
    deltas, shares = [], []
    try:
        batches = iter(session.train_loader)
        while len(deltas) < NOISE_STEPS:
            x, y = next(batches)
            shares.append([int(i) for i in x[:, 0].tolist()])
            before = model.weight.detach().clone()
            session.optimizer.zero_grad()
            session.loss(x, y).backward()
            session.step()
            deltas.append(model.weight.detach() - before)
        handle.finish()
    finally:
        handle.detach()
        session.teardown()
    return {
        "deltas": torch.stack(deltas),
        "steps": dp.steps_taken,
        "expected_batch": dp.expected_batch_size,
        "shares": shares,
    }


def _unsharded_loader_error(rank: int) -> str:
    from securetrain.distributed import DistributedError, distribute
    from securetrain.training import protect

    model = nn.Linear(3, 2)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(8, 3), torch.zeros(8, dtype=torch.long)), batch_size=4
    )
    session = protect(model, torch.optim.SGD(model.parameters(), lr=0.1), loader).__enter__()
    try:
        distribute(session)
    except DistributedError as exc:
        return str(exc)
    return ""


def _scenarios(rank: int, out: str, checkpoint: str) -> None:
    save_state(result_path(out, rank, "private"), _summary(_fit([_dp()], distributed=True)))
    save_state(
        result_path(out, rank, "private_physical"), _summary(_fit([_dp(physical_batch_size=8)], distributed=True))
    )
    save_state(result_path(out, rank, "plain"), _summary(_fit([], distributed=True, optimizer="adam")))
    save_state(result_path(out, rank, "private_adversarial"), _summary(_fit([_dp(), _pgd()], distributed=True)))
    save_state(result_path(out, rank, "noise"), _noise_run(rank))
    save_state(
        result_path(out, rank, "resumed"),
        _summary(_fit([_dp()], distributed=True, epochs=3, checkpoint=checkpoint, resume=True)),
    )
    save_state(result_path(out, rank, "errors"), {"unsharded": _unsharded_loader_error(rank)})


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """Run every scenario on 2 processes; return a loader of each rank's results."""
    out = tmp_path_factory.mktemp("two_process")
    checkpoint = out / "one_process.safetensors"
    # the single-process run that the 2-process job resumes: interrupted after epoch 1 of 3
    with pytest.raises(Interrupted):
        _fit([_dp()], distributed=False, epochs=3, checkpoint=checkpoint, callbacks=[InterruptAfter(1)])
    run_workers(_scenarios, 2, str(out), str(checkpoint), timeout=300)

    def load(name: str) -> list[dict]:
        return [load_state(result_path(out, r, name)) for r in (0, 1)]

    return load


def _assert_replicas_identical(ranks: list[dict]) -> None:
    assert ranks[0]["params"].keys() == ranks[1]["params"].keys()
    for k in ranks[0]["params"]:
        assert torch.equal(ranks[0]["params"][k], ranks[1]["params"][k]), f"{k} differs between ranks"


def _n_train() -> int:
    return len(st_data.load("breast_cancer", "train")[1])


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_private_run_on_two_processes_is_the_one_process_run(job):
    ranks = job("private")
    single = _summary(_fit([_dp()], distributed=False))
    _assert_replicas_identical(ranks)
    # the replicas were compared after every one of the steps, on both ranks
    assert ranks[0]["replica_checks"] == ranks[0]["steps"] == single["steps"] > 0
    assert ranks[0]["world_size"] == 2 and ranks[0]["world_sizes"] == [2, 2]
    # the accountant followed the global schedule: same sample rate, steps and epsilon
    assert ranks[0]["sample_rate"] == single["sample_rate"] == BATCH / _n_train()
    assert ranks[0]["privacy_steps"] == single["privacy_steps"]
    assert ranks[0]["epsilon"] == ranks[1]["epsilon"] == single["epsilon"]
    assert ranks[0]["valid"] is True
    # same global Poisson batches and the same noise draws (added once, on rank 0):
    # the models agree up to float summation order
    assert _max_diff(ranks[0]["params"], single["params"]) < 1e-5
    assert ranks[0]["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=1e-6)
    assert ranks[0]["train_loss"] == pytest.approx(single["train_loss"], rel=1e-5)


def test_physical_batches_split_differently_per_rank_still_make_one_step(job):
    # shares of about 32 cut into chunks of 8: the ranks run different numbers of backward passes
    # per logical step, yet synchronise once per step and train the unsplit single-process model
    ranks = job("private_physical")
    single = job("private")
    _assert_replicas_identical(ranks)
    assert ranks[0]["privacy_steps"] == ranks[0]["replica_checks"] == single[0]["privacy_steps"]
    assert ranks[0]["epsilon"] == single[0]["epsilon"]
    assert _max_diff(ranks[0]["params"], single[0]["params"]) < 1e-5


def test_plain_run_on_two_processes_is_the_one_process_run(job):
    ranks = job("plain")
    single = _summary(_fit([], distributed=False, optimizer="adam"))
    _assert_replicas_identical(ranks)
    assert ranks[0]["steps"] == single["steps"] == math.ceil(_n_train() / BATCH) * 2
    assert _max_diff(ranks[0]["params"], single["params"]) < 1e-5
    assert ranks[0]["train_loss"] == pytest.approx(single["train_loss"], rel=1e-5)


def test_private_adversarial_run_keeps_replicas_and_global_accounting(job):
    ranks = job("private_adversarial")
    private = job("private")
    _assert_replicas_identical(ranks)
    assert ranks[0]["replica_checks"] == ranks[0]["steps"] > 0
    # adversarial examples spend no budget: same schedule, same epsilon as private training alone
    assert ranks[0]["epsilon"] == ranks[1]["epsilon"] == private[0]["epsilon"]
    assert ranks[0]["valid"] is True
    # and the adversarial loss did change the training
    assert _max_diff(ranks[0]["params"], private[0]["params"]) > 1e-3


def test_noise_is_added_once_per_global_step(job):
    ranks = job("noise")
    assert torch.equal(ranks[0]["deltas"], ranks[1]["deltas"])
    assert int(ranks[0]["steps"]) == NOISE_STEPS and int(ranks[0]["expected_batch"]) == NOISE_BATCH
    deltas = ranks[0]["deltas"].double()  # NOISE_STEPS x 20 x 50 draws of noise / B
    expected = SIGMA * CLIP / NOISE_BATCH
    assert float(deltas.std()) / expected == pytest.approx(1.0, abs=0.05)  # sqrt(2) if both ranks added noise
    assert abs(float(deltas.mean())) < 4 * expected / math.sqrt(deltas.numel())
    # the ranks trained on disjoint shares of one global Poisson batch per step
    for a, b in zip(ranks[0]["shares"], ranks[1]["shares"]):
        assert not set(a) & set(b)
        assert abs(len(a) - len(b)) <= 1
    sizes = [len(a) + len(b) for a, b in zip(ranks[0]["shares"], ranks[1]["shares"])]
    assert 0.5 * NOISE_BATCH < sum(sizes) / len(sizes) < 1.5 * NOISE_BATCH
    # a fresh draw every step: consecutive steps are uncorrelated (sample correlation of n independent
    # pairs has standard deviation ~1/sqrt(n); 4.5 of them is a false alarm once in ~150,000 runs)
    flat = deltas.reshape(NOISE_STEPS, -1)
    assert abs(float(torch.corrcoef(flat)[0, 1])) < 4.5 / flat.shape[1] ** 0.5


def test_resume_on_two_processes_continues_a_one_process_run(job):
    ranks = job("resumed")
    uninterrupted = _summary(_fit([_dp()], distributed=False, epochs=3))
    _assert_replicas_identical(ranks)
    assert ranks[0]["world_sizes"] == [1, 2, 2]  # epoch 1 on one process, then two
    assert ranks[0]["privacy_steps"] == uninterrupted["privacy_steps"]
    assert ranks[0]["epsilon"] == uninterrupted["epsilon"]  # the budget continued, not restarted
    assert _max_diff(ranks[0]["params"], uninterrupted["params"]) < 1e-5


def test_a_loader_that_is_not_sharded_is_refused(job):
    for r in job("errors"):
        assert (
            "cannot tell how session.train_loader (DataLoader) splits the data across the 2 processes" in r["unsharded"]
        )
