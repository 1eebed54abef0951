"""Tests for trainables.data on real data: sklearn digits, mnist1d and small files written here."""

from __future__ import annotations

import gzip
import os
import pickle
import random
import socket
import struct
from pathlib import Path

import numpy as np
import pytest

from trainables.data import (
    DATASETS,
    INPUT_SHAPES,
    NUM_CLASSES,
    DataError,
    Dataset,
    check_data_root,
    load_dataset,
)
from trainables.spirals import make_spirals

FILE_DATASETS = ("mnist", "fashion_mnist", "cifar10")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to open a network connection (nothing may be downloaded)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("trainables.data tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _labels(n: int) -> np.ndarray:
    """Labels 0..9 repeated, so every class occurs n // 10 times."""
    return np.arange(n, dtype=np.uint8) % 10


def _write_idx(path: Path, array: np.ndarray, *, magic: int | None = None) -> Path:
    """Write a uint8 IDX file (gzipped when the name ends with .gz)."""
    magic = 0x0800 + array.ndim if magic is None else magic
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)
    return path


def _write_mnist(directory: Path, n: int = 60, *, gz: bool = False) -> np.ndarray:
    """Write n 28x28 images, each filled with 20 * its label, and return the labels."""
    labels = _labels(n)
    images = np.repeat(labels * 20, 28 * 28).reshape(n, 28, 28)
    ext = ".gz" if gz else ""
    _write_idx(directory / f"train-images-idx3-ubyte{ext}", images)
    _write_idx(directory / f"train-labels-idx1-ubyte{ext}", labels)
    return labels


def _write_cifar(directory: Path, batches: int = 2, n: int = 30, str_keys: bool = False) -> None:
    """Write CIFAR-10 style Python pickles whose channel planes are constant (label*20 + c)."""
    directory.mkdir(parents=True, exist_ok=True)
    for k in range(1, batches + 1):
        labels = _labels(n)
        planes = labels[:, None] * 20 + np.arange(3, dtype=np.uint8)[None, :]
        data = np.repeat(planes, 1024, axis=1).astype(np.uint8)  # (n, 3072), channel-major
        batch = {"data": data, "labels": labels.tolist()}
        if not str_keys:
            batch = {key.encode(): value for key, value in batch.items()}
        (directory / f"data_batch_{k}").write_bytes(pickle.dumps(batch, protocol=2))


def _assert_standardised(ds: Dataset) -> None:
    """Check dtypes, contiguity and per-channel zero mean / unit std of the train split."""
    assert ds.x_train.dtype == np.float32 and ds.x_val.dtype == np.float32
    assert ds.y_train.dtype == np.int64 and ds.y_val.dtype == np.int64
    assert ds.x_train.flags.c_contiguous and ds.x_val.flags.c_contiguous
    assert ds.x_train.shape[1:] == ds.input_shape == ds.x_val.shape[1:]
    axes = (0, *range(2, ds.x_train.ndim))
    np.testing.assert_allclose(ds.x_train.mean(axis=axes), 0.0, atol=1e-4)
    np.testing.assert_allclose(ds.x_train.std(axis=axes), 1.0, atol=1e-3)
    assert ds.num_classes == NUM_CLASSES[ds.name]


def test_digits_split_is_stratified_standardised_and_seeded() -> None:
    ds = load_dataset("digits")
    _assert_standardised(ds)
    assert ds.input_shape == (1, 8, 8)
    assert (len(ds.y_train), len(ds.y_val)) == (1347, 450)
    assert set(ds.y_train) == set(ds.y_val) == set(range(10))
    val_share = np.bincount(ds.y_val) / (np.bincount(ds.y_val) + np.bincount(ds.y_train))
    np.testing.assert_allclose(val_share, 0.25, atol=0.02)
    again, other = load_dataset("digits", split_seed=0), load_dataset("digits", split_seed=1)
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    np.testing.assert_array_equal(ds.y_val, again.y_val)
    assert not np.array_equal(ds.y_train, other.y_train)


def test_digits_val_fraction_changes_sizes() -> None:
    ds = load_dataset("digits", val_fraction=0.5)
    assert (len(ds.y_train), len(ds.y_val)) == (898, 899)


def test_mnist1d_shapes_and_global_rng_untouched() -> None:
    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.get_state(), random.getstate()
    ds = load_dataset("mnist1d")
    np_after = np.random.get_state()
    assert np_before[0] == np_after[0] and np_before[2:] == np_after[2:]
    np.testing.assert_array_equal(np_before[1], np_after[1])
    assert random.getstate() == py_before
    assert ds.x_train.shape == (4000, 1, 40) and ds.x_val.shape == (1000, 1, 40)
    assert ds.input_shape == (1, 40)
    _assert_standardised(ds)
    assert set(ds.y_train) == set(range(10))
    again = load_dataset("mnist1d", max_samples=500)
    assert len(again.y_train) == len(again.y_val) == 500


def test_spirals_are_three_balanced_interleaved_arms_generated_the_same_every_time() -> None:
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    ds = load_dataset("spirals")
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # a private generator
    _assert_standardised(ds)
    assert ds.input_shape == (1, 2) and ds.num_classes == 3 == NUM_CLASSES["spirals"]
    assert (len(ds.y_train), len(ds.y_val)) == (1125, 375)
    assert np.bincount(ds.y_val).tolist() == [125, 125, 125]  # stratified 75/25
    again = load_dataset("spirals")
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    # interleaved: a linear model does little better than chance, yet the arms are learnable
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    x_tr, x_va = ds.x_train.reshape(-1, 2), ds.x_val.reshape(-1, 2)
    linear = LogisticRegression().fit(x_tr, ds.y_train).score(x_va, ds.y_val)
    neighbours = KNeighborsClassifier(5).fit(x_tr, ds.y_train).score(x_va, ds.y_val)
    assert linear < 0.6 and neighbours > 0.93, (linear, neighbours)
    x, _ = make_spirals()
    assert 0.4 < np.median(np.hypot(x[:, 0], x[:, 1])) < 0.6  # radius uniform in [0, 1], plus noise


def test_spirals_reject_bad_arguments() -> None:
    for bad in ({"points": 0}, {"turns": 0.0}, {"noise": -1.0}):
        with pytest.raises(ValueError, match="make_spirals"):
            make_spirals(**bad)


@pytest.mark.parametrize(
    ("name", "subdir", "gz"),
    [
        ("mnist", "", False),
        ("mnist", "", True),
        ("fashion_mnist", "", True),
        ("mnist", "MNIST/raw", True),
        ("fashion_mnist", "FashionMNIST/raw", False),
    ],
)
def test_idx_files_load(tmp_path: Path, name: str, subdir: str, gz: bool) -> None:
    labels = _write_mnist(tmp_path / subdir, gz=gz)
    assert check_data_root(name, str(tmp_path)) is None
    ds = load_dataset(name, str(tmp_path))
    _assert_standardised(ds)
    assert ds.input_shape == (1, 28, 28)
    assert (len(ds.y_train), len(ds.y_val)) == (45, 15)
    assert set(ds.y_train) == set(ds.y_val) == set(range(10))
    assert sorted(np.concatenate([ds.y_train, ds.y_val])) == sorted(labels.tolist())
    # every image was constant and brighter with its label: parsing kept that intact
    flat = ds.x_train.reshape(len(ds.y_train), -1)
    assert np.all(flat == flat[:, :1])
    order = np.argsort(ds.y_train, kind="stable")
    assert np.all(np.diff(flat[order, 0]) >= 0)


@pytest.mark.parametrize(
    ("which", "kwargs", "array"),
    [
        ("images", {"magic": 0x0000_0999}, np.zeros((60, 28, 28))),
        ("labels", {"magic": 0x0000_0D01}, _labels(60)),
        ("labels", {}, _labels(59)),
        ("images", {}, np.zeros((60, 28, 27))),
    ],
)
def test_malformed_idx_names_the_file(tmp_path: Path, which: str, kwargs: dict, array: np.ndarray) -> None:
    _write_mnist(tmp_path)
    bad = _write_idx(tmp_path / f"train-{which}-idx{array.ndim}-ubyte", array, **kwargs)
    with pytest.raises(DataError, match=f"train-{which}-idx"):
        load_dataset("mnist", str(tmp_path))
    with pytest.raises(DataError, match=f"train-{which}-idx"):  # the header alone shows it
        check_data_root("mnist", str(tmp_path))
    assert bad.exists()


def test_truncated_idx_and_bad_labels(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(DataError, match="malformed IDX file .*train-images-idx3-ubyte"):
        load_dataset("mnist", str(tmp_path))
    with pytest.raises(DataError, match="header says .* but 47035 data bytes follow"):
        check_data_root("mnist", str(tmp_path))
    _write_mnist(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", _labels(60) + 5)
    assert check_data_root("mnist", str(tmp_path)) is None  # headers only: the values pass
    with pytest.raises(DataError, match="train-labels-idx1-ubyte' has labels 5..14"):
        load_dataset("mnist", str(tmp_path))


@pytest.mark.parametrize("layout", ["cifar-10-batches-py", ""])
@pytest.mark.parametrize("str_keys", [False, True])
def test_cifar_batches_load(tmp_path: Path, layout: str, str_keys: bool) -> None:
    _write_cifar(tmp_path / layout, batches=2, str_keys=str_keys)
    assert check_data_root("cifar10", str(tmp_path)) is None
    ds = load_dataset("cifar10", str(tmp_path), val_fraction=0.5)
    _assert_standardised(ds)
    assert ds.input_shape == (3, 32, 32)
    assert (len(ds.y_train), len(ds.y_val)) == (30, 30)
    both = np.concatenate([ds.y_train, ds.y_val])
    assert sorted(both) == sorted(np.tile(_labels(30), 2).tolist())  # both batches, every label
    planes = ds.x_train.reshape(30, 3, -1)
    assert np.all(planes == planes[:, :, :1])  # channel-major reshape keeps planes constant
    order = np.argsort(ds.y_train, kind="stable")  # each plane was brighter with the label
    assert np.all(np.diff(planes[order, :, 0], axis=0) >= 0)


class _Payload:
    """Pickles as a call to `func(*args)`, standing in for a malicious global."""

    def __init__(self, func: object, args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_pickle_with_foreign_global_is_refused_unexecuted(tmp_path: Path, protocol: int) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "payload-ran"
    batch = {b"data": _Payload(os.mkdir, (str(marker),)), b"labels": [0]}
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=protocol))
    with pytest.raises(DataError, match=r"data_batch_1.*(posix|os)\.mkdir"):
        load_dataset("cifar10", str(tmp_path))
    assert not marker.exists()


def test_cifar_non_batch_pickle(tmp_path: Path) -> None:
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps([1, 2, 3]))
    assert check_data_root("cifar10", str(tmp_path)) is None  # a pickle: only unpickling tells
    with pytest.raises(DataError, match="data_batch_3' is not a CIFAR-10 batch"):
        load_dataset("cifar10", str(tmp_path))
    (tmp_path / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot unpickle .*data_batch_3.*does not start like a pickle"):
        check_data_root("cifar10", str(tmp_path))
    with pytest.raises(DataError, match="cannot unpickle .*data_batch_3"):
        load_dataset("cifar10", str(tmp_path))


@pytest.mark.parametrize("name", FILE_DATASETS)
def test_check_data_root_errors(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError, match=f"data.root: required for dataset '{name}'"):
        check_data_root(name, None)
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="data.root: directory .*nowhere' does not exist") as exc:
        check_data_root(name, str(missing))
    assert "never downloaded" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(DataError, match="data.root: no .* in"):
        check_data_root(name, str(tmp_path))
    with pytest.raises(DataError, match="data.root"):
        load_dataset(name, str(missing))
    assert not missing.exists()


def test_check_data_root_needs_labels_next_to_images(tmp_path: Path) -> None:
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((10, 28, 28)))
    with pytest.raises(DataError, match="no train-labels-idx1-ubyte"):
        check_data_root("mnist", str(tmp_path))


@pytest.mark.parametrize("name", ["digits", "mnist1d", "spirals"])
def test_check_data_root_passes_without_files(tmp_path: Path, name: str) -> None:
    missing, a_file = tmp_path / "does" / "not" / "matter", tmp_path / "a_file"
    a_file.write_bytes(b"")
    for root in (None, "", str(missing), str(a_file)):
        assert check_data_root(name, root) is None
    assert not missing.exists()
    # the root is not read: loading with one gives the very dataset loading without one does
    ds, plain = load_dataset(name, str(missing), max_samples=50), load_dataset(name, None, max_samples=50)
    _assert_standardised(ds)
    assert ds.name == name and ds.input_shape == INPUT_SHAPES[name]
    assert (len(ds.y_train), len(ds.y_val)) == (50, 50)
    assert set(ds.y_train) <= set(range(NUM_CLASSES[name]))
    np.testing.assert_array_equal(ds.x_train, plain.x_train)
    np.testing.assert_array_equal(ds.y_val, plain.y_val)
    assert not missing.exists() and sorted(tmp_path.iterdir()) == [a_file]


def test_data_root_lookup_order_is_the_documented_one(tmp_path: Path) -> None:
    """IDX files: root before root/MNIST/raw; CIFAR batches: root/cifar-10-batches-py before root."""
    _write_mnist(tmp_path, n=60)
    _write_mnist(tmp_path / "MNIST" / "raw", n=40)
    assert check_data_root("mnist", str(tmp_path)) is None
    ds = load_dataset("mnist", str(tmp_path))
    assert len(ds.y_train) + len(ds.y_val) == 60  # root's files, not MNIST/raw's
    _write_cifar(tmp_path / "cifar-10-batches-py", batches=2, n=30)
    _write_cifar(tmp_path, batches=1, n=20)
    assert check_data_root("cifar10", str(tmp_path)) is None
    ds = load_dataset("cifar10", str(tmp_path))
    assert len(ds.y_train) + len(ds.y_val) == 60  # cifar-10-batches-py's two batches, not root's one


def test_unknown_dataset() -> None:
    assert "digits" in DATASETS and len(DATASETS) == 6
    assert set(NUM_CLASSES) == set(INPUT_SHAPES) == set(DATASETS)
    for call in (lambda: load_dataset("foo"), lambda: check_data_root("foo", None)):
        with pytest.raises(DataError, match="trainable.dataset: unknown dataset 'foo'.*digits"):
            call()


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_bad_val_fraction(fraction: float) -> None:
    with pytest.raises(DataError, match="data.val_fraction"):
        load_dataset("digits", val_fraction=fraction)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_max_samples(bad: object) -> None:
    with pytest.raises(DataError, match="data.max_samples"):
        load_dataset("digits", max_samples=bad)


def test_max_samples_caps_both_splits_stratified_and_deterministic(tmp_path: Path) -> None:
    ds = load_dataset("digits", max_samples=100, split_seed=3)
    assert (len(ds.y_train), len(ds.y_val)) == (100, 100)
    assert set(ds.y_train) == set(ds.y_val) == set(range(10))
    _assert_standardised(ds)
    again = load_dataset("digits", max_samples=100, split_seed=3)
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    assert len(load_dataset("digits", max_samples=5000).y_train) == 1347
    _write_mnist(tmp_path)
    tiny = load_dataset("mnist", str(tmp_path), max_samples=4)
    assert (len(tiny.y_train), len(tiny.y_val)) == (4, 4)
