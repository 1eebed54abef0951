"""Datasets are loaded from sklearn, mnist1d, generated in code (spirals) or read from local files
only; nothing is ever downloaded.

Every loader returns raw train/val arrays; :func:`load_dataset` then subsamples, standardises
per channel with train-split statistics and packs the result into a :class:`Dataset`.

The file formats (IDX, CIFAR-10 pickles) are parsed in :mod:`trainables.formats`; its
:class:`DataError` stays importable from here.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.formats import DataError, check_pickle_start, idx_dims, read_cifar_batch, read_idx
from trainables.spirals import SPIRAL_CLASSES, make_spirals

logger = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("digits", "mnist1d", "spirals", "mnist", "fashion_mnist", "cifar10")
#: Classes per dataset (labels 0..n-1); a classifier's chance level is one over it.
NUM_CLASSES: dict[str, int] = {
    "digits": 10,
    "mnist1d": 10,
    "spirals": SPIRAL_CLASSES,
    "mnist": 10,
    "fashion_mnist": 10,
    "cifar10": 10,
}
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "digits": (1, 8, 8),
    "mnist1d": (1, 40),
    "spirals": (1, 2),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
}
_TORCHVISION_DIRS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_BATCHES = tuple(f"data_batch_{k}" for k in range(1, 6))
_MNIST1D_CACHE: dict[str, np.ndarray] = {}
_MNIST1D_LOCK = threading.Lock()

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Dataset:
    """A standardised train/val split: float32 inputs (N, *input_shape), int64 labels (N,)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    input_shape: tuple[int, ...]
    num_classes: int


def load_dataset(
    name: str,
    root: str | None = None,
    *,
    val_fraction: float = 0.25,
    split_seed: int = 0,
    max_samples: int | None = None,
    classes: tuple[int, ...] | None = None,
) -> Dataset:
    """Load dataset `name` offline, keep `classes`, split it, cap it to `max_samples`, standardise it.

    Args:
        name: One of :data:`DATASETS`.
        root: Directory holding the files of mnist, fashion_mnist and cifar10 (else unused).
        val_fraction: Share of the training files held out for validation, in (0, 1).
            mnist1d ignores it and uses its fixed 4000/1000 split.
        split_seed: Seed of the stratified split and of the `max_samples` subsample.
        max_samples: If set, at most this many train and at most this many val samples.
        classes: If set, only the samples of these labels, renumbered 0..k-1 in the order given:
            the model has k outputs, so a warm start of a model of every class from it loads all
            but the output layer (a different shape), which keeps the trial's seeded values.

    Returns:
        The standardised :class:`Dataset`.

    Raises:
        DataError: Unknown name, bad option, missing or malformed files.
    """
    check_data_root(name, root)
    _check_options(val_fraction, max_samples)
    check_classes(name, classes)
    if name == "mnist1d":
        x_train, y_train, x_val, y_val = _mnist1d_splits()
    else:
        x, y = _LOADERS[name](name, root)
        x, y = _keep_classes(x, y, classes)
        x_train, y_train, x_val, y_val = _split(x, y, val_fraction, split_seed)
    if name == "mnist1d" and classes is not None:
        x_train, y_train = _keep_classes(x_train, y_train, classes)
        x_val, y_val = _keep_classes(x_val, y_val, classes)
    if max_samples is not None:
        x_train, y_train = _subsample(x_train, y_train, max_samples, split_seed)
        x_val, y_val = _subsample(x_val, y_val, max_samples, split_seed)
    shape = INPUT_SHAPES[name]
    x_train, x_val = _standardise(x_train.reshape(-1, *shape), x_val.reshape(-1, *shape))
    logger.info("dataset %s: %d train / %d val samples", name, len(y_train), len(y_val))
    y_train, y_val = np.asarray(y_train, np.int64), np.asarray(y_val, np.int64)
    num_classes = NUM_CLASSES[name] if classes is None else len(classes)
    return Dataset(name, x_train, y_train, x_val, y_val, shape, num_classes)


def check_data_root(name: str, root: str | None) -> None:
    """Raise DataError unless `name` is known and its local files exist under `root` and look right.

    Cheap (only file headers are read: IDX magic, dimensions and size, a CIFAR batch's first byte),
    so the entry point calls it before anything starts. digits, mnist1d and spirals need no files,
    so only their name is checked.
    """
    if name not in DATASETS:
        raise DataError(f"trainable.dataset: unknown dataset {name!r} (choose from {', '.join(DATASETS)})")
    if name in _TORCHVISION_DIRS:
        images, labels = _idx_paths(name, root)
        n_images, *shape = idx_dims(images, 3)
        (n_labels,) = idx_dims(labels, 1)
        if tuple(shape) != (28, 28) or n_images != n_labels:
            raise DataError(
                f"data.root: '{images}' holds {(n_images, *shape)} images but '{labels}' "
                f"holds {n_labels} labels (expected (N, 28, 28) and N)"
            )
    elif name == "cifar10":
        for path in _cifar_paths(root):
            check_pickle_start(path)


def check_classes(name: str, classes: tuple[int, ...] | list[int] | None) -> None:
    """Refuse ``classes`` that are empty, repeated or outside the dataset's labels 0..n-1."""
    if classes is None:
        return
    n = NUM_CLASSES[name]
    if not classes or len(set(classes)) != len(classes):
        shown = list(classes)
        raise DataError(f"data.classes: must be distinct labels of {name} (0..{n - 1}), got {shown!r}")
    bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < n]
    if bad:
        raise DataError(f"data.classes: {name} has the labels 0..{n - 1}, got {bad[0]!r}")


def _keep_classes(x: np.ndarray, y: np.ndarray, classes: tuple[int, ...] | None) -> Arrays:
    """The samples whose label is one of ``classes``, labelled by its index there (all as they
    are when None)."""
    if classes is None:
        return x, y
    y = np.asarray(y)
    keep = np.isin(y, list(classes))
    index = {label: i for i, label in enumerate(classes)}
    return x[keep], np.array([index[int(v)] for v in y[keep]], dtype=np.int64)


def _check_options(val_fraction: float, max_samples: int | None) -> None:
    """Reject a val_fraction outside (0, 1) and a max_samples below 1."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"data.val_fraction: must be in (0, 1), got {val_fraction!r}")
    bad_type = isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer))
    if max_samples is not None and (bad_type or max_samples < 1):
        raise DataError(f"data.max_samples: must be a positive integer, got {max_samples!r}")


def _root_dir(name: str, root: str | None) -> Path:
    """Return `root` as an existing directory or raise a DataError that rules out downloads."""
    why = f"{name} is read from local files, never downloaded"
    if root is None or not str(root).strip():
        raise DataError(f"data.root: required for dataset {name!r} ({why})")
    path = Path(root).expanduser()
    if not path.is_dir():
        problem = "is not a directory" if path.exists() else "does not exist"
        raise DataError(f"data.root: directory '{path}' {problem} ({why})")
    return path


def _find(directory: Path, stem: str) -> Path | None:
    """Return `directory/stem` or `directory/stem.gz`, whichever exists first."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_paths(name: str, root: str | None) -> tuple[Path, Path]:
    """Locate the train image and label IDX files in `root` or torchvision's `root/X/raw`."""
    base = _root_dir(name, root)
    for directory in (base, base / _TORCHVISION_DIRS[name] / "raw"):
        images = _find(directory, _IDX_FILES[0])
        if images is not None:
            labels = _find(directory, _IDX_FILES[1])
            if labels is None:
                raise DataError(f"data.root: no {_IDX_FILES[1]}(.gz) in '{directory}'")
            return images, labels
    raw = Path(_TORCHVISION_DIRS[name]) / "raw"
    raise DataError(f"data.root: no {_IDX_FILES[0]}(.gz) in '{base}' (nor in {raw}/)")


def _cifar_paths(root: str | None) -> list[Path]:
    """Locate the existing data_batch_1..5 files in `root/cifar-10-batches-py` or `root`."""
    base = _root_dir("cifar10", root)
    for directory in (base / _CIFAR_DIR, base):
        found = [directory / b for b in _CIFAR_BATCHES if (directory / b).is_file()]
        if found:
            return found
    raise DataError(f"data.root: no {_CIFAR_DIR}/data_batch_1..5 in '{base}'")


def _load_digits(name: str, root: str | None) -> Arrays:
    """Return sklearn's bundled 8x8 digits (1797 images, values 0..16)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


def _load_spirals(name: str, root: str | None) -> Arrays:
    """Return the three interleaved spirals of :mod:`trainables.spirals` (1500 points, 2-D)."""
    return make_spirals()


def _mnist1d_splits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Build MNIST-1D once per process without touching the caller's global RNG states."""
    with _MNIST1D_LOCK:
        if not _MNIST1D_CACHE:
            from mnist1d.data import get_dataset_args, make_dataset  # make_dataset never downloads

            np_state, py_state = np.random.get_state(), random.getstate()
            try:
                raw = make_dataset(get_dataset_args())
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)
            _MNIST1D_CACHE.update({k: np.asarray(raw[k]) for k in ("x", "y", "x_test", "y_test")})
    c = _MNIST1D_CACHE
    return c["x"], c["y"], c["x_test"], c["y_test"]


def _load_idx_dataset(name: str, root: str | None) -> Arrays:
    """Read the MNIST-style train images (N, 28, 28) and labels (N,) from IDX files."""
    images_path, labels_path = _idx_paths(name, root)
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise DataError(
            f"data.root: '{images_path}' holds {images.shape} images but '{labels_path}' "
            f"holds {len(labels)} labels (expected (N, 28, 28) and N)"
        )
    return images, _labels(labels, labels_path, NUM_CLASSES[name])


def _load_cifar(name: str, root: str | None) -> Arrays:
    """Read and concatenate every data_batch_k: images (N, 3, 32, 32) and labels (N,)."""
    images, labels = [], []
    for path in _cifar_paths(root):  # each batch's labels checked before the next batch is read
        data, raw = read_cifar_batch(path)
        images.append(data)
        labels.append(_labels(raw, path, NUM_CLASSES[name]))
    return np.concatenate(images), np.concatenate(labels)


_LOADERS: dict[str, Callable[[str, str | None], Arrays]] = {
    "digits": _load_digits,
    "spirals": _load_spirals,
    "mnist": _load_idx_dataset,
    "fashion_mnist": _load_idx_dataset,
    "cifar10": _load_cifar,
}


def _stratify(y: np.ndarray, n_first: int, n_second: int) -> np.ndarray | None:
    """Return `y` when both parts can hold every class at least once, else None."""
    counts = np.unique(y, return_counts=True)[1]
    if counts.min() >= 2 and min(n_first, n_second) >= len(counts):
        return y
    logger.warning("too few samples per class for a stratified split; splitting at random")
    return None


def _split(
    x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split into train/val, stratified by label, with `val_fraction` held out."""
    from sklearn.model_selection import train_test_split

    n_val = int(np.ceil(len(y) * val_fraction))
    if n_val < 1 or n_val >= len(y):
        raise DataError(f"data.val_fraction: {val_fraction} leaves an empty split of {len(y)}")
    stratify = _stratify(y, len(y) - n_val, n_val)
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=n_val, random_state=seed, stratify=stratify)
    return x_tr, y_tr, x_va, y_va


def _subsample(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> Arrays:
    """Keep a deterministic, stratified subset of at most `n` samples."""
    if len(y) <= n:
        return x, y
    from sklearn.model_selection import train_test_split

    stratify = _stratify(y, n, len(y) - n)
    x_keep, _, y_keep, _ = train_test_split(x, y, train_size=n, random_state=seed, stratify=stratify)
    return x_keep, y_keep


def _standardise(x_train: np.ndarray, x_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale each channel to zero mean, unit std using train statistics (std 0 -> 1)."""
    x_train, x_val = np.array(x_train, dtype=np.float32), np.array(x_val, dtype=np.float32)
    bcast = (1, -1) + (1,) * (x_train.ndim - 2)
    channels = [x_train[:, c] for c in range(x_train.shape[1])]
    mean = np.array([ch.mean(dtype=np.float64) for ch in channels])
    std = np.array([ch.std(dtype=np.float64) for ch in channels])
    std[std == 0] = 1.0
    mean, std = mean.astype(np.float32).reshape(bcast), std.astype(np.float32).reshape(bcast)
    for x in (x_train, x_val):  # fresh copies, so scaling in place is safe and saves memory
        x -= mean
        x /= std
    return x_train, x_val


def _labels(labels: object, path: Path, num_classes: int) -> np.ndarray:
    """Return the labels read from `path` as int64, rejecting any outside 0..num_classes-1."""
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"data.root: '{path}' has non-integer labels: {exc}") from exc
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"data.root: '{path}' has labels {y.min()}..{y.max()}, expected 0..{num_classes - 1}")
    return y
