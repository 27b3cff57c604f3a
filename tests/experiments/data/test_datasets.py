"""Dataset loaders: shapes, dtypes, splits, determinism, preprocessing, and the original file formats.

Download-only data (CIFAR-10, Lending Club, Fashion-MNIST without the Debian package) is tested
on small files generated here in the original formats; the downloader is replaced so nothing
touches the network.
"""
from __future__ import annotations

import gzip
import hashlib
import inspect
import io
import json
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from experiments.data import datasets
from experiments.data import formats, image
from experiments.data.datasets import Dataset
from experiments.data.synthetic import pattern_templates
from experiments.data.tabular import parse_numeric

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "dataset"
FMNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")
FMNIST_STEMS = list(image.FASHION_MNIST_FILES.values())


def load_config(name: str, **overrides: object) -> Dataset:
    """Instantiate configs/dataset/<name>.yaml the way the runner does (seed from the top level)."""
    cfg = OmegaConf.create({"seed": 0, "dataset": OmegaConf.load(CONFIG_DIR / f"{name}.yaml")})
    for key, value in overrides.items():
        OmegaConf.update(cfg, f"dataset.{key}", value)
    return instantiate(cfg.dataset)


def row_hashes(x: torch.Tensor) -> set[bytes]:
    return {r.tobytes() for r in x.reshape(len(x), -1).numpy()}


def check_contract(ds: Dataset, modality: str, input_shape: tuple[int, ...], n_classes: int) -> None:
    assert ds.modality == modality and ds.input_shape == input_shape and ds.n_classes == n_classes
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (len(y), *input_shape)
        assert torch.isfinite(x).all()
        assert int(y.min()) >= -1 and int(y.max()) < n_classes
    json.dumps(ds.info)  # a run record stores it as it is


# ---------------------------------------------------------------------------------------------
# configs

def test_every_config_names_its_loader_and_only_its_parameters() -> None:
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert names == sorted(["breast_cancer", "digits", "mnist", "fashion_mnist", "imagenet_samples", "cifar10",
                            "lending_club", "synthetic_tabular", "synthetic_image", "sentiment_rationales", "sst2",
                            "synthetic_segmentation", "synthetic_boxes", "cvc_clinicdb", "camvid", "cub_boxes"])
    for name in names:
        raw = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
        assert raw._target_ == f"experiments.data.datasets.{name}"
        assert OmegaConf.to_container(raw)["seed"] == "${seed}"  # the run seed, not a fixed one
        params = set(inspect.signature(getattr(datasets, name)).parameters)
        assert set(raw) - {"_target_"} <= params, name
        assert "modality" not in raw


CHEAP = {  # name: (overrides, modality, input shape, classes)
    "breast_cancer": ({}, "tabular", (30,), 2),
    "digits": ({}, "image", (1, 8, 8), 10),
    "mnist": ({"n_train": 300, "n_test": 100}, "image", (1, 28, 28), 10),
    "imagenet_samples": ({}, "image", (3, 224, 224), 1000),
    "synthetic_tabular": ({"n_train": 200, "n_test": 50}, "tabular", (10,), 2),
    "synthetic_image": ({"n_train": 40, "n_test": 20}, "image", (1, 32, 32), 4),
}


@pytest.mark.parametrize("name", sorted(CHEAP))
def test_config_loads_documented_shapes_and_dtypes(name: str) -> None:
    overrides, modality, shape, n_classes = CHEAP[name]
    ds = load_config(name, **overrides)
    assert ds.name == name
    check_contract(ds, modality, shape, n_classes)
    if modality == "image":
        assert ds.channels == shape[0] and ds.image_size == shape[1:]
        assert ds.model_kwargs() == {"in_channels": shape[0], "num_classes": n_classes, "input_size": list(shape[1:])}
    else:
        assert ds.channels is None and ds.model_kwargs() == {"in_features": shape[0], "num_classes": n_classes}


@pytest.mark.parametrize("loader, total", [(datasets.breast_cancer, 569), (datasets.digits, 1797), (datasets.mnist, 5000)])
def test_unsplit_data_gets_a_disjoint_stratified_split(loader, total: int) -> None:
    ds = loader(seed=3)
    assert len(ds.x_train) + len(ds.x_test) == total
    assert not row_hashes(ds.x_train) & row_hashes(ds.x_test)  # the raw rows are all distinct
    train_share = torch.bincount(ds.y_train) / len(ds.y_train)
    test_share = torch.bincount(ds.y_test) / len(ds.y_test)
    assert torch.allclose(train_share, test_share, atol=0.02)


@pytest.mark.parametrize("loader", [datasets.breast_cancer, datasets.digits, datasets.synthetic_tabular,
                                    datasets.synthetic_image])
def test_same_seed_same_data_other_seed_other_data(loader) -> None:
    a, b, c = loader(seed=1), loader(seed=1), loader(seed=2)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)


def test_breast_cancer_is_standardised_with_training_statistics_only() -> None:
    from sklearn.datasets import load_breast_cancer

    ds = datasets.breast_cancer(seed=0)
    mean, std = np.array(ds.info["mean"]), np.array(ds.info["std"])
    train = ds.x_train.double().numpy()
    assert np.allclose(train.mean(0), 0, atol=1e-5) and np.allclose(train.std(0), 1, atol=1e-5)
    raw_train = train * std + mean
    raw_test = ds.x_test.double().numpy() * std + mean
    assert np.allclose(raw_train.mean(0), mean, rtol=1e-6)  # the statistics are the training split's
    raw = load_breast_cancer().data
    nearest = np.abs(raw_test[:, None, :] - raw[None]).max(-1).min(-1)
    assert nearest.max() < 1e-3 * np.abs(raw).max()  # test rows are the raw rows under the same transform
    assert np.abs(ds.x_test.numpy().mean(0)).max() > 0.05  # and so are not re-centred on themselves


def test_subset_sizes_and_bad_sizes() -> None:
    ds = datasets.digits(n_train=50, n_test=20, seed=0)
    assert (len(ds.x_train), len(ds.x_test)) == (50, 20)
    with pytest.raises(ValueError, match=r"^n_train=0 is invalid for dataset digits; choose an integer in 1\.\.1347 or null for all$"):
        datasets.digits(n_train=0)
    with pytest.raises(ValueError, match=r"^n_test=9999 is invalid for dataset breast_cancer; choose an integer in 1\.\.143 or null for all$"):
        datasets.breast_cancer(n_test=9999)


def test_test_samples_first_or_seeded() -> None:
    ds = datasets.synthetic_image(n_train=4, n_test=10, seed=0)
    x, y, gt = ds.test_samples(3)
    assert torch.equal(x, ds.x_test[:3]) and torch.equal(y, ds.y_test[:3]) and torch.equal(gt, ds.ground_truth[:3])
    xs, ys, _ = ds.test_samples(3, seed=5)
    assert torch.equal(xs, ds.test_samples(3, seed=5)[0]) and xs.shape == (3, 1, 32, 32)
    with pytest.raises(ValueError, match=r"^n_samples=11 is out of range for dataset synthetic_image; choose 1\.\.10$"):
        ds.test_samples(11)


def test_dataset_refuses_wrong_dtypes_and_shapes() -> None:
    x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="x_train must be float32 of rank 2"):
        Dataset("t", "tabular", x.double(), y, x, y, 2)
    with pytest.raises(ValueError, match=r"y_test outside \[0, 2\)"):
        Dataset("t", "tabular", x, y, x, y + 2, 2)
    with pytest.raises(ValueError, match=r"^dataset t: unknown modality 'audio'; choose one of: tabular, image, text$"):
        Dataset("t", "audio", x, y, x, y, 2)
    with pytest.raises(ValueError, match=r"x_train must be int64 of rank 2, got torch.float32"):
        Dataset("t", "text", x, y, x, y, 2)
    with pytest.raises(ValueError, match=r"ground_truth must have shape \(4, 3\)"):
        Dataset("t", "tabular", x, y, x, y, 2, ground_truth=torch.zeros(4, 2))


def test_imagenet_samples_labels_and_normalisation() -> None:
    ds = datasets.imagenet_samples()
    assert ds.info["photographs"] == ["chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle"]
    assert ds.y_test.tolist() == [285, 967, -1, -1, -1]
    assert float(ds.x_test.min()) >= -1.0 and float(ds.x_test.max()) <= 1.0
    assert float(ds.x_test.min()) < -0.9 and float(ds.x_test.max()) > 0.9  # the full [0, 1] range, mapped
    assert torch.equal(ds.x_train, ds.x_test)
    with pytest.raises(ValueError, match=r"^imagenet_samples: unknown photograph\(s\) \['lena'\]; choose from: astronaut, "):
        datasets.imagenet_samples(names=["chelsea", "lena"])


# ---------------------------------------------------------------------------------------------
# IDX / Fashion-MNIST

@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, dtype, suffix: str) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    formats.write_idx(tmp_path / f"a{suffix}", array)
    back = formats.read_idx(tmp_path / f"a{suffix}")
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, array)


def test_idx_header_is_big_endian_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 8, 9]))  # hand-written: 3 uint8 labels
    assert formats.read_idx(path).tolist() == [7, 8, 9]
    path.write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 4, 7, 8, 9]))
    with pytest.raises(ValueError, match=r"IDX header says shape \(4,\) \(4 bytes\) but 3 bytes follow"):
        formats.read_idx(path)
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match=r"not an IDX file \(magic bytes 504b0304\)"):
        formats.read_idx(path)


def write_fashion_files(folder: Path, n_train: int = 30, n_test: int = 12, offset: int = 0) -> None:
    """Tiny Fashion-MNIST files: image k is filled with the value k + offset, its label is k % 10.

    Training files are gzip-compressed and test files not, so both variants are read.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n, suffix in (("train", n_train, ".gz"), ("t10k", n_test, "")):
        values = np.arange(n) + offset
        formats.write_idx(folder / f"{stem}-images-idx3-ubyte{suffix}",
                          np.broadcast_to(values[:, None, None], (n, 28, 28)).astype(np.uint8))
        formats.write_idx(folder / f"{stem}-labels-idx1-ubyte{suffix}", (np.arange(n) % 10).astype(np.uint8))


def test_fashion_mnist_reads_generated_idx_files(tmp_path: Path) -> None:
    write_fashion_files(tmp_path)
    ds = datasets.fashion_mnist(data_dir=str(tmp_path), n_train=None, n_test=None, system_dir=None, download=False)
    check_contract(ds, "image", (1, 28, 28), 10)
    for x, y, n in ((ds.x_train, ds.y_train, 30), (ds.x_test, ds.y_test, 12)):
        values = (x[:, 0, 0, 0] * 255).round().long()
        assert sorted(values.tolist()) == list(range(n))  # every image once (shuffled)
        assert torch.equal(values % 10, y)  # and with its own label
        assert torch.equal(x, x[:, :, :1, :1].expand_as(x))
    assert ds.class_names[9] == "Ankle boot"
    small = datasets.fashion_mnist(data_dir=str(tmp_path), n_train=7, n_test=5, system_dir=None, download=False)
    assert (len(small.x_train), len(small.x_test)) == (7, 5)


def test_fashion_mnist_prefers_data_dir_then_system_dir(tmp_path: Path) -> None:
    write_fashion_files(tmp_path / "mine", offset=0)
    write_fashion_files(tmp_path / "system", offset=100)
    both = datasets.fashion_mnist(data_dir=str(tmp_path / "mine"), system_dir=str(tmp_path / "system"),
                                  n_train=None, n_test=None, download=False)
    assert float(both.x_train.max()) * 255 < 50
    fallback = datasets.fashion_mnist(data_dir=str(tmp_path / "empty"), system_dir=str(tmp_path / "system"),
                                      n_train=None, n_test=None, download=False)
    assert float(fallback.x_train.min()) * 255 > 99
    assert fallback.info["source"] == str(tmp_path / "system")


def test_fashion_mnist_downloads_into_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fashion_files(tmp_path / "server")
    fetched: list[str] = []

    def fake_download(url: str, dest: Path, timeout: float = 30.0) -> None:
        fetched.append(url)
        name = url.rsplit("/", 1)[1]
        source = tmp_path / "server" / name
        data = source.read_bytes() if source.exists() else gzip.compress((tmp_path / "server" / name[:-3]).read_bytes())
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)

    monkeypatch.setattr(formats, "download", fake_download)
    ds = datasets.fashion_mnist(data_dir=str(tmp_path / "dl"), system_dir=None, n_train=None, n_test=None)
    assert sorted(fetched) == sorted(image.FASHION_MNIST_URL + s + ".gz" for s in FMNIST_STEMS)
    assert len(ds.x_train) == 30 and (tmp_path / "dl" / "train-images-idx3-ubyte.gz").is_file()


def test_download_is_atomic(tmp_path: Path) -> None:
    """file:// URLs exercise the real downloader without a network."""
    (tmp_path / "src.bin").write_bytes(b"payload")
    formats.download((tmp_path / "src.bin").as_uri(), tmp_path / "out" / "dest.bin")
    assert (tmp_path / "out" / "dest.bin").read_bytes() == b"payload"
    with pytest.raises(urllib.error.URLError):
        formats.download((tmp_path / "missing.bin").as_uri(), tmp_path / "out" / "other.bin")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dest.bin"]  # no partial file left


def offline(url: str, dest: Path, timeout: float = 30.0) -> None:
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_fashion_mnist_absent_and_offline_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "download", offline)
    with pytest.raises(FileNotFoundError) as err:
        datasets.fashion_mnist(data_dir=str(tmp_path / "none"), system_dir=str(tmp_path / "nosys"))
    assert str(err.value) == (
        f"fashion_mnist: IDX files not found in {tmp_path / 'none'} or {tmp_path / 'nosys'} and the download from "
        f"{image.FASHION_MNIST_URL} failed (<urlopen error [Errno -3] Temporary failure in name resolution>); "
        f"install the Debian package dataset-fashion-mnist or put the four *-ubyte.gz files in {tmp_path / 'none'}")
    with pytest.raises(FileNotFoundError, match=r"^fashion_mnist: IDX files not found in .* and download=false; install"):
        datasets.fashion_mnist(data_dir=str(tmp_path / "none"), system_dir=None, download=False)


@pytest.mark.skipif(not (FMNIST_SYSTEM / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist is not installed (make data installs it)")
def test_fashion_mnist_real_files_from_the_debian_package(tmp_path: Path) -> None:
    ds = load_config("fashion_mnist", data_dir=str(tmp_path), n_train=300, n_test=100, download=False)
    check_contract(ds, "image", (1, 28, 28), 10)
    assert ds.info["source"] == str(FMNIST_SYSTEM) and len(ds.x_train) == 300
    # every loaded image/label pair is one of the package's, decoded here independently (16/8-byte headers)
    for split, x, y in (("train", ds.x_train, ds.y_train), ("t10k", ds.x_test, ds.y_test)):
        raw = gzip.decompress((FMNIST_SYSTEM / f"{split}-images-idx3-ubyte.gz").read_bytes())
        labels = gzip.decompress((FMNIST_SYSTEM / f"{split}-labels-idx1-ubyte.gz").read_bytes())[8:]
        images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 784)
        assert len(images) == len(labels) == (60000 if split == "train" else 10000)
        index = {img.tobytes(): lab for img, lab in zip(images, labels)}
        ours = (x.reshape(len(x), -1) * 255).round().to(torch.uint8).numpy()
        assert [index[r.tobytes()] for r in ours] == y.tolist()
    assert len(set(ds.y_train.tolist())) == 10


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (python pickle batches)

def cifar_batch(n: int, start: int) -> dict[bytes, object]:
    data = np.zeros((n, 3072), dtype=np.uint8)
    data[:, :1024] = (np.arange(n) + start)[:, None]  # red plane: the image's index
    data[:, 1024:2048] = 200  # green
    data[:, 2048:] = np.tile(np.arange(1024) % 32, (n, 1))  # blue: the column index, row-major
    return {b"batch_label": b"generated", b"labels": [(start + i) % 10 for i in range(n)], b"data": data,
            b"filenames": [f"img{start + i}.png".encode() for i in range(n)]}


def write_cifar_files(folder: Path, per_batch: int = 4, n_test: int = 6) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for b in range(5):
        (folder / f"data_batch_{b + 1}").write_bytes(pickle.dumps(cifar_batch(per_batch, b * per_batch), protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(n_test, 100), protocol=2))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    meta = {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def test_cifar10_reads_the_python_batch_format(tmp_path: Path) -> None:
    write_cifar_files(tmp_path / "cifar-10-batches-py")
    ds = load_config("cifar10", data_dir=str(tmp_path / "cifar-10-batches-py"), n_train=None, n_test=None,
                     download=False)
    check_contract(ds, "image", (3, 32, 32), 10)
    assert (len(ds.x_train), len(ds.x_test)) == (20, 6) and ds.class_names[9] == "truck"
    red = (ds.x_train[:, 0] * 255).round().long()
    assert sorted(red[:, 5, 7].tolist()) == list(range(20)) and torch.equal(red[:, 5, 7] % 10, ds.y_train)
    assert torch.allclose(ds.x_train[:, 1], torch.full((20, 32, 32), 200 / 255))
    assert torch.equal((ds.x_test[:, 2] * 255).round().long(), torch.arange(32).expand(6, 32, 32))
    assert sorted((ds.x_test[:, 0, 0, 0] * 255).round().long().tolist()) == list(range(100, 106))


def test_cifar10_refuses_foreign_pickles(tmp_path: Path) -> None:
    write_cifar_files(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Path("x")}))
    with pytest.raises(pickle.UnpicklingError, match="refers to pathlib"):
        datasets.cifar10(data_dir=str(tmp_path), download=False, n_train=None, n_test=None)


def test_cifar10_downloads_checks_and_extracts_the_tarball(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar_files(tmp_path / "src" / "cifar-10-batches-py")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    archive = buffer.getvalue()
    monkeypatch.setattr(image, "CIFAR10_MD5", hashlib.md5(archive).hexdigest())
    monkeypatch.setattr(formats, "download", lambda url, dest, timeout=30.0: dest.write_bytes(archive))
    target = tmp_path / "data" / "cifar-10-batches-py"
    ds = datasets.cifar10(data_dir=str(target), n_train=5, n_test=3)
    assert (len(ds.x_train), len(ds.x_test)) == (5, 3)
    assert sorted(p.name for p in target.iterdir()) == sorted(image.CIFAR10_FILES)
    assert not (tmp_path / "data" / "cifar-10-python.tar.gz").exists()


def test_cifar10_absent_and_offline_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "download", offline)
    with pytest.raises(FileNotFoundError) as err:
        datasets.cifar10(data_dir=str(tmp_path / "cifar"))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"cifar10: data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5, "
                              f"test_batch, batches.meta not found in {tmp_path / 'cifar'} and the download of "
                              f"{image.CIFAR10_URL} failed (<urlopen error")


# ---------------------------------------------------------------------------------------------
# Lending Club CSV

def write_lending_csv(path: Path, n: int = 80, notice: bool = False) -> pd.DataFrame:
    """A small loan file with the Kaggle columns and their messy text values."""
    rng = np.random.default_rng(0)
    statuses = ["Fully Paid"] * 5 + ["Charged Off"] * 3 + ["Current", "Late (31-120 days)",
                                                         "Does not meet the credit policy. Status:Fully Paid", "Default"]
    frame = pd.DataFrame({
        "id": np.arange(n) + 1000,
        "loan_amnt": rng.integers(1, 40, n) * 1000,
        "term": rng.choice([" 36 months", " 60 months"], n),
        "int_rate": [f"{r:.2f}%" if i % 2 else f"{r:.2f}" for i, r in enumerate(rng.uniform(5, 25, n))],
        "installment": rng.uniform(50, 1200, n).round(2),
        "grade": rng.choice(list("ABCDEFG"), n),
        "sub_grade": rng.choice(["A1", "B3", "C5"], n),
        "emp_length": rng.choice(["10+ years", "< 1 year", "3 years", "1 year", "n/a", None], n),
        "home_ownership": rng.choice(["RENT", "MORTGAGE", "OWN", "ANY"], n),
        "annual_inc": np.where(rng.random(n) < 0.1, np.nan, rng.uniform(2e4, 2e5, n).round(0)),
        "verification_status": rng.choice(["Verified", "Not Verified", "Source Verified"], n),
        "loan_status": [statuses[i % len(statuses)] for i in range(n)],
        "purpose": rng.choice(["debt_consolidation", "credit_card", "car", None], n),
        "dti": rng.uniform(0, 40, n).round(2),
        "open_acc": rng.integers(1, 30, n),
        "pub_rec": rng.integers(0, 3, n),
        "revol_bal": rng.integers(0, 50000, n),
        "revol_util": [f"{u:.1f}%" for u in rng.uniform(0, 100, n)],
        "total_acc": rng.integers(2, 60, n),
        "total_pymnt": rng.uniform(0, 5e4, n),  # a post-origination column the loader must ignore
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        if notice:
            fh.write("Notes offered by Prospectus (https://www.lendingclub.com/info/prospectus.action)\n")
        frame.to_csv(fh, index=False)
    return frame


def test_parse_numeric_reads_lending_club_text() -> None:
    values = pd.Series([" 36 months", "10+ years", "< 1 year", "n/a", "13.56%", " 1,250.5", None, "7 years"])
    parsed = parse_numeric(values).tolist()
    assert parsed[:3] == [36.0, 10.0, 0.0] and np.isnan(parsed[3]) and parsed[4:6] == [13.56, 1250.5]
    assert np.isnan(parsed[6]) and parsed[7] == 7.0
    assert parse_numeric(pd.Series([1, 2])).tolist() == [1.0, 2.0]


@pytest.mark.parametrize("notice", [False, True])
def test_lending_club_preprocessing_on_a_generated_csv(tmp_path: Path, notice: bool) -> None:
    frame = write_lending_csv(tmp_path / "loans.csv", notice=notice)
    ds = load_config("lending_club", path=str(tmp_path / "loans.csv"), n_train=None, n_test=None)
    kept = frame[~frame.loan_status.isin(["Current", "Late (31-120 days)"])]
    assert len(ds.x_train) + len(ds.x_test) == len(kept)
    assert ds.info["dropped_statuses"] == {"Current": 6, "Late (31-120 days)": 6}  # rows 12k+8, 12k+9 of 80
    bad = kept.loan_status.isin(["Charged Off", "Default"]).sum()
    assert int(ds.y_train.sum() + ds.y_test.sum()) == bad
    numeric = ["loan_amnt", "term", "int_rate", "installment", "emp_length", "annual_inc", "dti", "open_acc",
               "pub_rec", "revol_bal", "revol_util", "total_acc"]
    assert ds.feature_names[:12] == numeric
    assert ds.feature_names[12:19] == [f"grade={g}" for g in "ABCDEFG"]
    assert "purpose=missing" in ds.feature_names and "total_pymnt" not in ds.feature_names
    check_contract(ds, "tabular", (len(ds.feature_names),), 2)
    assert np.allclose(ds.x_train.double().numpy().mean(0), 0, atol=1e-5)
    raw = ds.x_train.double().numpy() * np.array(ds.info["std"]) + np.array(ds.info["mean"])
    term = raw[:, numeric.index("term")].round(6)
    assert set(term) == {36.0, 60.0}
    assert raw[:, numeric.index("int_rate")].min() >= 5 and raw[:, numeric.index("int_rate")].max() <= 25
    assert set(raw[:, numeric.index("emp_length")].round(6)) <= {0.0, 1.0, 3.0, 10.0, ds.info["medians"]["emp_length"]}
    grades = raw[:, 12:19].round(6)
    assert np.array_equal(grades.sum(1), np.ones(len(raw)))  # one-hot: one grade per loan
    # missing incomes were filled with the training median, the only value not in the CSV
    incomes = set(raw[:, numeric.index("annual_inc")].round(3))
    assert round(ds.info["medians"]["annual_inc"], 3) in incomes


def test_lending_club_missing_file_and_columns(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"^lending_club: no CSV at .*nope\.csv; download the Kaggle Lending Club loan data"):
        datasets.lending_club(path=str(tmp_path / "nope.csv"))
    write_lending_csv(tmp_path / "loans.csv").drop(columns=["dti", "grade"]).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ValueError, match=r"^lending_club: .*short\.csv lacks column\(s\) dti, grade; available: id, loan_amnt"):
        datasets.lending_club(path=str(tmp_path / "short.csv"), n_train=None, n_test=None)


# ---------------------------------------------------------------------------------------------
# synthetic ground truth

@pytest.mark.parametrize("rule", ["linear", "quadratic"])
def test_synthetic_tabular_label_follows_the_known_rule(rule: str) -> None:
    ds = datasets.synthetic_tabular(n_train=300, n_test=100, n_features=8, n_informative=3, rule=rule, seed=4)
    weights = np.array(ds.info["true_weights"])
    informative = ds.info["informative"]
    assert np.flatnonzero(weights).tolist() == informative and len(informative) == 3
    assert informative != [0, 1, 2]  # not simply the first columns
    assert ds.ground_truth.shape == (100, 8)
    assert torch.equal(ds.ground_truth, torch.tensor(weights != 0, dtype=torch.float32).expand(100, 8))
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        raw = x.double().numpy() * np.array(ds.info["std"]) + np.array(ds.info["mean"])
        score = raw @ weights if rule == "linear" else (raw**2 - 1) @ weights
        assert np.array_equal(score > ds.info["threshold"], y.numpy().astype(bool))
    assert abs(float(ds.y_train.float().mean()) - 0.5) < 0.1
    if rule == "linear":  # the same rule on the standardised inputs
        z = ds.x_test.double().numpy() @ np.array(ds.info["true_weights_standardised"])
        offset = np.array(ds.info["mean"]) @ weights
        assert np.array_equal(z + offset > ds.info["threshold"], ds.y_test.numpy().astype(bool))


@pytest.mark.parametrize("channels, n_classes, location", [(1, 4, "random"), (3, 2, "center")])
def test_synthetic_image_pattern_is_where_ground_truth_says(channels: int, n_classes: int, location: str) -> None:
    ds = datasets.synthetic_image(n_train=20, n_test=40, channels=channels, n_classes=n_classes, location=location,
                                  seed=2)
    check_contract(ds, "image", (channels, 32, 32), n_classes)
    assert ds.ground_truth.shape == (40, 1, 32, 32)
    mask = ds.ground_truth.bool().expand_as(ds.x_test)
    assert torch.all(ds.x_test[mask] == 1.0)  # the pattern is there, in every channel
    assert torch.all(ds.x_test[~mask] < 0.5)  # and nowhere else does a pixel reach it
    templates = torch.tensor(ds.info["templates"], dtype=torch.float32)
    for k, (top, left) in enumerate(ds.info["positions"]):
        window = ds.ground_truth[k, 0, top:top + 8, left:left + 8]
        assert torch.equal(window, templates[ds.y_test[k]])
        assert ds.ground_truth[k].sum() == templates[ds.y_test[k]].sum()
        if location == "center":
            assert (top, left) == (12, 12)
    assert len(set(ds.y_test.tolist())) == n_classes


def test_synthetic_patterns_are_distinct_and_bad_arguments_are_refused() -> None:
    t = pattern_templates(8).reshape(4, -1)
    assert all(t[i].sum() > 0 for i in range(4))
    assert len({row.tobytes() for row in t}) == 4
    with pytest.raises(ValueError, match=r"^synthetic_image: n_classes=5 is invalid; choose 2\.\.4$"):
        datasets.synthetic_image(n_classes=5)
    with pytest.raises(ValueError, match=r"^synthetic_tabular: unknown rule 'cubic'; choose one of: linear, quadratic$"):
        datasets.synthetic_tabular(rule="cubic")
