"""Dense-task data: the scene generator (determinism, masks and boxes that are the drawn objects,
its difficulty knobs), the Dataset's dense labels, and the real-set loaders on small files written
here in each release's layout."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from experiments.data import dense_files, scenes
from experiments.data.scenes import SHAPES, SceneSpec, mask_box, render_scene, shape_mask
from experiments.data.base import Dataset, box_masks
from experiments.errors import DataError

FMNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


def small_segmentation(**kw: object) -> Dataset:
    return scenes.synthetic_segmentation(**{"n_train": 12, "n_test": 6, **kw})


def small_boxes(**kw: object) -> Dataset:
    return scenes.synthetic_boxes(**{"n_train": 12, "n_test": 6, **kw})


# ---------------------------------------------------------------------------------------------
# the generator

@pytest.mark.parametrize("make", [small_segmentation, small_boxes])
def test_same_seed_same_scenes_other_seed_other_scenes(make) -> None:
    a, b, c = make(seed=3), make(seed=3), make(seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.targets_test, b.targets_test)
    assert not torch.equal(a.x_train, c.x_train)
    json.dumps(a.info)


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("side", [4, 7, 12])
def test_every_shape_fills_its_box(kind: str, side: int) -> None:
    m = shape_mask(kind, side)
    assert m.any(0).all() and m.any(1).all()          # touches all four sides of its own box
    assert m.shape[0] <= side and m.shape[1] <= side


def test_shape_masks_by_hand() -> None:
    assert shape_mask("square", 3).sum() == 9
    np.testing.assert_array_equal(shape_mask("diamond", 3), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    # half-width (row + 0.5) / 2: the apex column alone on the top two rows, the whole base below
    np.testing.assert_array_equal(shape_mask("triangle", 3), [[0, 1, 0], [0, 1, 0], [1, 1, 1]])


def test_without_clutter_or_noise_the_masks_are_exactly_the_changed_pixels() -> None:
    spec = SceneSpec(size=24, clutter=0, noise=0.0, contrast=0.4)
    for seed in range(5):
        scene = render_scene(np.random.default_rng(seed), spec, ["disc", "triangle", "ring"])
        changed = np.abs(scene.image - scene.background).max(0) > 1e-6
        np.testing.assert_array_equal(changed, np.any(scene.masks, axis=0))
        # an object rises above the background by at least the texture's floor times the contrast
        rise = (scene.image - scene.background)[0][changed]
        assert rise.min() >= 0.4 * scenes.TEXTURE_FLOOR - 1e-6 and rise.max() <= 0.4 + 1e-6
        for a in range(3):                                   # objects never share a pixel
            for b in range(a + 1, 3):
                assert not (scene.masks[a] & scene.masks[b]).any()


def test_clutter_never_lies_inside_an_object() -> None:
    spec = SceneSpec(size=24, clutter=30, noise=0.0, contrast=0.4)
    scene = render_scene(np.random.default_rng(0), spec, ["square"])
    inside = scene.masks[0]
    shade = scene.image[0] - scene.background[0]
    # the square's pixels follow its texture, values in [floor, 1] * contrast; clutter (added on top
    # of the background outside objects) makes some background pixels bright too
    assert (shade[inside] >= 0.4 * scenes.TEXTURE_FLOOR - 1e-6).all()
    assert (shade[~inside] > 1e-6).any()


def test_a_box_is_its_objects_pixel_box_and_the_target_is_whole() -> None:
    spec = SceneSpec(size=32, clutter=5, noise=0.0)
    for seed in range(5):
        scene = render_scene(np.random.default_rng(seed), spec, ["square", "triangle", "disc"])
        target = scene.masks[-1]
        rows, cols = np.nonzero(target)
        box = mask_box(target)
        np.testing.assert_allclose(box * 32, [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        side = int(cols.max() - cols.min() + 1)
        assert target.sum() == shape_mask("disc", side).sum()        # drawn last: nothing hides it
        filled = box_masks(torch.from_numpy(box)[None], (32, 32))[0, 0].numpy().astype(bool)
        assert (filled >= target).all() and filled.sum() == (rows.max() - rows.min() + 1) * side


def test_segmentation_dataset_contract() -> None:
    ds = small_segmentation(channels=3)
    assert ds.task == "binary-segmentation" and ds.x_train.shape == (12, 3, 32, 32)
    assert ds.targets_train.shape == (12, 1, 32, 32) and set(ds.targets_train.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(ds.ground_truth, ds.targets_test)
    assert ds.y_test.tolist() == [0] * 6 and ds.n_classes == 1
    assert all(bool(m.any()) for m in ds.targets_test)                 # every image has an object
    assert float(ds.x_train.min()) >= 0 and float(ds.x_train.max()) <= 1
    assert "num_classes" not in ds.model_kwargs()


def test_boxes_dataset_contract() -> None:
    ds = small_boxes()
    assert ds.task == "bbox-regression" and ds.targets_test.shape == (6, 4)
    b = ds.targets_test
    assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all() and b.min() >= 0 and b.max() <= 1
    assert torch.equal(ds.ground_truth, box_masks(b, (32, 32)))


def test_knobs_change_the_difficulty() -> None:
    plain = small_segmentation(clutter=0, noise=0.0, contrast=0.5, seed=1)
    faint = small_segmentation(clutter=0, noise=0.0, contrast=0.1, seed=1)
    bright_plain = (plain.x_test * plain.targets_test).sum() / plain.targets_test.sum()
    bright_faint = (faint.x_test * faint.targets_test).sum() / faint.targets_test.sum()
    assert bright_plain > bright_faint + 0.2                     # contrast: objects stand out less
    cluttered = small_segmentation(clutter=40, noise=0.0, seed=1)
    def bright_background(ds: Dataset) -> float:
        return float(((ds.x_test > 0.45) & (ds.targets_test == 0)).float().mean())
    assert bright_background(cluttered) > bright_background(plain) + 0.05
    small, large = small_segmentation(object_size=(0.15, 0.2)), small_segmentation(object_size=(0.5, 0.6))
    assert small.targets_test.mean() * 2 < large.targets_test.mean()


@pytest.mark.skipif(not FMNIST_SYSTEM.is_dir(), reason="needs the dataset-fashion-mnist Debian package")
def test_fashion_mnist_items_are_pasted_with_their_own_masks() -> None:
    ds = small_segmentation(objects="fashion_mnist", clutter=0, noise=0.0)
    assert all(bool(m.any()) for m in ds.targets_test)
    boxes = small_boxes(objects="fashion_mnist", target_item=1)
    assert boxes.class_names == ["fashion_mnist:1"]


@pytest.mark.parametrize("kw, message", [
    ({"contrast": 0.9}, "contrast=0.9 is invalid"),
    ({"object_size": (0.05, 0.1)}, "object_size=[0.05, 0.1] is invalid"),
    ({"objects": "cars"}, "unknown objects 'cars'; choose one of: shapes, fashion_mnist, mixed"),
    ({"n_objects": (2, 1)}, "n_objects=[2, 1] is invalid"),
    ({"clutter": -1}, "clutter=-1 is invalid"),
])
def test_bad_knobs_are_one_line(kw: dict, message: str) -> None:
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        small_segmentation(**kw)


def test_boxes_refuse_an_unknown_target() -> None:
    with pytest.raises(DataError, match="unknown target shape 'star'; choose one of: disc, square"):
        small_boxes(target="star")


# ---------------------------------------------------------------------------------------------
# the Dataset's dense labels

def _images(n: int) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8)


def test_box_masks_by_hand() -> None:
    m = box_masks(torch.tensor([[0.25, 0.5, 0.75, 1.0]]), (4, 4))[0, 0]
    expected = torch.zeros(4, 4)
    expected[2:4, 1:3] = 1
    assert torch.equal(m, expected)


@pytest.mark.parametrize("task, targets, message", [
    ("binary-segmentation", torch.full((2, 1, 8, 8), 0.5), "holds a value other than 0 and 1"),
    ("binary-segmentation", torch.zeros(2, 8, 8), r"must be float32 of shape \(2, 1, 8, 8\)"),
    ("bbox-regression", torch.tensor([[0.5, 0.1, 0.4, 0.9]] * 2), r"is the box \[0.5, .*x0 < x1"),
    ("bbox-regression", torch.tensor([[0.1, 0.1, 1.4, 0.9]] * 2), "in \\[0, 1\\]"),
    ("segmentation", torch.zeros(2, 1, 8, 8), "unknown task 'segmentation'; choose one of: classification, "
                                              "binary-segmentation, bbox-regression"),
])
def test_dataset_refuses_bad_dense_targets(task: str, targets: torch.Tensor, message: str) -> None:
    good = torch.zeros(2, 1, 8, 8) if task == "binary-segmentation" else torch.tensor([[0.1, 0.1, 0.5, 0.5]] * 2)
    with pytest.raises(DataError, match=message):
        Dataset("toy", "image", _images(2), torch.zeros(2, dtype=torch.long), _images(2), torch.zeros(2, dtype=torch.long),
                1, task=task, targets_train=targets, targets_test=good)


def test_dense_tasks_need_images_and_targets() -> None:
    with pytest.raises(DataError, match="needs targets_train"):
        Dataset("toy", "image", _images(2), torch.zeros(2, dtype=torch.long), _images(2),
                torch.zeros(2, dtype=torch.long), 1, task="bbox-regression")


# ---------------------------------------------------------------------------------------------
# real sets in their layouts

def _write_rgb(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _frame(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3))


def test_cvc_clinicdb_reads_the_official_layout(tmp_path: Path) -> None:
    root = tmp_path / "CVC-ClinicDB"
    for k in range(1, 6):
        _write_rgb(root / "Original" / f"{k}.tif", _frame(16, 20, k))
        mask = np.zeros((16, 20), dtype=np.uint8)
        mask[4:12, 4:14] = 255                        # the polyp: rows 4..11, columns 4..13
        _write_rgb(root / "Ground Truth" / f"{k}.tif", np.repeat(mask[..., None], 3, axis=2))
    ds = dense_files.cvc_clinicdb(str(root), size=(8, 10), test_fraction=0.4, seed=0)
    assert ds.task == "binary-segmentation" and len(ds.x_train) == 3 and len(ds.x_test) == 2
    assert ds.x_test.shape == (2, 3, 8, 10) and ds.targets_test.shape == (2, 1, 8, 10)
    expected = np.zeros((8, 10))
    expected[2:6, 2:7] = 1          # rows 4..11 of 16 -> 2..5 of 8; columns 4..13 of 20 -> 2..6 of 10
    np.testing.assert_array_equal(ds.targets_test[0, 0].numpy(), expected)
    assert ds.class_names == ["polyp"] and len(ds.info["files"]) == 2


def test_cvc_clinicdb_png_mirror_and_missing_files(tmp_path: Path) -> None:
    root = tmp_path / "cvc"
    for k in range(1, 4):
        _write_rgb(root / "PNG" / "Original" / f"{k}.png", _frame(8, 8, k))
        _write_rgb(root / "PNG" / "Ground Truth" / f"{k}.png", np.zeros((8, 8, 3)))
    assert len(dense_files.cvc_clinicdb(str(root), size=8, test_fraction=0.34).x_test) == 1
    (root / "PNG" / "Ground Truth" / "3.png").unlink()
    with pytest.raises(DataError, match=r"1 file\(s\) without a partner .* \(first: '3'\)"):
        dense_files.cvc_clinicdb(str(root), size=8)
    with pytest.raises(FileNotFoundError, match="cvc_clinicdb: no 'Original' and 'Ground Truth' folders in"):
        dense_files.cvc_clinicdb(str(tmp_path / "none"))


def test_camvid_segnet_layout_takes_one_class(tmp_path: Path) -> None:
    root = tmp_path / "CamVid"
    car = dense_files.CAMVID_CLASSES.index("Car")
    for split, n in (("train", 2), ("val", 1), ("test", 2)):
        for k in range(n):
            _write_rgb(root / split / f"{split}{k}.png", _frame(12, 16, k))
            label = np.full((12, 16), 3, dtype=np.uint8)          # road everywhere
            label[0:6, 0:8] = car                                  # a car in the top-left quarter
            (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
            Image.fromarray(label).save(root / f"{split}annot" / f"{split}{k}.png")
    ds = dense_files.camvid(str(root), size=(6, 8), class_name="Car")
    assert len(ds.x_train) == 3 and len(ds.x_test) == 2           # train + val / test
    expected = torch.zeros(6, 8)
    expected[0:3, 0:4] = 1
    assert torch.equal(ds.targets_test[0, 0], expected)
    road = dense_files.camvid(str(root), size=(6, 8), class_name="Road")
    assert torch.equal(road.targets_test[0, 0], 1 - expected)
    with pytest.raises(DataError, match="camvid: unknown class 'Boat'; choose one of: Sky, Building"):
        dense_files.camvid(str(root), class_name="Boat")


def test_camvid_colour_coded_layout(tmp_path: Path) -> None:
    root = tmp_path / "CamVid"
    root.mkdir()
    (root / "class_dict.csv").write_text("name,r,g,b\nCar,64,0,128\nRoad,128,64,128\n")
    for split in ("train", "test"):
        _write_rgb(root / split / "f0.png", _frame(8, 8, 0))
        label = np.tile(np.array([128, 64, 128], dtype=np.uint8), (8, 8, 1))
        label[4:, 4:] = [64, 0, 128]
        _write_rgb(root / f"{split}_labels" / "f0_L.png", label)
    ds = dense_files.camvid(str(root), size=8, class_name="Car")
    assert ds.targets_test.sum() == 16 and ds.targets_test[0, 0, 4:, 4:].all()


def _write_cub(root: Path, sizes: list[tuple[int, int]], boxes: list[tuple[float, ...]], train: list[int]) -> None:
    lines = []
    for k, (w, h) in enumerate(sizes, start=1):
        rel = f"001.Bird/bird_{k}.jpg"
        _write_rgb(root / "images" / rel, _frame(h, w, k))
        lines.append(f"{k} {rel}")
    (root / "images.txt").write_text("\n".join(lines) + "\n")
    (root / "bounding_boxes.txt").write_text("".join(f"{k} " + " ".join(map(str, b)) + "\n"
                                                     for k, b in enumerate(boxes, start=1)))
    (root / "train_test_split.txt").write_text("".join(f"{k} {t}\n" for k, t in enumerate(train, start=1)))
    species = [2, 1, 1, 2]
    (root / "image_class_labels.txt").write_text("".join(f"{k} {species[(k - 1) % 4]}\n" for k in range(1, len(sizes) + 1)))
    (root / "classes.txt").write_text("1 001.Albatross\n2 002.Auklet\n")


def test_cub_boxes_normalises_each_box_by_its_image(tmp_path: Path) -> None:
    root = tmp_path / "CUB_200_2011"
    _write_cub(root, [(40, 20), (50, 100), (30, 30), (64, 32)],
               [(10.0, 5.0, 20.0, 10.0), (0.0, 0.0, 50.0, 50.0), (3.0, 6.0, 12.0, 15.0), (60.0, 0.0, 10.0, 32.0)],
               [1, 0, 1, 0])
    ds = dense_files.cub_boxes(str(root), size=16)
    assert ds.task == "bbox-regression" and ds.x_train.shape == (2, 3, 16, 16)
    np.testing.assert_allclose(ds.targets_train.numpy(), [[0.25, 0.25, 0.75, 0.75], [0.1, 0.2, 0.5, 0.7]], atol=1e-6)
    # the fourth box runs past the image's right edge (60 + 10 > 64): clipped to it
    np.testing.assert_allclose(ds.targets_test.numpy(), [[0.0, 0.0, 1.0, 0.5], [60 / 64, 0.0, 1.0, 1.0]], atol=1e-6)
    assert ds.y_train.tolist() == [1, 0] and ds.class_names == ["001.Albatross", "002.Auklet"]


def test_cub_boxes_missing_files_and_lines(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cub_boxes: images.txt, bounding_boxes.txt, train_test_split.txt "
                                                "not found in"):
        dense_files.cub_boxes(str(tmp_path))
    root = tmp_path / "cub"
    _write_cub(root, [(20, 20), (20, 20)], [(1.0, 1.0, 5.0, 5.0)], [1, 0])
    with pytest.raises(DataError, match="image id 2 of images.txt has no line in bounding_boxes.txt"):
        dense_files.cub_boxes(str(root))
