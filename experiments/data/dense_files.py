"""Real segmentation and box data, read from their published folder layouts where the files exist.

Nothing here downloads: these sets are distributed by their authors under their own terms (CVC-
ClinicDB and CamVid by request or mirror pages, CUB-200-2011 from Caltech). A loader whose files
are missing says which files it looked for and where, in one line. Images are resized to ``size``
(an int for a square, or [height, width]) with bilinear filtering, masks with the box filter and
then thresholded at 0.5, and scaled to [0, 1] (NCHW float32, RGB).

- ``cvc_clinicdb``: colonoscopy frames and polyp masks, ``Original/<k>.<ext>`` with ``Ground
  Truth/<k>.<ext>`` (the official TIFF release), also under ``PNG/`` or ``TIF/`` as some mirrors
  pack it. No official split: a seeded ``test_fraction``.
- ``camvid``: road scenes; one class against the rest. Either the SegNet layout (``train/``,
  ``trainannot/``, ``val/``, ``valannot/``, ``test/``, ``testannot/``, label PNGs holding class
  indices in CAMVID_CLASSES order) or the colour-coded one (``train/``, ``train_labels/``, ...,
  ``<stem>_L.png`` label images and ``class_dict.csv`` with ``name,r,g,b``). Train = train + val.
- ``cub_boxes``: CUB-200-2011 birds with one box each: ``images.txt`` (id, path under
  ``images/``), ``bounding_boxes.txt`` (id, x, y, width, height in pixels),
  ``train_test_split.txt`` (id, 1 = training) and, for the class label, ``image_class_labels.txt``
  and ``classes.txt`` where present.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from experiments.data.base import Dataset, as_inputs, as_labels, subset
from experiments.errors import DataError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist", "Unlabelled"]   # the SegNet release's label indices 0..11

Size = Union[int, Sequence[int]]


def _hw(name: str, size: Size) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, int) and not isinstance(size, bool) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 4 for v in hw):
        raise DataError(f"{name}: size={size!r} is invalid; choose an integer >= 4 or [height, width]")
    return int(hw[0]), int(hw[1])


def _read_rgb(path: Path, hw: tuple[int, int]) -> np.ndarray:
    """(3, H, W) float32 in [0, 1], resized with bilinear filtering."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB").resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0


def _resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A (H, W) bool mask resized by the area it covers (box filter), kept where it covers half."""
    from PIL import Image

    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((hw[1], hw[0]), Image.Resampling.BOX)
    return (np.asarray(im, dtype=np.float32) >= 127.5).astype(np.float32)


def _read_array(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def _images_in(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES} \
        if folder.is_dir() else {}


def _split(name: str, n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"{name}: test_fraction={test_fraction!r} is invalid; choose a value in (0, 1)")
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(test_fraction * n)))
    if n_test >= n:
        raise DataError(f"{name}: {n} image(s) cannot be split into a training and a test part")
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _subsets(name: str, train: np.ndarray, test: np.ndarray, n_train: int | None, n_test: int | None,
             seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (np.sort(train[subset(name, "n_train", n_train, len(train), rng)]),
            np.sort(test[subset(name, "n_test", n_test, len(test), rng)]))


def _segmentation_set(name: str, images: list[np.ndarray], masks: list[np.ndarray], train: np.ndarray,
                      test: np.ndarray, info: dict, class_name: str) -> Dataset:
    x, m = np.stack(images), np.stack(masks)[:, None]
    return Dataset(name, "image", as_inputs(x[train]), as_labels(np.zeros(len(train))), as_inputs(x[test]),
                   as_labels(np.zeros(len(test))), 1, class_names=[class_name], task="binary-segmentation",
                   targets_train=torch.from_numpy(m[train]), targets_test=torch.from_numpy(m[test]),
                   info={**info, "foreground_fraction": float(m[test].mean())})


# --------------------------------------------------------------------------------------------
# CVC-ClinicDB

CVC_IMAGES, CVC_MASKS = "Original", "Ground Truth"


def _cvc_folders(root: Path) -> tuple[Path, Path] | None:
    for base in (root, root / "PNG", root / "TIF"):
        if (base / CVC_IMAGES).is_dir() and (base / CVC_MASKS).is_dir():
            return base / CVC_IMAGES, base / CVC_MASKS
    return None


def cvc_clinicdb(data_dir: str = "data/CVC-ClinicDB", size: Size = 64, test_fraction: float = 0.2,
                 n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> Dataset:
    """CVC-ClinicDB: 612 colonoscopy frames with polyp masks (white = polyp), as one binary task."""
    name = "cvc_clinicdb"
    hw = _hw(name, size)
    root = Path(data_dir)
    folders = _cvc_folders(root)
    if folders is None:
        raise FileNotFoundError(f"{name}: no '{CVC_IMAGES}' and '{CVC_MASKS}' folders in {root} (or its PNG/, TIF/); "
                                f"put the CVC-ClinicDB release there (nothing is downloaded)")
    images, masks = (_images_in(f) for f in folders)
    stems = sorted(set(images) & set(masks), key=lambda s: (len(s), s))
    unpaired = sorted(set(images) ^ set(masks))
    if unpaired:
        raise DataError(f"{name}: {len(unpaired)} file(s) without a partner in {folders[0]} / {folders[1]} "
                        f"(first: {unpaired[0]!r}); each frame needs its mask of the same name")
    if len(stems) < 2:
        raise DataError(f"{name}: {len(stems)} image/mask pair(s) in {folders[0]}; need at least 2")
    x = [_read_rgb(images[s], hw) for s in stems]
    m = []
    for s in stems:
        raw = _read_array(masks[s]).astype(np.float32)
        m.append(_resize_mask((raw.max(axis=-1) if raw.ndim == 3 else raw) > 127, hw))
    train, test = _split(name, len(stems), test_fraction, seed)
    train, test = _subsets(name, train, test, n_train, n_test, seed)
    return _segmentation_set(name, x, m, train, test,
                             {"source": str(folders[0].parent), "size": list(hw), "files": [stems[i] for i in test],
                              "split": f"seeded, test_fraction={test_fraction}, seed={seed}",
                              "preprocessing": "RGB / 255, bilinear resize; masks > 127, box-filter resize >= 0.5"},
                             "polyp")


# --------------------------------------------------------------------------------------------
# CamVid

def _camvid_layout(root: Path) -> str | None:
    if (root / "train").is_dir() and (root / "trainannot").is_dir():
        return "segnet"
    if (root / "train").is_dir() and (root / "train_labels").is_dir() and (root / "class_dict.csv").is_file():
        return "colour"
    return None


def _class_colours(path: Path) -> dict[str, tuple[int, int, int]]:
    import csv

    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    out = {}
    for k, row in enumerate(rows[1:], start=2):
        if len(row) != 4:
            raise DataError(f"camvid: {path} line {k} has {len(row)} fields; expected name,r,g,b")
        out[row[0]] = tuple(int(v) for v in row[1:])
    return out


def camvid(data_dir: str = "data/CamVid", size: Size = (48, 64), class_name: str = "Car",
           n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> Dataset:
    """CamVid: one class (``class_name``, e.g. Car or Road) as the foreground, every other label
    as background; train and val frames train, test frames test."""
    name = "camvid"
    hw = _hw(name, size)
    root = Path(data_dir)
    layout = _camvid_layout(root)
    if layout is None:
        raise FileNotFoundError(f"camvid: neither train/ + trainannot/ (SegNet layout) nor train/ + train_labels/ + "
                                f"class_dict.csv found in {root}; put a CamVid release there (nothing is downloaded)")
    if layout == "segnet":
        if class_name not in CAMVID_CLASSES:
            raise DataError(f"camvid: unknown class {class_name!r}; choose one of: {', '.join(CAMVID_CLASSES)}")
        index = CAMVID_CLASSES.index(class_name)
        label_dir, label_name = "{split}annot", "{stem}"
    else:
        colours = _class_colours(root / "class_dict.csv")
        if class_name not in colours:
            raise DataError(f"camvid: unknown class {class_name!r}; choose one of: {', '.join(colours)}")
        colour = np.array(colours[class_name])
        label_dir, label_name = "{split}_labels", "{stem}_L"
    x, m, part = [], [], []
    for split in ("train", "val", "test"):
        frames = _images_in(root / split)
        labels = _images_in(root / label_dir.format(split=split))
        if split != "val" and not frames:
            raise DataError(f"camvid: no images in {root / split}")
        for stem, path in frames.items():
            key = label_name.format(stem=stem)
            if key not in labels:
                raise DataError(f"camvid: {path} has no label image {key}.* in {root / label_dir.format(split=split)}")
            raw = _read_array(labels[key])
            fg = (raw == index) if layout == "segnet" else np.all(raw[..., :3] == colour, axis=-1)
            if fg.ndim == 3:   # an index stored in every channel
                fg = fg[..., 0]
            x.append(_read_rgb(path, hw))
            m.append(_resize_mask(fg, hw))
            part.append(split)
    is_test = np.array([p == "test" for p in part])
    train, test = _subsets(name, np.nonzero(~is_test)[0], np.nonzero(is_test)[0], n_train, n_test, seed)
    return _segmentation_set(name, x, m, train, test,
                             {"source": str(root), "layout": layout, "class": class_name, "size": list(hw),
                              "split": "train + val / test (the release's)",
                              "preprocessing": "RGB / 255, bilinear resize; class mask, box-filter resize >= 0.5"},
                             class_name)


# --------------------------------------------------------------------------------------------
# CUB-200-2011

CUB_FILES = ("images.txt", "bounding_boxes.txt", "train_test_split.txt")


def _table(path: Path, fields: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for k, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=fields - 1) if fields == 2 else line.split()
        if len(parts) != fields:
            raise DataError(f"cub_boxes: {path} line {k} has {len(parts)} fields; expected {fields}")
        try:
            out[int(parts[0])] = parts[1:]
        except ValueError:
            raise DataError(f"cub_boxes: {path} line {k} does not start with an image id: {line!r}") from None
    return out


def cub_boxes(data_dir: str = "data/CUB_200_2011", size: Size = 64, n_train: int | None = None,
              n_test: int | None = None, seed: int = 0) -> Dataset:
    """CUB-200-2011: one bird per image, its box (x, y, w, h in pixels) as (x0, y0, x1, y1)
    fractions of the image's width and height; the release's train/test split; y is the species
    (0..199) where ``image_class_labels.txt`` exists, else 0."""
    name = "cub_boxes"
    hw = _hw(name, size)
    root = Path(data_dir)
    missing = [f for f in CUB_FILES if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"cub_boxes: {', '.join(missing)} not found in {root}; put the CUB-200-2011 "
                                f"release there (nothing is downloaded)")
    paths = _table(root / "images.txt", 2)
    boxes = _table(root / "bounding_boxes.txt", 5)
    is_train = _table(root / "train_test_split.txt", 2)
    labels = _table(root / "image_class_labels.txt", 2) if (root / "image_class_labels.txt").is_file() else {}
    classes = _table(root / "classes.txt", 2) if (root / "classes.txt").is_file() else {}
    ids = sorted(paths)
    for table, file in ((boxes, "bounding_boxes.txt"), (is_train, "train_test_split.txt")):
        lacking = [i for i in ids if i not in table]
        if lacking:
            raise DataError(f"cub_boxes: image id {lacking[0]} of images.txt has no line in {file}")
    train_ids = np.array([i for i in ids if is_train[i][0].strip() == "1"])
    test_ids = np.array([i for i in ids if is_train[i][0].strip() != "1"])
    if not len(train_ids) or not len(test_ids):
        raise DataError(f"cub_boxes: train_test_split.txt leaves {len(train_ids)} training and {len(test_ids)} "
                        f"test images; need both")
    train_ids, test_ids = _subsets(name, train_ids, test_ids, n_train, n_test, seed)
    from PIL import Image

    def load(i: int) -> tuple[np.ndarray, np.ndarray, int]:
        path = root / "images" / paths[i][0].strip()
        if not path.is_file():
            raise FileNotFoundError(f"cub_boxes: {path} (image id {i} of images.txt) not found")
        with Image.open(path) as im:
            width, height = im.size
        x0, y0, w, h = (float(v) for v in boxes[i])
        box = np.clip(np.array([x0 / width, y0 / height, (x0 + w) / width, (y0 + h) / height]), 0.0, 1.0)
        if not (box[2] > box[0] and box[3] > box[1]):
            raise DataError(f"cub_boxes: image id {i} has the empty box {boxes[i]} in a {width}x{height} image")
        label = int(labels[i][0]) - 1 if i in labels else 0
        return _read_rgb(path, hw), box.astype(np.float32), label

    splits = []
    for chosen in (train_ids, test_ids):
        parts = [load(int(i)) for i in chosen]
        splits.append((np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts]),
                       np.array([p[2] for p in parts])))
    (xtr, btr, ytr), (xte, bte, yte) = splits
    n_classes = max(len(classes), int(max(ytr.max(), yte.max())) + 1)
    if n_classes > 1 and classes:
        class_names = [classes[k][0].strip() for k in sorted(classes)]
    else:
        class_names = [f"class {k}" for k in range(n_classes)]
    return Dataset(name, "image", as_inputs(xtr), as_labels(ytr), as_inputs(xte), as_labels(yte), n_classes,
                   class_names=class_names, task="bbox-regression", targets_train=torch.from_numpy(btr),
                   targets_test=torch.from_numpy(bte),
                   info={"source": str(root), "size": list(hw), "test_ids": [int(i) for i in test_ids],
                         "split": "the release's train_test_split.txt" +
                                  (f"; seeded subsets n_train={n_train}, n_test={n_test}" if n_train or n_test else ""),
                         "preprocessing": "RGB / 255, bilinear resize (aspect ratio not kept); box / image size"})
