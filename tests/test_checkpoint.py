from __future__ import annotations

import pickle

import pytest
import torch

import securetrain.io as st_io
from securetrain.checkpoint import load_state, load_weights, save_state, save_weights
from securetrain.errors import CheckpointError
from securetrain.models import build_model


def test_state_roundtrip_with_nested_values(tmp_path):
    state = {
        "a": torch.arange(3.0),
        "opt": {0: {"m": torch.ones(2)}, 1: {}},
        "t": (1, 2.5, None),
        "s": "x",
        "l": [torch.zeros(1)],
    }
    save_state(tmp_path / "s.safetensors", state)
    out = load_state(tmp_path / "s.safetensors")
    assert torch.equal(out["a"], state["a"]) and torch.equal(out["opt"][0]["m"], torch.ones(2))
    assert out["opt"][1] == {} and out["t"] == (1, 2.5, None) and out["s"] == "x"


def test_crash_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    save_state(path, {"v": torch.ones(4), "epoch": 1})

    def crashing_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(st_io.os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated"):
        save_state(path, {"v": torch.zeros(4), "epoch": 2})
    monkeypatch.undo()
    assert load_state(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]  # no temp file left behind


def test_corrupted_and_truncated_checkpoints(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_state(path, {"v": torch.ones(1000)})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"is corrupted or truncated"):
        load_state(path)
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match=r"is corrupted or truncated"):
        load_state(path)
    with pytest.raises(CheckpointError, match=r"does not exist"):
        load_state(tmp_path / "nope.safetensors")


class _Boom:
    def __reduce__(self):
        return (exec, ("import sys; sys.exit('unpickled!')",))


def test_pickle_weights_are_never_unpickled(tmp_path):
    model = build_model("mlp", (30,), 2)
    p1 = tmp_path / "w.pkl"
    p1.write_bytes(pickle.dumps({"w": _Boom()}))
    with pytest.raises(CheckpointError, match=r"looks like a pickle / torch.save file; securetrain never unpickles"):
        load_weights(p1, model)
    p2 = tmp_path / "w.pt"
    torch.save(model.state_dict(), p2)
    with pytest.raises(CheckpointError, match=r"looks like a pickle / torch.save file"):
        load_weights(p2, model)


def test_weights_roundtrip_and_mismatch(tmp_path):
    a = build_model("mlp", (30,), 2)
    save_weights(tmp_path / "m.safetensors", a)
    b = build_model("mlp", (30,), 2)
    load_weights(tmp_path / "m.safetensors", b)
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p, q)
    with pytest.raises(CheckpointError, match=r"does not match the model's parameters"):
        load_weights(tmp_path / "m.safetensors", build_model("mlp", (30,), 3))


@pytest.mark.parametrize("pad", range(160, 176))
def test_valid_files_whose_header_length_starts_with_0x80_load(tmp_path, pad):
    # The first byte of a safetensors file is the low byte of its header length: 0x80, the
    # pickle protocol marker, for one header length in 256. Such files must still load.
    path = tmp_path / "s.safetensors"
    save_state(path, {"w": torch.ones(2), "note": "x" * pad})
    assert load_state(path)["note"] == "x" * pad
