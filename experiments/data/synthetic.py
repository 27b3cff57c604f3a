"""Synthetic tasks whose relevant inputs are known by construction, for localisation metrics.

``synthetic_tabular`` follows OpenXAI's idea: a label defined by a known rule over a few
features with known weights, the rest irrelevant. ``synthetic_image`` pastes a class-defining
pattern at a known place on a noisy background. Both record their truth in ``ground_truth``
(test split) and ``info``.
"""
from __future__ import annotations

import numpy as np
import torch

from experiments.errors import DataError

from .base import Dataset, as_inputs, as_labels, check_size, standardise

TABULAR_RULES = ("linear", "quadratic")
IMAGE_PATTERNS = ("plus", "ring", "cross", "checker")  # class k gets pattern k
LOCATIONS = ("random", "center")


def synthetic_tabular(n_train: int = 2000, n_test: int = 500, n_features: int = 10, n_informative: int = 4,
                      rule: str = "linear", seed: int = 0) -> Dataset:
    """Gaussian features; the label is 1 where a rule over the informative features exceeds its median.

    Informative features sit at seeded random positions (not the first columns) with weights
    of magnitude 1..3 and random sign; the others have weight 0 and do not enter the rule.
    ``linear``: s = x . w. ``quadratic``: s = sum_i w_i (x_i^2 - 1) (non-monotone per feature).
    Thresholding at the median of s over all generated samples balances the classes.
    ``ground_truth`` is 1 on the informative features of every test sample.
    """
    if rule not in TABULAR_RULES:
        raise DataError(f"synthetic_tabular: unknown rule {rule!r}; choose one of: {', '.join(TABULAR_RULES)}")
    if not 1 <= n_informative <= n_features:
        raise DataError(f"synthetic_tabular: n_informative={n_informative!r} must be in 1..n_features ({n_features})")
    for arg, n in (("n_train", n_train), ("n_test", n_test)):
        check_size("synthetic_tabular", arg, n, 10**7)
    rng = np.random.default_rng(seed)
    informative = np.sort(rng.choice(n_features, n_informative, replace=False))
    weights = np.zeros(n_features)
    weights[informative] = rng.uniform(1.0, 3.0, n_informative) * rng.choice([-1.0, 1.0], n_informative)
    x = rng.standard_normal((n_train + n_test, n_features))
    score = x @ weights if rule == "linear" else (x**2 - 1.0) @ weights
    threshold = float(np.median(score))
    y = (score > threshold).astype(np.int64)
    x_train, x_test, stats = standardise(x[:n_train], x[n_train:])
    truth = np.zeros((n_test, n_features), dtype=np.float32)
    truth[:, informative] = 1.0
    info = {"rule": rule, "true_weights": weights.tolist(),
            "informative": informative.tolist(), "threshold": threshold,
            "preprocessing": "z-score with training-split mean/std; the rule and weights act on the raw features",
            **stats}
    if rule == "linear":  # what the same rule weighs each standardised feature by
        info["true_weights_standardised"] = (weights * np.asarray(stats["std"])).tolist()
    return Dataset("synthetic_tabular", "tabular", as_inputs(x_train), as_labels(y[:n_train]), as_inputs(x_test),
                   as_labels(y[n_train:]), 2, feature_names=[f"x{i}" for i in range(n_features)],
                   class_names=["below", "above"], ground_truth=torch.from_numpy(truth), info=info)


def pattern_templates(size: int) -> np.ndarray:
    """The binary ``size`` x ``size`` patterns of IMAGE_PATTERNS, stacked (one per class)."""
    i, j = np.mgrid[0:size, 0:size]
    centre, half = (size - 1) / 2, max(1.0, size / 8)
    edge = max(1, size // 8)
    block = max(1, size // 4)
    templates = {
        "plus": (np.abs(i - centre) < half) | (np.abs(j - centre) < half),
        "ring": (i < edge) | (i >= size - edge) | (j < edge) | (j >= size - edge),
        "cross": (i == j) | (i + j == size - 1),
        "checker": ((i // block + j // block) % 2) == 0,
    }
    return np.stack([templates[name] for name in IMAGE_PATTERNS]).astype(np.float32)


def synthetic_image(n_train: int = 2000, n_test: int = 500, size: int = 32, channels: int = 1, n_classes: int = 4,
                    pattern_size: int = 8, noise: float = 0.5, location: str = "random", seed: int = 0) -> Dataset:
    """Noise images in which the class is a pattern (plus, ring, cross, checker) pasted at a known place.

    Background pixels are uniform in [0, ``noise``); pattern pixels are exactly 1.0 in every
    channel, so they are the only pixels that carry the class. ``location`` ``random`` draws the
    pattern's top-left corner per sample, ``center`` centres it. ``ground_truth`` is the pasted
    pattern's mask (N, 1, size, size); ``info["positions"]`` holds each test sample's top-left corner.
    """
    if not 2 <= n_classes <= len(IMAGE_PATTERNS):
        raise DataError(f"synthetic_image: n_classes={n_classes!r} is invalid; choose 2..{len(IMAGE_PATTERNS)}")
    if location not in LOCATIONS:
        raise DataError(f"synthetic_image: unknown location {location!r}; choose one of: {', '.join(LOCATIONS)}")
    if not 2 <= pattern_size <= size:
        raise DataError(f"synthetic_image: pattern_size={pattern_size!r} must be in 2..size ({size})")
    if not 0.0 < noise < 1.0:
        raise DataError(f"synthetic_image: noise={noise!r} must be in (0, 1) so patterns (1.0) stand out")
    if channels not in (1, 3):
        raise DataError(f"synthetic_image: channels={channels!r} is invalid; choose 1 or 3")
    for arg, n in (("n_train", n_train), ("n_test", n_test)):
        check_size("synthetic_image", arg, n, 10**6)
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    templates = pattern_templates(pattern_size)[:n_classes]
    y = rng.permutation(np.arange(n) % n_classes)
    if location == "random":
        corners = rng.integers(0, size - pattern_size + 1, size=(n, 2))
    else:
        corners = np.full((n, 2), (size - pattern_size) // 2)
    x = rng.uniform(0.0, noise, size=(n, channels, size, size)).astype(np.float32)
    masks = np.zeros((n, 1, size, size), dtype=np.float32)
    for k, ((top, left), label) in enumerate(zip(corners, y)):
        masks[k, 0, top:top + pattern_size, left:left + pattern_size] = templates[label]
    x = np.where(masks > 0, np.float32(1.0), x)
    return Dataset("synthetic_image", "image", as_inputs(x[:n_train]), as_labels(y[:n_train]), as_inputs(x[n_train:]),
                   as_labels(y[n_train:]), n_classes, class_names=list(IMAGE_PATTERNS[:n_classes]),
                   ground_truth=torch.from_numpy(masks[n_train:]),
                   info={"pattern_value": 1.0, "background": f"uniform [0, {noise})", "location": location,
                         "pattern_size": pattern_size, "positions": corners[n_train:].tolist(),
                         "templates": templates.astype(int).tolist()})
