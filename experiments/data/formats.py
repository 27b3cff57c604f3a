"""Readers for the original on-disk formats (IDX, the CIFAR python pickles) and the downloader.

Everything that touches the network goes through `download`, so tests can replace it and
nothing is fetched at test time.
"""
from __future__ import annotations

import gzip
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from experiments.errors import DataError

# IDX type codes (the third byte of the magic number) and their big-endian numpy types.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse an IDX file (the MNIST/Fashion-MNIST format), gzip-compressed or not.

    Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
    dimension, then the values in C order, big-endian.
    """
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (magic bytes {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX header says shape {shape} ({expected} bytes) but {len(raw) - header} bytes follow")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in .gz); used by tests."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}
    dtype = np.dtype(array.dtype).newbyteorder("=")
    if dtype not in codes:
        raise DataError(f"IDX cannot hold dtype {array.dtype}; choose one of: uint8, int8, int16, int32, float32, float64")
    body = bytes([0, 0, codes[dtype], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body += np.ascontiguousarray(array).astype(_IDX_TYPES[codes[dtype]]).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(body)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR batch holds (dicts, lists, bytes, numpy arrays).

    The format is a pickle, and a pickle from an untrusted directory could run code; refusing
    every other global keeps loading a data file from doing anything but building arrays.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2: harmless
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR batch refers to {module}.{name}, which a CIFAR batch never holds")
        return super().find_class(module, name)


def read_cifar_batch(path: str | os.PathLike[str]) -> dict[bytes, Any]:
    """Load one file of the CIFAR python format (a pickled dict with bytes keys)."""
    with open(path, "rb") as fh:
        return _CifarUnpickler(fh, encoding="bytes").load()


def download(url: str, dest: Path, timeout: float = 30.0) -> None:
    """Fetch ``url`` to ``dest`` atomically (a temp file renamed into place), so a cut
    connection never leaves a truncated file that would later be read as data."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def extract_tar(archive: Path, dest: Path, strip: str) -> None:
    """Extract the members of ``archive`` under the folder ``strip`` into ``dest`` (flattened one level).

    Only regular files are written, and only under ``dest``: a member path that escapes it is refused.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 2 or parts[0] != strip or parts[1] in (".", ".."):
                continue
            target = dest / parts[1]
            src = tar.extractfile(member)
            assert src is not None  # a regular file always has content
            with src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
