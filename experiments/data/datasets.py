"""The benchmark's datasets: each loader is a Hydra `_target_` (configs/dataset/<name>.yaml)
returning a `Dataset` with train/test splits, deterministic from its ``seed``.

Image loaders return NCHW float32; tabular ones (N, F) float32 z-scored with training-split
statistics; text ones (N, L) int64 token ids, right-padded; labels are int64. The synthetic tasks
(and the generated sentiment corpus, per token) also carry ground-truth relevance masks. The dense
tasks' sets (``task`` binary-segmentation or bbox-regression) carry their masks or boxes as
targets, and the object as ground truth.
"""
from __future__ import annotations

from experiments.data.base import UNKNOWN_LABEL, Dataset
from experiments.data.decoder_tasks import kv_retrieval
from experiments.data.dense_files import camvid, cub_boxes, cvc_clinicdb
from experiments.data.image import cifar10, digits, fashion_mnist, imagenet_samples, mnist
from experiments.data.scenes import synthetic_boxes, synthetic_segmentation
from experiments.data.synthetic import synthetic_image, synthetic_tabular
from experiments.data.tabular import breast_cancer, lending_club
from experiments.data.sst2 import sst2
from experiments.data.text import sentiment_rationales
from experiments.errors import DataError

__all__ = [
    "DataError", "Dataset", "UNKNOWN_LABEL",
    "breast_cancer", "lending_club",
    "digits", "mnist", "fashion_mnist", "cifar10", "imagenet_samples",
    "synthetic_tabular", "synthetic_image",
    "sentiment_rationales", "sst2",
    "kv_retrieval",     # copy_prompts is the zoo's (experiments.zoo.decoders): the prompts SmolLM2 completes
    "synthetic_segmentation", "synthetic_boxes", "cvc_clinicdb", "camvid", "cub_boxes",
]
