"""The local dataset file formats, parsed without trusting the files: IDX and CIFAR-10 pickles.

IDX (MNIST-style, optionally gzipped) files are checked against their header's magic number
and dimensions; CIFAR-10 batches are unpickled by an unpickler that resolves only the numpy
globals a plain array needs, so a pickle cannot run code. Every problem is a one-line
:class:`DataError` naming the file.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

_PICKLE_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)
#: First byte of a pickled dict: PROTO (protocol 2+), EMPTY_DICT (1) or MARK (0).
_PICKLED_DICT_STARTS = (b"\x80", b"}", b"(")


class DataError(ValueError):
    """A dataset cannot be loaded; the message is one line naming the key/path and the problem."""


def idx_dims(path: Path, ndim: int) -> tuple[int, ...]:
    """The dimensions in the header of an unsigned-byte IDX file (reading only the header)."""
    header_len = 4 + 4 * ndim
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as fh:
            head = fh.read(header_len)
    except (OSError, EOFError) as exc:
        raise DataError(f"data.root: cannot read '{path}': {exc}") from exc
    dims = _idx_header(head, path, ndim)
    if path.suffix != ".gz" and path.stat().st_size - header_len != int(np.prod(dims)):
        raise DataError(
            f"data.root: malformed IDX file '{path}': header says {dims} but "
            f"{path.stat().st_size - header_len} data bytes follow"
        )
    return dims


def _idx_header(raw: bytes, path: Path, ndim: int) -> tuple[int, ...]:
    """Check the magic number of an IDX file's first bytes and return its dimensions."""
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"data.root: malformed IDX file '{path}': only {len(raw)} bytes")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != 0x0800 + ndim:
        raise DataError(
            f"data.root: malformed IDX file '{path}': magic 0x{magic:08x}, "
            f"expected 0x{0x0800 + ndim:08x} (unsigned bytes, {ndim} dims)"
        )
    return struct.unpack(f">{ndim}I", raw[4:header_len])


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file: magic 0x0000 08 ndim, big-endian dims, then data."""
    raw = _read_bytes(path)
    header_len = 4 + 4 * ndim
    dims = _idx_header(raw, path, ndim)
    if len(raw) - header_len != int(np.prod(dims)):
        raise DataError(
            f"data.root: malformed IDX file '{path}': header says {dims} but "
            f"{len(raw) - header_len} data bytes follow"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    """Return the content of `path`, gunzipped when its name ends with .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"data.root: cannot read '{path}': {exc}") from exc


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals needed to rebuild plain arrays."""

    def __init__(self, fh: BinaryIO, path: Path) -> None:
        super().__init__(fh, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> object:
        """Refuse every global outside the numpy array allow-list with a DataError."""
        if (module, name) not in _PICKLE_GLOBALS:
            raise DataError(f"data.root: refusing to load '{self._path}': it references {module}.{name}")
        return super().find_class(module, name)


def check_pickle_start(path: Path) -> None:
    """Raise DataError unless `path` starts like a pickled dict (reading only its first byte)."""
    with path.open("rb") as fh:
        if fh.read(1) not in _PICKLED_DICT_STARTS:
            raise DataError(f"data.root: cannot unpickle '{path}': it does not start like a pickle")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, Sequence[Any]]:
    """Unpickle one CIFAR-10 batch dict (bytes or str keys) safely and validate its arrays.

    Returns the images (N, 3, 32, 32) and the N labels as stored; their values are the caller's
    to check.
    """
    try:
        with path.open("rb") as fh:
            batch = _NumpyOnlyUnpickler(fh, path).load()
    except DataError:
        raise
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise DataError(f"data.root: cannot unpickle '{path}': {exc}") from exc
    if not isinstance(batch, dict):
        raise DataError(f"data.root: '{path}' is not a CIFAR-10 batch dict")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"data.root: '{path}' has no uint8 'data' array of shape (N, 3072)")
    if data.shape[1] != 3072 or labels is None or len(labels) != len(data):
        raise DataError(f"data.root: '{path}': data {data.shape} does not match the labels")
    return data.reshape(-1, 3, 32, 32), labels
