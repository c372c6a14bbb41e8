"""Pre-flight for the DP speed table on a GPU: our engines on the device's tensors, then one DP fit there.

Checks, on ``--device`` (default ``cuda``), that the ``bk``, ``ghost`` and ``vmap`` engines'
per-sample gradients of the zoo CNN and ResNet equal each sample's gradient computed alone
(``verify_engine`` on a probe batch on the device), that ``auto`` picks and verifies an engine
when the example input is on the CPU and the model on the device (as in training), and that a
two-epoch private ``fit`` with ``TrainConfig(device=...)`` trains there. Exit status 1 when a
``bk`` check fails or the model did not end on the device. Runs on the CPU too (``--device cpu``).

    python benchmarks/dp_device_check.py --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from defenses.privacy import DifferentialPrivacy  # noqa: E402
from defenses.privacy.modes import probe_inputs, select_engine, verify_engine  # noqa: E402
from securetrain.devices import resolve_device  # noqa: E402
from securetrain.errors import ConfigurationError  # noqa: E402
from securetrain.models import build_model  # noqa: E402
from securetrain.training import TrainConfig, fit  # noqa: E402

CASES = (("cnn", (3, 32, 32)), ("resnet", (3, 32, 32)), ("cnn", (1, 28, 28)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ConfigurationError as exc:
        raise SystemExit(f"dp_device_check: {exc}") from None
    warnings.filterwarnings("ignore")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {name}", flush=True)
    ok = True
    for model_name, shape in CASES:
        torch.manual_seed(0)
        model = build_model(model_name, shape, 10).to(device)
        x = probe_inputs(torch.rand(1, *shape)).to(device)
        for engine in ("bk", "ghost", "vmap"):
            why = verify_engine(engine, model, x)
            print(f"{engine:6s} {model_name} {shape} on {device}: {'ok' if why is None else why}", flush=True)
            ok = ok and (why is None or engine != "bk")
        choice = select_engine(model, "auto", torch.rand(1, *shape))  # example on the CPU
        print(f"auto, example on the CPU: {choice.name} (verified: {choice.verified})", flush=True)
        ok = ok and choice.verified
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.rand(512, 1, 28, 28, generator=g), torch.randint(0, 10, (512,), generator=g)
    model = build_model("cnn", (1, 28, 28), 10)
    start = time.perf_counter()
    result = fit(
        model,
        (xs, ys),
        (xs[:128], ys[:128]),
        TrainConfig(epochs=2, batch_size=128, lr=1e-3, device=str(device), progress=False),
        [DifferentialPrivacy(noise_multiplier=1.0, max_grad_norm=1.0, accountant="rdp", seed=0)],
        num_classes=10,
    )
    on = {p.device.type for p in result.model.parameters()}
    print(f"private fit: parameters on {sorted(on)}, {time.perf_counter() - start:.1f} s, {result.history[-1]}")
    ok = ok and on == {device.type}
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
