"""Hugging Face fine-tuning with differential privacy: step time and memory against non-private.

A BERT classifier with random weights (BERT-small's shape by default: hidden 512, 4 layers,
8 heads, vocabulary 30522, sequences of 128 tokens) is fine-tuned in two ways, ``full``
(every parameter) and ``lora`` (peft LoRA adapters on the attention's query and value,
rank 8, plus the head). For each, on the same batch and interleaving the steps so that
all see the same machine load:

* ``non-private``: zero_grad, forward, cross-entropy, backward, Adam step;
* ``securetrain``: the same through ``protect()`` with ``DifferentialPrivacy`` and its
  ``auto`` engine (verified on the model; the one it picked is reported), clipping,
  noise, accounting and the validity monitor included;
* ``opacus-hooks`` and ``opacus-ghost``: Opacus's ``PrivacyEngine.make_private`` with
  ``grad_sample_mode="hooks"`` / ``"ghost"`` (fixed batches, no Poisson sampling); a
  mode that fails on the model is reported with its error.

Step time is the median CPU time of the (single) torch thread, robust to other jobs on a
shared machine (wall time reported too); memory is the peak of the running sum of
allocations recorded by ``torch.profiler(profile_memory=True)`` during one step. Both are
reported as ratios to the non-private step of the same fine-tuning mode, measured in the
same run. Results go to ``benchmarks/results/hf.json``.

    python benchmarks/bench_hf.py                                   # BERT-small shape
    python benchmarks/bench_hf.py --hidden 128 --layers 2 --heads 2 --vocab 4000 --batch 8
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import save_results, table  # noqa: E402

from defenses.privacy import DifferentialPrivacy  # noqa: E402
from defenses.privacy.memory import cpu_peak_bytes  # noqa: E402
from securetrain.hf import LoraSettings, SequenceClassifier, pack_inputs, prepare_finetuning, random_bert  # noqa: E402
from securetrain.training import protect  # noqa: E402

Step = Callable[[], None]


_peak_bytes = cpu_peak_bytes  # the same measure as the memory budget of --max-memory-mb


def _model(args: argparse.Namespace, mode: str) -> SequenceClassifier:
    hf = random_bert(
        2, hidden=args.hidden, layers=args.layers, heads=args.heads, vocab=args.vocab, max_length=args.seq, seed=0
    )
    lora = LoraSettings(r=8, alpha=16, target_modules=("query", "value")) if mode == "lora" else None
    return SequenceClassifier(prepare_finetuning(hf, mode, lora=lora))


def _batch(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, args.vocab, (args.batch, args.seq), generator=g)
    lengths = torch.randint(args.seq // 2, args.seq + 1, (args.batch,), generator=g)
    mask = (torch.arange(args.seq)[None, :] < lengths[:, None]).long()
    return pack_inputs(ids * mask, mask), torch.randint(0, 2, (args.batch,), generator=g)


def _plain(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Step:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def _securetrain(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, stack: list[Any]) -> tuple[Step, str]:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loader = DataLoader(TensorDataset(x, y), batch_size=x.shape[0])
    dp = DifferentialPrivacy(noise_multiplier=1.0, max_grad_norm=1.0, accountant="rdp", seed=0)
    model.train()
    session = protect(model, opt, loader, [dp])
    session.__enter__()
    stack.append(session)

    def step() -> None:
        session.optimizer.zero_grad(set_to_none=True)
        session.loss(x, y).backward()
        session.step()

    return step, str(dp.engine_name)


def _opacus(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str) -> Step:
    from opacus import PrivacyEngine

    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loader = DataLoader(TensorDataset(x, y), batch_size=x.shape[0])
    engine = PrivacyEngine(accountant="rdp")
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    if mode == "ghost":
        wrapped, dp_opt, dp_crit, _ = engine.make_private(
            module=model,
            optimizer=opt,
            data_loader=loader,
            criterion=criterion,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            poisson_sampling=False,
            grad_sample_mode="ghost",
        )

        def ghost_step() -> None:
            dp_opt.zero_grad(set_to_none=True)
            dp_crit(wrapped(x), y).backward()
            dp_opt.step()

        return ghost_step
    wrapped, dp_opt, _ = engine.make_private(
        module=model,
        optimizer=opt,
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        poisson_sampling=False,
        grad_sample_mode=mode,
    )

    def hooks_step() -> None:
        dp_opt.zero_grad(set_to_none=True)
        criterion(wrapped(x), y).backward()
        dp_opt.step()

    return hooks_step


def run_mode(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """Step times and peak memory of every contender for one fine-tuning mode."""
    x, y = _batch(args)
    steps: dict[str, Step] = {"non-private": _plain(_model(args, mode), x, y)}
    errors: dict[str, str] = {}
    sessions: list[Any] = []
    engine = "?"
    try:
        steps["securetrain"], engine = _securetrain(_model(args, mode), x, y, sessions)
        for name, opacus_mode in (("opacus-hooks", "hooks"), ("opacus-ghost", "ghost")):
            try:
                fn = _opacus(_model(args, mode), x, y, opacus_mode)
                fn()  # a mode that cannot handle the model fails here
                steps[name] = fn
            except (RuntimeError, ValueError, NotImplementedError, TypeError, IndexError, AttributeError) as exc:
                errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        for fn in steps.values():  # warm-up
            fn()
        cpu: dict[str, list[float]] = {k: [] for k in steps}
        wall: dict[str, list[float]] = {k: [] for k in steps}
        for _ in range(args.steps):
            for name, fn in steps.items():
                t, c = time.perf_counter(), time.thread_time()
                fn()
                cpu[name].append(time.thread_time() - c)
                wall[name].append(time.perf_counter() - t)
        memory = {name: _peak_bytes(fn) for name, fn in steps.items()}
    finally:
        for s in sessions:
            s.__exit__(None, None, None)
    base_cpu = statistics.median(cpu["non-private"])
    base_mem = memory["non-private"]
    trainable = sum(p.numel() for p in _model(args, mode).parameters() if p.requires_grad)
    rows = {
        name: {
            "step_ms": 1e3 * statistics.median(cpu[name]),
            "wall_ms": 1e3 * statistics.median(wall[name]),
            "time_ratio": statistics.median(cpu[name]) / base_cpu,
            "peak_mib": memory[name] / 2**20,
            "memory_ratio": memory[name] / base_mem if base_mem else float("nan"),
        }
        for name in steps
    }
    return {"trainable_parameters": trainable, "securetrain_engine": engine, "results": rows, "errors": errors}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="hf", help="results file name under benchmarks/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("securetrain").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    payload: dict[str, Any] = {"config": vars(args), "modes": {}}
    for mode in args.modes:
        res = run_mode(args, mode)
        payload["modes"][mode] = res
        rows = [
            [name, r["step_ms"], r["time_ratio"], r["peak_mib"], r["memory_ratio"]]
            for name, r in res["results"].items()
        ]
        print(
            f"\n{mode} ({res['trainable_parameters']} trainable parameters; securetrain engine: "
            f"{res['securetrain_engine']})"
        )
        print(table(["", "step ms (CPU)", "x non-private", "peak MiB", "x non-private"], rows))
        for name, err in res["errors"].items():
            print(f"{name}: failed: {err}")
    if "lora" in payload["modes"]:
        ratio = payload["modes"]["lora"]["results"]["securetrain"]["time_ratio"]
        payload["target"] = {"dp_lora_over_nonprivate_lora": ratio, "goal": 1.3, "met": ratio <= 1.3}
        print(f"\nDP LoRA step / non-private LoRA step: {ratio:.2f} (target <= 1.3)")
    path = save_results(args.out, payload)
    print(f"saved {path}")
    return payload


if __name__ == "__main__":
    main()
