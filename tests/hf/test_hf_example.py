"""Smoke-run examples/hf_finetune_local.py on a tiny random BERT it writes to a temporary directory."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="Hugging Face tests need transformers: pip install 'securetrain[hf]'")
pytest.importorskip("peft", reason="Hugging Face tests need peft: pip install 'securetrain[hf]'")

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hf_finetune_local.py"


@pytest.mark.slow
def test_hf_example_fine_tunes_a_model_from_a_local_directory(tmp_path, capsys) -> None:
    main = runpy.run_path(str(EXAMPLE), run_name="example")["main"]
    model_dir = tmp_path / "tiny-bert"
    main(["--write-random-model", str(model_dir)])
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
    args = ["--model-dir", str(model_dir), "--mode", "lora", "--noise-multiplier", "1.0", "--epsilon", "10"]
    args += ["--accountant", "rdp", "--epochs", "1", "--samples", "160", "--batch-size", "16"]
    summary = main(args)
    assert summary["engine"] == "bk" and summary["valid"] is True
    assert 0 < summary["trainable_parameters"] < summary["total_parameters"]
    assert 0 < summary["epsilon"] <= 10 and summary["steps"] > 0
    assert '"epsilon"' in capsys.readouterr().out


def test_hf_example_refuses_a_missing_directory(tmp_path) -> None:
    from securetrain.errors import DataNotFoundError

    main = runpy.run_path(str(EXAMPLE), run_name="example")["main"]
    with pytest.raises(DataNotFoundError, match="no model directory at"):
        main(["--model-dir", str(tmp_path / "missing")])
