"""batchlab.data: preparing the generated datasets, reading the user's MNIST (IDX) and CIFAR-10 (pickle) files,
and clear errors for missing files. Nothing here reads the network."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from batchlab import data
from batchlab.data import DatasetError


def prepare(name, options, tmp_path, data_dir="unused", stem="out"):
    """Prepare a dataset; the user's files here are small stand-ins, not the publishers' (no checksums)."""
    out = tmp_path / f"{stem}.npz"
    shapes = data.prepare(name, data.resolve_options(name, options), data_dir, out, verify=False)
    return shapes, data.load(out)


def assert_standardized(x: np.ndarray, axes):
    assert np.allclose(x.mean(axis=axes), 0.0, atol=1e-5)
    assert np.allclose(x.std(axis=axes), 1.0, atol=1e-4)


# -- generated datasets ----------------------------------------------------------------------------------


def test_prepare_mnist1d_small(tmp_path):
    shapes, arrays = prepare("mnist1d", {"num_samples": 300}, tmp_path)
    assert shapes == {"x_train": (240, 1, 40), "y_train": (240,), "x_test": (60, 1, 40), "y_test": (60,)}
    assert {k: v.shape for k, v in arrays.items()} == shapes
    assert arrays["x_train"].dtype == np.float32 and arrays["x_test"].dtype == np.float32
    assert arrays["y_train"].dtype == np.int64 and arrays["y_test"].dtype == np.int64
    assert set(np.unique(arrays["y_train"])) <= set(range(10))
    assert len(np.unique(arrays["y_train"])) == 10
    assert abs(float(arrays["x_train"].mean())) < 1e-5
    assert float(arrays["x_train"].std()) == pytest.approx(1.0, abs=1e-4)
    assert not (tmp_path / "out.npz.tmp.npz").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]


def test_prepare_mnist1d_is_deterministic_and_seeded(tmp_path):
    _, a = prepare("mnist1d", {"num_samples": 200, "seed": 3}, tmp_path, stem="a")
    _, b = prepare("mnist1d", {"num_samples": 200, "seed": 3}, tmp_path, stem="b")
    _, c = prepare("mnist1d", {"num_samples": 200, "seed": 4}, tmp_path, stem="c")
    for key in a:
        assert np.array_equal(a[key], b[key])
    assert not np.array_equal(a["x_train"], c["x_train"])


@pytest.mark.parametrize("num_samples", [200, 205, 299])
def test_mnist1d_train_size_matches_the_prepared_data(tmp_path, num_samples):
    options = data.resolve_options("mnist1d", {"num_samples": num_samples})
    shapes, _ = prepare("mnist1d", options, tmp_path)
    assert data.DATASETS["mnist1d"].train_size(options) == shapes["x_train"][0]
    assert data.DATASETS["mnist1d"].input_shape(options) == shapes["x_train"][1:]


def test_prepare_blobs(tmp_path):
    options = {"n_train": 50, "n_test": 20, "dim": 6, "classes": 3}
    shapes, arrays = prepare("blobs", options, tmp_path)
    assert shapes == {"x_train": (50, 1, 6), "y_train": (50,), "x_test": (20, 1, 6), "y_test": (20,)}
    resolved = data.resolve_options("blobs", options)
    assert data.DATASETS["blobs"].input_shape(resolved) == (1, 6)
    assert data.DATASETS["blobs"].train_size(resolved) == 50
    assert data.num_classes("blobs", resolved) == 3
    assert set(np.unique(arrays["y_train"])) == {0, 1, 2}
    assert_standardized(arrays["x_train"], (0, 2))
    _, again = prepare("blobs", options, tmp_path, stem="again")
    assert np.array_equal(arrays["x_test"], again["x_test"])


def test_prepare_digits(tmp_path):
    shapes, arrays = prepare("digits", {}, tmp_path)
    assert shapes == {"x_train": (1438, 1, 8, 8), "y_train": (1438,), "x_test": (359, 1, 8, 8), "y_test": (359,)}
    options = data.resolve_options("digits", {})
    assert data.DATASETS["digits"].train_size(options) == 1438
    assert data.DATASETS["digits"].input_shape(options) == (1, 8, 8)
    assert data.num_classes("digits", options) == 10
    assert_standardized(arrays["x_train"], (0, 2, 3))
    # train and test are disjoint parts of the 1797 images
    assert len(np.unique(np.concatenate([arrays["y_train"], arrays["y_test"]]))) == 10


def test_prepare_digits_split_is_seeded(tmp_path):
    _, a = prepare("digits", {"seed": 0}, tmp_path, stem="a")
    _, b = prepare("digits", {"seed": 1}, tmp_path, stem="b")
    assert not np.array_equal(a["y_train"], b["y_train"])


def test_resolve_options():
    assert data.resolve_options("mnist1d", None) == {"num_samples": 5000, "seed": 42}
    assert data.resolve_options("mnist1d", {"seed": 1}) == {"num_samples": 5000, "seed": 1}
    assert data.resolve_options("mnist", {}) == {}
    with pytest.raises(DatasetError, match=r"dataset_options.mnist1d: unknown option\(s\) \['size'\]; allowed: num_samples, seed"):
        data.resolve_options("mnist1d", {"size": 3})
    with pytest.raises(DatasetError, match="allowed: none"):
        data.resolve_options("cifar10", {"seed": 1})


def test_registry_facts():
    assert set(data.DATASETS) == {"mnist1d", "digits", "blobs", "mnist", "fashion_mnist", "cifar10"}
    for name, d in data.DATASETS.items():
        assert d.name == name
    assert data.DATASETS["mnist"].user_files == tuple(f"mnist/{stem}" for stem in data.IDX_STEMS)
    # every file a loader reads has the publisher's checksum (an IDX file: as .gz)
    for d in data.DATASETS.values():
        assert all(rel in data.CHECKSUMS or rel + ".gz" in data.CHECKSUMS for rel in d.user_files)
    assert data.DATASETS["cifar10"].input_shape({}) == (3, 32, 32)


# -- the user's files: IDX (MNIST, Fashion-MNIST) ------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX format: two zero bytes, type 0x08 (unsigned byte), the number of dims, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(idx_bytes(array))
    else:
        path.write_bytes(idx_bytes(array))
    return path


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx(tmp_path, compress):
    array = (np.arange(3 * 4 * 5) % 256).astype(np.uint8).reshape(3, 4, 5)
    path = write_idx(tmp_path / "images-idx3-ubyte", array, compress)
    out = data._read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (3, 4, 5)
    assert np.array_equal(out, array)
    labels = np.array([7, 0, 255, 3], dtype=np.uint8)
    assert np.array_equal(data._read_idx(write_idx(tmp_path / "labels-idx1-ubyte", labels, compress)), labels)


def write_mnist(data_dir: Path, folder: str, rng, n_train=6, n_test=4, compress=True) -> dict:
    raw = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, array in raw.items():
        write_idx(data_dir / folder / stem, array, compress)
    return raw


@pytest.mark.parametrize("name, compress", [("mnist", True), ("fashion_mnist", False)])
def test_prepare_idx_dataset_from_user_files(tmp_path, name, compress):
    data_dir = tmp_path / "data"
    raw = write_mnist(data_dir, name, np.random.default_rng(0), compress=compress)
    suffix = ".gz" if compress else ""
    assert all((data_dir / (rel + suffix)).exists() for rel in data.DATASETS[name].user_files)
    shapes, arrays = prepare(name, {}, tmp_path, data_dir=data_dir)
    assert shapes == {"x_train": (6, 1, 28, 28), "y_train": (6,), "x_test": (4, 1, 28, 28), "y_test": (4,)}
    assert np.array_equal(arrays["y_train"], raw["train-labels-idx1-ubyte"])
    assert np.array_equal(arrays["y_test"], raw["t10k-labels-idx1-ubyte"])
    # standardized with the training set's statistics, pixel order kept
    x = raw["train-images-idx3-ubyte"].astype(np.float32) / 255.0
    expected = (x - x.mean()) / (x.std() + 1e-8)
    assert np.allclose(arrays["x_train"][:, 0], expected, atol=1e-5)
    xt = raw["t10k-images-idx3-ubyte"].astype(np.float32) / 255.0
    assert np.allclose(arrays["x_test"][:, 0], (xt - x.mean()) / (x.std() + 1e-8), atol=1e-5)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_missing_idx_files_name_the_expected_path(tmp_path, name):
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError) as info:
        data.prepare(name, {}, data_dir, tmp_path / "out.npz")
    expected = data_dir / name / "train-images-idx3-ubyte"
    msg = str(info.value)
    assert f"dataset '{name}'" in msg
    assert f"expected file {expected} (or {expected}.gz) is missing" in msg
    assert "data_dir" in msg
    assert not (tmp_path / "out.npz").exists()


def test_missing_label_file_names_it(tmp_path):
    data_dir = tmp_path / "data"
    write_mnist(data_dir, "mnist", np.random.default_rng(0))
    (data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        data.prepare("mnist", {}, data_dir, tmp_path / "out.npz", verify=False)


# -- the user's files: CIFAR-10 (python pickles) ---------------------------------------------------------------


def write_cifar(data_dir: Path, rng, per_batch=2) -> dict:
    folder = data_dir / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    raw = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch))
        raw[name] = batch
    return raw


def test_cifar10_from_user_files(tmp_path):
    data_dir = tmp_path / "data"
    raw = write_cifar(data_dir, np.random.default_rng(1))
    # the files config.check_data_available looks for are those the loader reads
    assert all((data_dir / rel).exists() for rel in data.DATASETS["cifar10"].user_files)
    xtr, ytr, xte, yte = data.DATASETS["cifar10"].load({}, data_dir)
    assert xtr.shape == (10, 3, 32, 32) and xte.shape == (2, 3, 32, 32)
    assert ytr.tolist() == sum((raw[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert yte.tolist() == raw["test_batch"][b"labels"]
    # the standard layout: 1024 red, then 1024 green, then 1024 blue values, each row-major
    first = raw["data_batch_1"][b"data"][0]
    assert np.allclose(xtr[0, 0].reshape(-1), first[:1024] / 255.0)
    assert np.allclose(xtr[0, 2, 0, :], first[2048:2080] / 255.0)
    shapes, arrays = prepare("cifar10", {}, tmp_path, data_dir=data_dir)
    assert shapes["x_train"] == (10, 3, 32, 32)
    assert_standardized(arrays["x_train"], (0, 2, 3))  # per channel


def test_missing_cifar10_files_name_the_expected_path(tmp_path):
    with pytest.raises(DatasetError) as info:
        data.prepare("cifar10", {}, tmp_path, tmp_path / "out.npz")
    assert str(tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1") in str(info.value)


# -- checksums of the user's files -------------------------------------------------------------------------


def test_a_file_that_is_not_the_publishers_fails_with_its_path_and_the_expected_checksum(tmp_path):
    data_dir = tmp_path / "data"
    write_mnist(data_dir, "mnist", np.random.default_rng(0))  # stand-ins: not the published files
    with pytest.raises(DatasetError) as info:
        data.prepare("mnist", {}, data_dir, tmp_path / "out.npz")
    path = data_dir / "mnist" / "train-images-idx3-ubyte.gz"
    assert f"{path} has MD5 {data._md5(path)}, expected f68b3c2dcbeaaa9fbdd348bbdeb94873" in str(info.value)
    assert "verify_data_files: false" in str(info.value)
    assert not (tmp_path / "out.npz").exists()


def test_an_uncompressed_idx_file_of_the_wrong_size_fails_with_the_expected_size(tmp_path):
    data_dir = tmp_path / "data"
    write_mnist(data_dir, "fashion_mnist", np.random.default_rng(0), compress=False)
    with pytest.raises(DatasetError) as info:
        data.check_user_files("fashion_mnist", data_dir)
    path = data_dir / "fashion_mnist" / "train-images-idx3-ubyte"
    assert f"{path} is {path.stat().st_size} bytes, expected 47040016" in str(info.value)
    assert "8d4fb7e6c68d591d4c3dfef9ec88bf0d" in str(info.value)


def test_files_matching_the_published_checksums_are_read(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    write_cifar(data_dir, np.random.default_rng(1))
    for rel in data.DATASETS["cifar10"].user_files:  # as if these were the published files
        monkeypatch.setitem(data.CHECKSUMS, rel, data._md5(data_dir / rel))
    shapes = data.prepare("cifar10", {}, data_dir, tmp_path / "out.npz")
    assert shapes["x_train"] == (10, 3, 32, 32)
    last = data_dir / "cifar10" / "cifar-10-batches-py" / "test_batch"
    last.write_bytes(last.read_bytes()[:-1])  # truncated by one byte
    with pytest.raises(DatasetError, match=f"{last} has MD5 [0-9a-f]{{32}}, expected {data.CHECKSUMS['cifar10/cifar-10-batches-py/test_batch']}"):
        data.prepare("cifar10", {}, data_dir, tmp_path / "again.npz")
