"""The `Dataset` record every loader returns, and the split/subset/standardise helpers they share.

Loaders are deterministic functions of their arguments (a ``seed`` included), so a run's
config hash names its data exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor

from baselines.vocabulary import MODALITIES, TASKS
from experiments.errors import DataError

UNKNOWN_LABEL = -1  # a test label with no class in the label set (explain the prediction instead)


@dataclass
class Dataset:
    """Train and test splits of one task, with optional ground-truth relevance for the test split.

    Inputs are float32 (tabular ``(N, F)``, images ``(N, C, H, W)``) or, for text, int64 token
    ids ``(N, L)`` right-padded with the tokenizer's pad id; labels int64 in ``[0, n_classes)`` or
    ``UNKNOWN_LABEL`` (-1) where a sample has no class in the label set. ``ground_truth`` marks
    the test inputs that define the label: images ``(N, 1, H, W)``, tabular and text ``(N, F)`` /
    ``(N, L)`` (a rationale per token), values in {0, 1}. ``info`` holds only JSON-serialisable
    values (lists, not tensors) so a run record can store it as it is; a text dataset keeps its
    tokenizer's ids there (``info["tokenizer"]``, see ``experiments.data.tokenizer.tokenizer_spec``)
    and its test sentences in ``texts_test``.

    Dense tasks (``task`` ``binary-segmentation`` or ``bbox-regression``, images only) keep their
    labels in ``targets_train``/``targets_test``: masks ``(N, 1, H, W)`` in {0, 1} or boxes
    ``(N, 4)`` ``(x0, y0, x1, y1)`` in [0, 1] with x0 < x1 and y0 < y1 (x0 = first column / W, x1 =
    one past the last column / W). ``y`` then holds the object class (0 where there is one).
    ``ground_truth`` defaults to the test masks, or to each test box filled in as a mask, so the
    localisation metrics score dense tasks against the object as they score the classifiers.
    """

    name: str
    modality: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int
    feature_names: list[str] | None = None
    class_names: list[str] | None = None
    ground_truth: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    texts_test: list[str] | None = None
    task: str = "classification"
    targets_train: Tensor | None = None
    targets_test: Tensor | None = None

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise DataError(f"dataset {self.name}: unknown modality {self.modality!r}; choose one of: {', '.join(MODALITIES)}")
        if self.task not in TASKS:
            raise DataError(f"dataset {self.name}: unknown task {self.task!r}; choose one of: {', '.join(TASKS)}")
        if self.task != "classification":
            self._check_dense_targets()
        rank = 4 if self.modality == "image" else 2
        dtype = torch.int64 if self.modality == "text" else torch.float32
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != dtype or x.dim() != rank:
                raise DataError(f"dataset {self.name}: x_{split} must be {str(dtype).replace('torch.', '')} of rank {rank}, "
                                f"got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise DataError(f"dataset {self.name}: y_{split} must be int64 of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
            if len(y) and (int(y.min()) < UNKNOWN_LABEL or int(y.max()) >= self.n_classes):
                raise DataError(f"dataset {self.name}: y_{split} outside [0, {self.n_classes}) (or -1 for unknown)")
            if self.modality == "text":
                self._check_token_ids(split, x)
            else:
                self._check_finite(split, x)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(f"dataset {self.name}: train and test inputs differ in shape")
        if self.ground_truth is not None:
            want = (len(self.x_test), 1, *self.x_test.shape[2:]) if self.modality == "image" else tuple(self.x_test.shape)
            if tuple(self.ground_truth.shape) != want:
                raise DataError(f"dataset {self.name}: ground_truth must have shape {want}, got {tuple(self.ground_truth.shape)}")
        if self.modality == "text":
            if self.texts_test is not None and len(self.texts_test) != len(self.x_test):
                raise DataError(f"dataset {self.name}: texts_test holds {len(self.texts_test)} texts for "
                                f"{len(self.x_test)} test samples")
            if self.ground_truth is not None:
                on_special = self.ground_truth.bool() & ~self.token_feature_mask(self.x_test)
                if bool(on_special.any()):
                    sample, position = (int(i) for i in torch.nonzero(on_special)[0])
                    raise DataError(f"dataset {self.name}: ground_truth marks a special or pad token "
                                    f"(test sample {sample}, position {position}); rationales cover real tokens only")

    def _check_dense_targets(self) -> None:
        """Masks or boxes, one per image of each split, in range; the test ones become the
        ground truth unless one is given."""
        if self.modality != "image":
            raise DataError(f"dataset {self.name}: task {self.task!r} needs images, not {self.modality!r} data")
        for split, x, t in (("train", self.x_train, self.targets_train), ("test", self.x_test, self.targets_test)):
            if t is None:
                raise DataError(f"dataset {self.name}: task {self.task!r} needs targets_{split}")
            want = (len(x), 1, *x.shape[2:]) if self.task == "binary-segmentation" else (len(x), 4)
            if t.dtype != torch.float32 or tuple(t.shape) != want:
                raise DataError(f"dataset {self.name}: targets_{split} must be float32 of shape {want}, "
                                f"got {t.dtype} {tuple(t.shape)}")
            if self.task == "binary-segmentation":
                bad = ~((t == 0) | (t == 1))
                if bool(bad.any()):
                    raise DataError(f"dataset {self.name}: targets_{split} of sample {int(torch.nonzero(bad)[0][0])} "
                                    f"holds a value other than 0 and 1; masks are binary")
            else:
                bad = ~torch.isfinite(t).all(1) | (t < 0).any(1) | (t > 1).any(1) | (t[:, 2] <= t[:, 0]) | (t[:, 3] <= t[:, 1])
                if bool(bad.any()):
                    i = int(torch.nonzero(bad)[0])
                    raise DataError(f"dataset {self.name}: targets_{split} of sample {i} is the box {t[i].tolist()}; "
                                    f"boxes are (x0, y0, x1, y1) in [0, 1] with x0 < x1 and y0 < y1")
        if self.ground_truth is None:
            self.ground_truth = self.targets_test.clone() if self.task == "binary-segmentation" else \
                box_masks(self.targets_test, tuple(self.x_test.shape[2:]))

    def _check_token_ids(self, split: str, x: Tensor) -> None:
        """Token ids must name the tokenizer's vocabulary: an id outside it would index past the
        embedding table."""
        spec = self.info.get("tokenizer")
        if not isinstance(spec, dict) or not {"vocab_size", "pad_token_id", "mask_token_id",
                                              "special_token_ids"} <= set(spec):
            raise DataError(f"dataset {self.name}: a text dataset needs info['tokenizer'] "
                            f"(experiments.data.tokenizer.tokenizer_spec())")
        bad = (x < 0) | (x >= int(spec["vocab_size"]))
        if bool(bad.any()):
            sample, position = (int(i) for i in torch.nonzero(bad)[0])
            raise DataError(f"dataset {self.name}: x_{split} holds token id {int(x[sample, position])} at sample "
                            f"{sample}, position {position}, outside the vocabulary 0..{int(spec['vocab_size']) - 1}")

    def token_feature_mask(self, ids: Tensor) -> Tensor:
        """True on the tokens of ``ids`` that are features (real, not special, not padding), by the
        same rule as ``TextClassifier.feature_mask``."""
        spec = self.info["tokenizer"]
        special = torch.tensor(sorted(set(spec["special_token_ids"]) | {int(spec["pad_token_id"])}), dtype=ids.dtype)
        return ~torch.isin(ids, special.to(ids.device))

    def _check_finite(self, split: str, x: Tensor) -> None:
        """Every loader's output is checked here: a NaN or infinity in the inputs would train a
        NaN model and explain into NaN attributions, silently."""
        bad = ~torch.isfinite(x)
        if not bool(bad.any()):
            return
        sample, *position = (int(i) for i in torch.nonzero(bad)[0])
        where = f"feature {self.feature_names[position[0]]!r}" if self.feature_names and len(position) == 1 \
            else f"position {tuple(position)}"
        raise DataError(f"dataset {self.name}: x_{split} holds a non-finite value ({float(x[(sample, *position)])}) "
                        f"at sample {sample}, {where} ({int(bad.sum())} non-finite value(s) in all); "
                        f"fix the data or choose a loader option that imputes them")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample: ``(F,)``, ``(C, H, W)`` or ``(L,)`` (tokens)."""
        return tuple(self.x_test.shape[1:])

    @property
    def n_features(self) -> int:
        """Number of input values per sample (F for tabular, C*H*W for images, L for text)."""
        return int(np.prod(self.input_shape))

    @property
    def channels(self) -> int | None:
        """Image channels; None for tabular data."""
        return int(self.x_test.shape[1]) if self.modality == "image" else None

    @property
    def image_size(self) -> tuple[int, int] | None:
        """Image ``(H, W)``; None for tabular data."""
        return tuple(self.x_test.shape[2:]) if self.modality == "image" else None  # type: ignore[return-value]

    def model_kwargs(self) -> dict[str, Any]:
        """The data-dependent constructor arguments of the model zoo (see experiments.zoo.models)."""
        if self.modality == "tabular":
            return {"in_features": self.n_features, "num_classes": self.n_classes}
        if self.modality == "text":
            spec = self.info["tokenizer"]
            return {"num_classes": self.n_classes, "vocab_size": int(spec["vocab_size"]),
                    "pad_token_id": int(spec["pad_token_id"]), "mask_token_id": int(spec["mask_token_id"]),
                    "special_token_ids": [int(i) for i in spec["special_token_ids"]]}
        if self.task != "classification":   # a dense model's output is set by its task, not by classes
            return {"in_channels": self.channels, "input_size": list(self.image_size or ())}
        return {"in_channels": self.channels, "num_classes": self.n_classes, "input_size": list(self.image_size or ())}

    def test_indices(self, n: int, seed: int | None = None) -> Tensor:
        """Indices of the first ``n`` test samples, or of ``n`` drawn without replacement by ``seed`` (sorted)."""
        if not 1 <= n <= len(self.x_test):
            raise DataError(f"n_samples={n!r} is out of range for dataset {self.name}; choose 1..{len(self.x_test)}")
        if seed is None:
            return torch.arange(n)
        return torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(self.x_test), n, replace=False)))

    def test_samples(self, n: int, seed: int | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """The first ``n`` test samples, or ``n`` drawn without replacement by ``seed``: (x, y, ground truth)."""
        idx = self.test_indices(n, seed)
        gt = None if self.ground_truth is None else self.ground_truth[idx]
        return self.x_test[idx], self.y_test[idx], gt


# ---------------------------------------------------------------------------------------------
# helpers shared by the loaders

def box_masks(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Boxes ``(N, 4)`` (x0, y0, x1, y1 as fractions) filled in as masks ``(N, 1, H, W)``: pixel
    (row r, column c) is inside when its centre ((c + 0.5) / W, (r + 0.5) / H) is."""
    h, w = size
    cols = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    rows = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    b = boxes.float()
    inside_x = (cols[None, :] >= b[:, 0:1]) & (cols[None, :] < b[:, 2:3])      # (N, W)
    inside_y = (rows[None, :] >= b[:, 1:2]) & (rows[None, :] < b[:, 3:4])      # (N, H)
    return (inside_y[:, :, None] & inside_x[:, None, :]).float()[:, None]


def as_inputs(x: np.ndarray) -> Tensor:
    """A contiguous float32 tensor (a copy, so loaders never alias cached arrays)."""
    return torch.tensor(np.ascontiguousarray(x), dtype=torch.float32)


def as_labels(y: np.ndarray | Sequence[int]) -> Tensor:
    return torch.tensor(np.asarray(y), dtype=torch.int64)


def check_size(name: str, arg: str, n: int | None, available: int) -> None:
    """Refuse a subset size that is not a positive int no larger than what exists."""
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= available:
        raise DataError(f"{arg}={n!r} is invalid for dataset {name}; choose an integer in 1..{available} or null for all")


def subset(name: str, arg: str, n: int | None, available: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a seeded random subset of size ``n`` (all indices, shuffled, when ``n`` is None).

    Shuffling even the full set keeps the first test samples a mix of classes.
    """
    check_size(name, arg, n, available)
    return rng.permutation(available)[: (available if n is None else n)]


def stratified_split(name: str, y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/test indices of a class-stratified split (for data that ships without one)."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction={test_fraction!r} is invalid for dataset {name}; choose a value in (0, 1)")
    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=y)
    return np.sort(train), np.sort(test)


def standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, list[float]]]:
    """Z-score both splits with the training split's mean and std (a constant column keeps std 1).

    Using only the training statistics keeps the test split unseen, as in deployment.
    """
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    stats = {"mean": mean.astype(float).tolist(), "std": std.astype(float).tolist()}
    return (x_train - mean) / std, (x_test - mean) / std, stats
