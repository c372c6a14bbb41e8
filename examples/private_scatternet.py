"""A private ScatterNet next to a private CNN, both with their recommended recipes.

The ScatterNet (``--model scatter``) puts a fixed wavelet scattering transform in front of a
small trained head (Tramer and Boneh 2021): the transform costs no privacy budget, the
trained part is small, and it needs no data but the private set. The CNN's recipe pretrains
the CNN without privacy on public data (``mnist-5k-8x8``: MNIST redrawn in the digits format)
and trains only its head on digits under DP; the epsilon covers digits alone. Both runs are
accounted identically; the printed epsilons are the spent ones.
The model chosen on validation is then refit on ``train+validation`` (the noise calibrated
for the larger set, same epsilon) and evaluated on ``test`` once: the final-refit protocol.

Run it:  python examples/private_scatternet.py [--epochs N]   (default: the recipes' epochs)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import securetrain
from defenses.privacy import recommended
from securetrain.training import evaluate


def main(epochs: int | None = None, epsilon: float = 3.0) -> dict[str, dict[str, float]]:
    x_val, y_val = securetrain.data.load("digits", "validation")
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in ("scatter", "cnn"):
            rec = recommended("digits", model, epsilon=epsilon)  # the data set's recipe for this model
            overrides = {"progress": False, **({"epochs": epochs} if epochs else {})}
            result = securetrain.train(
                rec.train_config(**overrides), Path(tmp) / model, [rec.defense()], write_html=False
            )
            reloaded = securetrain.load_model(Path(tmp) / model)  # the fixed front-end is rebuilt from the options
            privacy = result.report.privacy
            assert privacy is not None
            out[model] = {
                "validation_accuracy": evaluate(reloaded, x_val, y_val)["accuracy"],
                "epsilon": privacy["epsilon"],
                "sample_rate": privacy["sample_rate"],
            }
        # the final refit: the model chosen on validation, trained on train+validation, test read once
        best = max(out, key=lambda m: out[m]["validation_accuracy"])
        rec = recommended("digits", best, epsilon=epsilon)
        overrides = {"progress": False, "train_split": "train+validation", **({"epochs": epochs} if epochs else {})}
        final = securetrain.train(rec.train_config(**overrides), Path(tmp) / "refit", [rec.defense()], write_html=False)
        privacy = final.report.privacy
        assert privacy is not None
        out[f"{best} refit"] = {
            "test_accuracy": final.report.accuracy,
            "epsilon": privacy["epsilon"],
            "sample_rate": privacy["sample_rate"],
        }
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=None)
    torch.set_num_threads(1)  # these models are tiny: one thread is fastest on a shared machine
    print(json.dumps(main(p.parse_args().epochs), indent=2))
