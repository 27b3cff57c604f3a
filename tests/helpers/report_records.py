"""Synthetic run records of three small tables (image with ground truth, tabular, text with
rationales), in the format the runner writes, for the figure and report tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.run.records import write_record

METRICS = {"faith": "higher", "complexity": "lower"}
IMAGE_METHODS = ("backtrace", "backtrace_contrastive", "ig", "saliency", "random")
TEXT_METHODS = ("backtrace", "ig", "attention_rollout", "random")
SENTENCES = ("the movie was not good at all", "a truly wonderful and unbelievably moving film", "boring plot, awful acting")
RATIONALE_WORDS = {"not", "good", "wonderful", "moving", "boring", "awful"}


def _record(table: str, method: str, modality: str, n: int, signed: bool, class_names: list[str],
            seconds: float, dataset: str, extra_dataset: dict | None = None) -> dict:
    return {
        "config_hash": f"{table}-{method}", "created": "2026-01-01T00:00:00+00:00", "n_samples": n,
        "config": {"table": table, "seed": 0, "target": "label", "output": "softmax", "n_samples": n,
                   "sample_selection": "first", "channel_reduction": "sum"},
        "model": {"name": f"{modality}_net", "test_accuracy": 0.9, "cache_key": "abc123"},
        "dataset": {"name": dataset, "modality": modality, "n_classes": len(class_names),
                    "class_names": class_names, **(extra_dataset or {})},
        "method": {"name": method, "signed": signed, "params": {}, "budget": {"n_steps": 8} if method == "ig" else {},
                   "absent": {"baseline": "zero"}, "returns": {"mixed_sign_samples": 1.0 if signed else 0.0}},
        "output": "softmax", "saturated_samples": 0,
        "runtime": {"seconds_per_sample": seconds, "forward_backward_units": seconds * 1000},
        "metrics": {m: {"direction": d, "mean": 0.0, "n": n, "n_nan": 0, "params": {"baseline": "zero"}}
                    for m, d in METRICS.items()},
    }


def _scores(n: int, rng: np.random.Generator, offset: float, labels: np.ndarray, preds: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"sample": np.arange(n) * 3, "label": labels, "prediction": preds, "target": labels,
                         "faith": rng.normal(offset, 0.3, n), "complexity": rng.normal(-offset, 0.3, n)})


def write_image_table(root: Path, n: int = 6, size: int = 12) -> None:
    """A table ``toy_image``: squares pasted at known places; ``arrays.npz`` holds ground truth."""
    rng = np.random.default_rng(0)
    inputs = rng.uniform(0, 0.5, (n, 1, size, size)).astype(np.float32)
    gt = np.zeros((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        r, c = rng.integers(0, size - 4, 2)
        gt[i, 0, r:r + 4, c:c + 4] = 1
        inputs[i, 0, r:r + 4, c:c + 4] = 1
    labels, preds = np.arange(n) % 2, np.array([0, 1, 1, 1, 0, 0])[:n]
    for k, method in enumerate(IMAGE_METHODS):
        signed = method not in ("saliency",)
        att = gt * (len(IMAGE_METHODS) - k) + rng.normal(0, 0.3, gt.shape)
        att = att if signed else np.abs(att)
        write_record(root, f"image-{method}", _record("toy_image", method, "image", n, signed, ["square", "blank"],
                                                      10.0 ** (k - 4), "toy_squares"),
                     _scores(n, rng, len(IMAGE_METHODS) - k, labels, preds),
                     {"attributions": att.astype(np.float32), "inputs": inputs, "ground_truth": gt,
                      "targets": labels, "sample": np.arange(n) * 3})


def write_tabular_table(root: Path, n: int = 10) -> None:
    """A table ``toy_tabular`` with no figure of samples (tabular)."""
    rng = np.random.default_rng(1)
    labels = np.arange(n) % 2
    for k, method in enumerate(("backtrace", "lime", "random")):
        write_record(root, f"tab-{method}", _record("toy_tabular", method, "tabular", n, True, ["no", "yes"],
                                                    0.01 * (k + 1), "toy_rows"),
                     _scores(n, rng, 3 - k, labels, labels), {"attributions": rng.normal(size=(n, 5))})


def token_ids(length: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """The sentences as right-padded ids of the benchmark's tokenizer, and their rationale masks
    (every word piece of a rationale word)."""
    from experiments.data.tokenizer import load_tokenizer

    tok = load_tokenizer("minilm")
    ids = np.zeros((len(SENTENCES), length), dtype=np.int64)
    gt = np.zeros_like(ids)
    for i, sentence in enumerate(SENTENCES):
        enc = tok(sentence, padding="max_length", max_length=length, truncation=True)
        words = [w for w, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(sentence)]
        ids[i] = enc["input_ids"]
        gt[i] = [int(w is not None and words[w] in RATIONALE_WORDS) for w in enc.word_ids()]
    return ids, gt


def write_text_table(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """A table ``toy_text`` in the text record format: ids, per-token attributions (0 on special
    and pad tokens), rationale masks. Returns the ids and the rationale."""
    ids, gt = token_ids()
    n = len(ids)
    rng = np.random.default_rng(2)
    feature = ~np.isin(ids, [0, 100, 101, 102, 103])
    labels = np.array([0, 1, 0])
    for k, method in enumerate(TEXT_METHODS):
        signed = method != "attention_rollout"
        att = (gt * (3.0 - k) + rng.normal(0, 0.2, ids.shape)) * feature
        att = att if signed else np.abs(att)
        write_record(root, f"text-{method}", _record("toy_text", method, "text", n, signed, ["negative", "positive"],
                                                     0.001 * (k + 1), "toy_reviews", {"tokenizer": "minilm"}),
                     _scores(n, rng, 3 - k, labels, labels),
                     {"attributions": att.astype(np.float32), "inputs": ids, "ground_truth": gt,
                      "targets": labels, "sample": np.arange(n) * 3})
    return ids, gt


def write_all(root: Path) -> Path:
    write_image_table(root)
    write_tabular_table(root)
    write_text_table(root)
    return root
