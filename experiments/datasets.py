"""The benchmark's datasets: each loader is a Hydra `_target_` (configs/dataset/<name>.yaml)
returning a `Dataset` with train/test splits, deterministic from its ``seed``.

Image loaders return NCHW float32; tabular ones (N, F) float32 z-scored with training-split
statistics; labels are int64. The synthetic tasks also carry ground-truth relevance masks.
"""
from __future__ import annotations

from experiments.loaders.base import UNKNOWN_LABEL, DataError, Dataset
from experiments.loaders.image import cifar10, digits, fashion_mnist, imagenet_samples, mnist
from experiments.loaders.synthetic import synthetic_image, synthetic_tabular
from experiments.loaders.tabular import breast_cancer, lending_club

__all__ = [
    "DataError", "Dataset", "UNKNOWN_LABEL",
    "breast_cancer", "lending_club",
    "digits", "mnist", "fashion_mnist", "cifar10", "imagenet_samples",
    "synthetic_tabular", "synthetic_image",
]
