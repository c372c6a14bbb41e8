"""Single-process pieces of distributed training: sampling, argument hand-over, errors, no-op behaviour."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch.utils.data import BatchSampler, RandomSampler

from securetrain.distributed import (
    ShardedBatchSampler,
    ShardedPoissonSampler,
    get_context,
    init_process_group,
    resolve_context,
    shard_indices,
)
from securetrain.distributed.launch import argv_from_namespace, check_nproc, describe_failures, torchrun_argv
from securetrain.distributed.sampling import collate_or_empty
from securetrain.distributed.sync import parameter_fingerprint
from securetrain.errors import ConfigurationError


def test_shares_are_disjoint_balanced_and_cover_the_batch():
    batch = list(range(100, 111))
    for world in (1, 2, 3, 4):
        shares = [shard_indices(batch, r, world) for r in range(world)]
        assert sorted(sum(shares, [])) == batch
        sizes = [len(s) for s in shares]
        assert max(sizes) - min(sizes) <= 1
    assert shard_indices([7], 1, 2) == []  # fewer samples than ranks: an empty share


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_poisson_union_is_the_single_process_draw(world):
    def shares(rank: int, w: int) -> list[list[int]]:
        return list(
            ShardedPoissonSampler(
                500, 0.05, steps=20, rank=rank, world_size=w, generator=torch.Generator().manual_seed(4)
            )
        )

    single = shares(0, 1)
    per_rank = [shares(r, world) for r in range(world)]
    for step, whole in enumerate(single):
        parts = [per_rank[r][step] for r in range(world)]
        assert sorted(sum(parts, [])) == whole
        assert all(set(a).isdisjoint(b) for i, a in enumerate(parts) for b in parts[i + 1 :])


def test_sharded_poisson_takes_each_sample_at_the_global_rate():
    n, q, steps = 200, 0.1, 400
    counts = torch.zeros(n)
    for rank in (0, 1):
        for idx in ShardedPoissonSampler(
            n, q, steps=steps, rank=rank, world_size=2, generator=torch.Generator().manual_seed(1)
        ):
            counts[idx] += 1
    rate = counts / steps
    # union over ranks: every sample joins each global batch with probability q (3 sigma per sample)
    assert float(rate.mean()) == pytest.approx(q, abs=0.005)
    assert float((rate - q).abs().max()) < 3 * (q * (1 - q) / steps) ** 0.5 * 1.6


def test_sharded_batch_sampler_splits_the_single_process_batches():
    def batches(rank: int, world: int):
        g = torch.Generator().manual_seed(2)
        return list(ShardedBatchSampler(BatchSampler(RandomSampler(range(21), generator=g), 8, False), rank, world))

    g = torch.Generator().manual_seed(2)
    single = list(BatchSampler(RandomSampler(range(21), generator=g), 8, False))
    r0, r1 = batches(0, 2), batches(1, 2)
    assert len(r0) == len(r1) == len(single) == 3
    assert [sorted(a + b) for a, b in zip(r0, r1)] == [sorted(b) for b in single]


def test_empty_share_collates_to_empty_tensors():
    ds = torch.utils.data.TensorDataset(torch.zeros(5, 2, 3), torch.zeros(5, dtype=torch.long))
    x, y = collate_or_empty(ds)([])
    assert x.shape == (0, 2, 3) and y.shape == (0,)
    x, y = collate_or_empty(ds)([ds[0], ds[1]])
    assert x.shape == (2, 2, 3)


def test_the_privacy_samplers_own_sharding_keeps_this_ranks_share_and_undoes():
    from defenses.privacy.sampling import PoissonBatches
    from securetrain.errors import PrivacyError

    ds = torch.utils.data.TensorDataset(torch.arange(10.0).unsqueeze(1), torch.zeros(10, dtype=torch.long))
    batches = PoissonBatches(ds, sample_rate=1.0, steps_per_epoch=1, generator=torch.Generator().manual_seed(0))
    batches.shard(1, 3)
    assert batches.logical_indices().tolist() == [1, 4, 7]
    batches.shard(0, 1)
    assert batches.logical_indices().tolist() == list(range(10))
    with pytest.raises(PrivacyError, match=r"rank must be in \[0, world_size\), got rank=3, world_size=3"):
        batches.shard(3, 3)


def test_poisson_draw_is_shared_by_both_samplers():
    from defenses.privacy.sampling import PoissonBatches
    from securetrain.distributed.sampling import ShardedPoissonSampler, poisson_draw

    ds = torch.utils.data.TensorDataset(torch.zeros(50, 1), torch.zeros(50, dtype=torch.long))
    a = PoissonBatches(ds, sample_rate=0.2, steps_per_epoch=1, generator=torch.Generator().manual_seed(3))
    b = ShardedPoissonSampler(50, 0.2, steps=1, generator=torch.Generator().manual_seed(3))
    c = poisson_draw(50, 0.2, torch.Generator().manual_seed(3))
    assert a.logical_indices().tolist() == b.global_indices().tolist() == c.tolist()


def test_fingerprint_sees_a_one_ulp_change():
    m = torch.nn.Linear(4, 3)
    before = parameter_fingerprint(m)
    with torch.no_grad():
        m.weight[1, 2] = torch.nextafter(m.weight[1, 2], torch.tensor(10.0))
    assert not torch.equal(before, parameter_fingerprint(m))


def test_single_process_context_and_errors(monkeypatch):
    ctx = get_context()
    assert (ctx.rank, ctx.world_size, ctx.active, ctx.is_main) == (0, 1, False, True)
    assert resolve_context(None) is ctx and resolve_context(False).world_size == 1
    with pytest.raises(ConfigurationError, match=r"distributed=True but this process is not part of a process group"):
        resolve_context(True)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(
        ConfigurationError, match=r"no process group to join: RANK, WORLD_SIZE.*torchrun --nproc-per-node N"
    ):
        init_process_group()
    with pytest.raises(ConfigurationError, match=r"unknown distributed backend 'mpi'; choose one of: auto, gloo, nccl"):
        init_process_group("mpi", rank=0, world_size=1, init_method="tcp://127.0.0.1:1")
    with pytest.raises(ConfigurationError, match=r"give both rank= and world_size="):
        init_process_group(rank=0)
    with pytest.raises(ConfigurationError, match=r"rank must be in \[0, world_size\), got rank=2, world_size=2"):
        init_process_group("gloo", rank=2, world_size=2, init_method="tcp://127.0.0.1:1")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigurationError, match=r"the nccl backend needs CUDA GPUs"):
            init_process_group("nccl", rank=0, world_size=1, init_method="tcp://127.0.0.1:1")


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_nproc_must_be_a_positive_whole_number(bad):
    with pytest.raises(ConfigurationError, match=r"--nproc must be a whole number of processes >= 1"):
        check_nproc(bad)


def test_cli_refuses_a_bad_nproc(capsys, tmp_path):
    from securetrain.cli.main import main

    assert (
        main(["train", "--data", "breast_cancer", "--epochs", "1", "--out", str(tmp_path / "r"), "--nproc", "0"]) == 2
    )
    assert "--nproc must be a whole number of processes >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_train_arguments_survive_the_hand_over_to_the_workers():
    from securetrain.cli.main import build_parser

    parser = build_parser()
    argv = [
        "train",
        "--data",
        "breast_cancer",
        "--epochs",
        "3",
        "--dp",
        "--epsilon",
        "2.5",
        "--lr",
        "-0.5",
        "--model-kwargs",
        '{"hidden": [8]}',
        "--adversarial",
        "fgsm",
        "--adv-eps",
        "0.1",
        "--out",
        "x y",
        "--nproc",
        "2",
        "--no-html",
    ]
    args = parser.parse_args(argv)
    handed = argv_from_namespace(args._train_parser, args, skip={"nproc"})
    assert not any(a.startswith("--nproc") for a in handed)
    again = parser.parse_args(["train", *handed])
    for key, value in vars(args).items():
        if key not in ("nproc", "_train_parser", "func"):
            assert getattr(again, key) == value, key
    assert again.nproc is None


def test_argv_from_namespace_covers_the_argparse_actions():
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("--flag", action="store_true")
    p.add_argument("--off", action="store_false")
    p.add_argument("--tag", action="append")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("--pair", nargs=2, type=int)
    argv = ["run", "--flag", "--off", "--tag", "a", "--tag=-b", "-vv", "--pair", "1", "2"]
    ns = p.parse_args(argv)
    assert vars(p.parse_args(argv_from_namespace(p, ns))) == vars(ns)


def test_torchrun_line_and_failure_message():
    assert torchrun_argv(["train"], 3) == [
        "--standalone",
        "--nproc-per-node",
        "3",
        "--max-restarts",
        "0",
        "-m",
        "securetrain.cli.main",
        "train",
    ]
    msg = describe_failures([(0, 1, None, 10, 2.0), (1, -9, "SIGKILL", 11, 2.0)], 2)
    assert msg.startswith("distributed training failed: worker rank 1 (pid 11) was killed by signal SIGKILL; ")
    assert "rank 0 (pid 10) then exited with status 1" in msg
