"""Generated scenes for the dense tasks: objects on cluttered backgrounds, with their masks and boxes.

``synthetic_segmentation`` labels every pixel of every object (the foreground mask);
``synthetic_boxes`` puts one object of the target class among distractors of other classes and
labels its box. Both come from one scene generator, deterministic from the seed, whose knobs set
the difficulty: ``clutter`` (thin lines and dots as bright as the objects, so brightness alone
does not segment), ``contrast`` (how far an object's texture rises above the background),
``object_size`` (the object's side as a fraction of the image) and ``noise`` (pixel noise).
Objects are filled shapes with a texture (stripes, checks or flat), or Fashion-MNIST items cut
out by their own pixels (``objects: fashion_mnist`` or ``mixed``; the Debian package
``dataset-fashion-mnist`` ships them). Images are ``(N, C, size, size)`` in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from experiments.data.base import Dataset, as_inputs, as_labels, check_size
from experiments.errors import DataError

SHAPES = ("disc", "square", "triangle", "ring", "diamond")
TEXTURES = ("stripes", "checks", "flat")
OBJECT_SOURCES = ("shapes", "fashion_mnist", "mixed")
BACKGROUND_LEVEL = 0.25       # mean background intensity; objects and clutter rise above it
BACKGROUND_SWING = 0.12       # amplitude of the smooth background field
TEXTURE_FLOOR = 0.6           # a texture's darkest value, in units of the contrast


@dataclass(frozen=True)
class SceneSpec:
    """The generator's knobs, checked once."""

    size: int = 32
    channels: int = 1
    object_size: tuple[float, float] = (0.25, 0.45)
    contrast: float = 0.5
    clutter: int = 4
    noise: float = 0.03
    objects: str = "shapes"

    def check(self, name: str) -> None:
        lo, hi = self.object_size
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 8:
            raise DataError(f"{name}: size={self.size!r} is invalid; choose an integer >= 8")
        if self.channels not in (1, 3):
            raise DataError(f"{name}: channels={self.channels!r} is invalid; choose 1 or 3")
        if not 0 < lo <= hi <= 1 or round(lo * self.size) < 4:
            raise DataError(f"{name}: object_size={list(self.object_size)!r} is invalid; choose [lo, hi] with "
                            f"0 < lo <= hi <= 1 and lo * size >= 4 pixels")
        if not 0 < self.contrast <= 1 - BACKGROUND_LEVEL - BACKGROUND_SWING:
            raise DataError(f"{name}: contrast={self.contrast!r} is invalid; choose a value in "
                            f"(0, {1 - BACKGROUND_LEVEL - BACKGROUND_SWING:g}] so objects stay within [0, 1]")
        if isinstance(self.clutter, bool) or not isinstance(self.clutter, int) or self.clutter < 0:
            raise DataError(f"{name}: clutter={self.clutter!r} is invalid; choose a non-negative integer")
        if not 0 <= self.noise < 0.5:
            raise DataError(f"{name}: noise={self.noise!r} is invalid; choose a value in [0, 0.5)")
        if self.objects not in OBJECT_SOURCES:
            raise DataError(f"{name}: unknown objects {self.objects!r}; choose one of: {', '.join(OBJECT_SOURCES)}")


@dataclass
class Scene:
    """One generated image, its background before anything was drawn, and each object's mask."""

    image: np.ndarray                 # (C, H, W) float32 in [0, 1]
    background: np.ndarray            # (C, H, W): the smooth field the clutter and objects sit on
    masks: list[np.ndarray]           # per object, (H, W) bool, in drawing order (later ones on top)
    kinds: list[str]                  # per object: a shape name or "fashion_mnist:<class>"


def shape_mask(kind: str, side: int) -> np.ndarray:
    """A filled shape in a ``side`` x ``side`` box (bool), touching all four sides of the box."""
    i, j = np.mgrid[0:side, 0:side].astype(np.float64)
    c = (side - 1) / 2
    r = side / 2
    if kind == "disc":
        m = (i - c) ** 2 + (j - c) ** 2 <= r ** 2
    elif kind == "square":
        m = np.ones((side, side), dtype=bool)
    elif kind == "ring":
        d = (i - c) ** 2 + (j - c) ** 2
        m = (d <= r ** 2) & (d >= (0.55 * r) ** 2)
    elif kind == "diamond":
        m = np.abs(i - c) + np.abs(j - c) <= r
    elif kind == "triangle":  # apex at the top centre, base on the bottom row
        m = np.abs(j - c) <= (i + 0.5) / 2
    else:
        raise DataError(f"unknown shape {kind!r}; choose one of: {', '.join(SHAPES)}")
    # a disc or diamond of an even side may miss the outermost rows: every shape fills its box
    rows, cols = np.nonzero(m)
    return m[rows.min():rows.max() + 1, cols.min():cols.max() + 1] if m.any() else m


def texture(kind: str, side: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Values in [TEXTURE_FLOOR, 1] over an object's box: stripes at a random angle and period,
    checks of a random period, or flat."""
    h, w = side
    i, j = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == "flat":
        return np.ones((h, w))
    if kind == "stripes":
        angle, period = rng.uniform(0, np.pi), rng.uniform(3.0, 6.0)
        wave = np.sin(2 * np.pi * (i * np.cos(angle) + j * np.sin(angle)) / period)
    else:
        period = int(rng.integers(2, 4))
        wave = np.where(((i // period + j // period) % 2) == 0, 1.0, -1.0)
    return TEXTURE_FLOOR + (1 - TEXTURE_FLOOR) * (wave + 1) / 2


def smooth_background(size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """A slowly varying field (three random low-frequency waves) around BACKGROUND_LEVEL."""
    i, j = np.mgrid[0:size, 0:size].astype(np.float64) / size
    field = np.zeros((size, size))
    for _ in range(3):
        fi, fj, phase = rng.uniform(0.3, 1.5), rng.uniform(0.3, 1.5), rng.uniform(0, 2 * np.pi)
        field += np.sin(2 * np.pi * (fi * i + fj * j) + phase)
    field = BACKGROUND_LEVEL + BACKGROUND_SWING * field / 3
    return np.repeat(field[None], channels, axis=0)


def _colour(channels: int, rng: np.random.Generator) -> np.ndarray:
    """Per-channel weights of an object's or stroke's intensity (grey for one channel)."""
    return np.ones(channels) if channels == 1 else rng.uniform(0.6, 1.0, channels)


def _draw_clutter(image: np.ndarray, spec: SceneSpec, rng: np.random.Generator) -> None:
    """``spec.clutter`` thin lines and small dots, as bright as objects (in place)."""
    from skimage.draw import line

    size = spec.size
    for _ in range(spec.clutter):
        level = spec.contrast * rng.uniform(TEXTURE_FLOOR, 1.0) * _colour(spec.channels, rng)
        if rng.random() < 0.6:
            r0, c0, r1, c1 = (int(v) for v in rng.integers(0, size, 4))
            rr, cc = line(r0, c0, r1, c1)
        else:
            r0, c0 = (int(v) for v in rng.integers(0, size - 1, 2))
            rr, cc = np.array([r0, r0, r0 + 1, r0 + 1]), np.array([c0, c0 + 1, c0, c0 + 1])
        image[:, rr, cc] = image[:, rr, cc] + level[:, None]


class FashionItems:
    """Fashion-MNIST training images to cut objects from (loaded once, seeded order)."""

    def __init__(self, n: int, seed: int) -> None:
        from experiments.data.image import fashion_mnist

        ds = fashion_mnist(n_train=n, n_test=1, seed=seed)
        self.images = ds.x_train[:, 0].numpy()
        self.labels = ds.y_train.numpy()
        self.names = list(ds.class_names or [])

    def take(self, rng: np.random.Generator, classes: Optional[Sequence[int]] = None) -> tuple[np.ndarray, str]:
        pool = np.arange(len(self.labels)) if classes is None else np.nonzero(np.isin(self.labels, classes))[0]
        k = int(pool[rng.integers(len(pool))])
        return self.images[k], f"fashion_mnist:{self.names[int(self.labels[k])]}"


def _object(kind: str, side: int, spec: SceneSpec, rng: np.random.Generator,
            items: Optional[FashionItems], item_classes: Optional[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, str]:
    """(mask, values over the mask's box (H, W, C), name) of one object of about ``side`` pixels."""
    if kind == "fashion_mnist":
        from skimage.transform import resize

        assert items is not None
        item, name = items.take(rng, item_classes)
        scaled = resize(item, (side, side), anti_aliasing=True, order=1)
        mask = scaled > 0.15
        rows, cols = np.nonzero(mask)
        if not len(rows):  # a blank item: fall back to a square of the same size
            mask, scaled, name = np.ones((side, side), dtype=bool), np.ones((side, side)), "square"
            rows, cols = np.nonzero(mask)
        box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        mask, shade = mask[box], TEXTURE_FLOOR + (1 - TEXTURE_FLOOR) * np.clip(scaled[box], 0, 1)
    else:
        mask, name = shape_mask(kind, side), kind
        shade = texture(TEXTURES[int(rng.integers(len(TEXTURES)))], mask.shape, rng)
    values = spec.contrast * shade[..., None] * _colour(spec.channels, rng)
    return mask, values, name


def render_scene(rng: np.random.Generator, spec: SceneSpec, kinds: Sequence[str],
                 items: Optional[FashionItems] = None,
                 item_classes: Optional[Sequence[Optional[Sequence[int]]]] = None) -> Scene:
    """Background, then clutter, then one object per entry of ``kinds`` (a shape name or
    ``fashion_mnist``) at a random size and place, each drawn over what lies below it; each
    object's mask is the pixels it covers in the final image."""
    size = spec.size
    background = smooth_background(size, spec.channels, rng)
    image = background.copy()
    _draw_clutter(image, spec, rng)
    lo, hi = (max(4, int(round(f * size))) for f in spec.object_size)
    masks: list[np.ndarray] = []
    names: list[str] = []
    for n, kind in enumerate(kinds):
        side = int(rng.integers(lo, hi + 1))
        classes = item_classes[n] if item_classes is not None else None
        mask, values, name = _object(kind, side, spec, rng, items, classes)
        h, w = mask.shape
        top, left = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        full = np.zeros((size, size), dtype=bool)
        full[top:top + h, left:left + w] = mask
        region = image[:, top:top + h, left:left + w]
        drawn = background[:, top:top + h, left:left + w] + values.transpose(2, 0, 1)
        image[:, top:top + h, left:left + w] = np.where(mask[None], drawn, region)
        masks = [m & ~full for m in masks] + [full]   # an object on top hides what it covers
        names.append(name)
    if spec.noise:
        image = image + rng.normal(0.0, spec.noise, image.shape)
    return Scene(np.clip(image, 0.0, 1.0).astype(np.float32), background.astype(np.float32), masks, names)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """The box (x0, y0, x1, y1) of a (H, W) mask as fractions: x0 = first column / W, x1 = one
    past the last column / W (so a box's width times W is its width in pixels)."""
    rows, cols = np.nonzero(mask)
    h, w = mask.shape
    return np.array([cols.min() / w, rows.min() / h, (cols.max() + 1) / w, (rows.max() + 1) / h], dtype=np.float32)


def _sizes(name: str, n_train: int, n_test: int) -> int:
    for arg, n in (("n_train", n_train), ("n_test", n_test)):
        check_size(name, arg, n, 10**6)
    return n_train + n_test


def _range(name: str, arg: str, value: Sequence[int], low: int) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"{name}: {arg}={value!r} is invalid; choose [min, max] integers") from None
    if not low <= lo <= hi:
        raise DataError(f"{name}: {arg}={list(value)!r} is invalid; choose [min, max] with {low} <= min <= max")
    return lo, hi


def _items(spec: SceneSpec, n_objects: int, seed: int) -> Optional[FashionItems]:
    if spec.objects == "shapes":
        return None
    return FashionItems(min(60000, max(1000, n_objects)), seed)


def _pick(spec: SceneSpec, rng: np.random.Generator, shapes: Sequence[str]) -> str:
    if spec.objects == "fashion_mnist" or (spec.objects == "mixed" and rng.random() < 0.5):
        return "fashion_mnist"
    return str(shapes[int(rng.integers(len(shapes)))])


def synthetic_segmentation(n_train: int = 2000, n_test: int = 500, size: int = 32, channels: int = 1,
                           n_objects: Sequence[int] = (1, 2), object_size: Sequence[float] = (0.25, 0.45),
                           contrast: float = 0.5, clutter: int = 4, noise: float = 0.03,
                           objects: str = "shapes", seed: int = 0) -> Dataset:
    """Scenes of ``n_objects`` (min, max) objects; the label is their union, the foreground mask.

    Shapes are drawn from every kind in SHAPES with a random texture; with Fashion-MNIST items the
    mask is the item's own pixels (above 0.15 after resizing). Clutter is never foreground."""
    name = "synthetic_segmentation"
    spec = SceneSpec(size, channels, tuple(float(v) for v in object_size), float(contrast), clutter, float(noise),
                     objects)
    spec.check(name)
    lo, hi = _range(name, "n_objects", n_objects, 1)
    n = _sizes(name, n_train, n_test)
    rng = np.random.default_rng(seed)
    items = _items(spec, n * hi, seed)
    x = np.zeros((n, channels, size, size), dtype=np.float32)
    masks = np.zeros((n, 1, size, size), dtype=np.float32)
    for k in range(n):
        kinds = [_pick(spec, rng, SHAPES) for _ in range(int(rng.integers(lo, hi + 1)))]
        scene = render_scene(rng, spec, kinds, items)
        x[k] = scene.image
        masks[k, 0] = np.any(scene.masks, axis=0)
    t_train, t_test = torch.from_numpy(masks[:n_train]), torch.from_numpy(masks[n_train:])
    return Dataset(name, "image", as_inputs(x[:n_train]), as_labels(np.zeros(n_train)), as_inputs(x[n_train:]),
                   as_labels(np.zeros(n_test)), 1, class_names=["foreground"], task="binary-segmentation",
                   targets_train=t_train, targets_test=t_test,
                   info={"objects": objects, "n_objects": [lo, hi], "object_size": list(spec.object_size),
                         "contrast": contrast, "clutter": clutter, "noise": noise,
                         "foreground_fraction": float(masks[n_train:].mean()),
                         "label": "union of the objects' masks (clutter is background)"})


def synthetic_boxes(n_train: int = 2000, n_test: int = 500, size: int = 32, channels: int = 1,
                    target: str = "disc", n_distractors: Sequence[int] = (1, 2),
                    object_size: Sequence[float] = (0.25, 0.45), contrast: float = 0.5, clutter: int = 4,
                    noise: float = 0.03, objects: str = "shapes", target_item: int = 1,
                    seed: int = 0) -> Dataset:
    """One object of the target class per image among ``n_distractors`` objects of other classes;
    the label is its box (x0, y0, x1, y1), normalised.

    ``target`` is a shape (distractors: the other shapes); with ``objects: fashion_mnist`` the
    target is the Fashion-MNIST class ``target_item`` (1: Trouser) and distractors are items of
    other classes. The target is drawn last, so it is whole and its box is its own pixels' box.
    ``ground_truth`` is the box filled in as a mask (``experiments.data.base.box_masks``)."""
    name = "synthetic_boxes"
    spec = SceneSpec(size, channels, tuple(float(v) for v in object_size), float(contrast), clutter, float(noise),
                     objects)
    spec.check(name)
    if objects == "mixed":
        raise DataError(f"{name}: objects='mixed' is for segmentation; choose shapes or fashion_mnist")
    if objects == "shapes" and target not in SHAPES:
        raise DataError(f"{name}: unknown target shape {target!r}; choose one of: {', '.join(SHAPES)}")
    if objects == "fashion_mnist" and not (isinstance(target_item, int) and 0 <= target_item <= 9):
        raise DataError(f"{name}: target_item={target_item!r} is invalid; choose a Fashion-MNIST class 0..9")
    lo, hi = _range(name, "n_distractors", n_distractors, 0)
    n = _sizes(name, n_train, n_test)
    rng = np.random.default_rng(seed)
    items = _items(spec, n * (hi + 1), seed)
    others = [s for s in SHAPES if s != target]
    other_items = [c for c in range(10) if c != target_item]
    x = np.zeros((n, channels, size, size), dtype=np.float32)
    boxes = np.zeros((n, 4), dtype=np.float32)
    for k in range(n):
        d = int(rng.integers(lo, hi + 1))
        if objects == "shapes":
            scene = render_scene(rng, spec, [str(others[int(rng.integers(len(others)))]) for _ in range(d)] + [target])
        else:
            scene = render_scene(rng, spec, ["fashion_mnist"] * (d + 1), items, [other_items] * d + [[target_item]])
        x[k] = scene.image
        boxes[k] = mask_box(scene.masks[-1])
    target_name = target if objects == "shapes" else f"fashion_mnist:{target_item}"
    return Dataset(name, "image", as_inputs(x[:n_train]), as_labels(np.zeros(n_train)), as_inputs(x[n_train:]),
                   as_labels(np.zeros(n_test)), 1, class_names=[target_name], task="bbox-regression",
                   targets_train=torch.from_numpy(boxes[:n_train]), targets_test=torch.from_numpy(boxes[n_train:]),
                   info={"objects": objects, "target": target_name, "n_distractors": [lo, hi],
                         "object_size": list(spec.object_size), "contrast": contrast, "clutter": clutter,
                         "noise": noise, "box": "(x0, y0, x1, y1): first column / W, first row / H, "
                                                "one past the last column / W, one past the last row / H"})
