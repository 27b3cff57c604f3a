"""GLUE SST-2 (Socher et al. 2013) as a text dataset: the Hugging Face parquet files or GLUE's
TSV files in a folder, downloaded where a network exists; encoded with the corpus's tokenizers
(:mod:`experiments.data.text`)."""
from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.errors import DataError

from . import formats
from .base import Dataset, as_labels, subset
from .text import SENTIMENT_CLASSES, _check_max_length, encode_words, pad

SST2_PARQUET_URL = "https://huggingface.co/datasets/stanfordnlp/sst2/resolve/main/data/{split}-00000-of-00001.parquet"
SST2_SPLITS = {"train": ("train", "train"), "test": ("validation", "dev")}   # ours: (parquet name, GLUE TSV name)


def _find_sst2(data_dir: Path, split: str) -> Path | None:
    """The file of one SST-2 split in ``data_dir``: the Hugging Face parquet layout
    (``[data/|sst2/]<split>-*.parquet`` or ``<split>.parquet``) or the GLUE TSV one
    (``[SST-2/]train.tsv``, ``dev.tsv``)."""
    parquet, tsv = SST2_SPLITS[split]
    for folder in (data_dir, data_dir / "data", data_dir / "sst2"):
        found = sorted(folder.glob(f"{parquet}-*.parquet")) + sorted(folder.glob(f"{parquet}.parquet"))
        if found:
            return found[0]
    for folder in (data_dir, data_dir / "SST-2"):
        if (folder / f"{tsv}.tsv").is_file():
            return folder / f"{tsv}.tsv"
    return None


def _download_sst2(data_dir: Path) -> None:
    for parquet, _ in SST2_SPLITS.values():
        formats.download(SST2_PARQUET_URL.format(split=parquet), data_dir / "data" / f"{parquet}-00000-of-00001.parquet")


def read_sst2_file(path: Path) -> tuple[list[str], np.ndarray]:
    """Sentences and 0/1 labels of one SST-2 file (parquet or GLUE TSV), checked."""
    if path.suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise DataError(f"sst2: cannot read {path} as parquet ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines:
            raise DataError(f"sst2: {path} is empty")
        header = lines[0].split("\t")
        rows = []
        for number, line in enumerate(lines[1:], start=2):
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != len(header):
                raise DataError(f"sst2: {path} line {number} has {len(fields)} tab-separated fields, the header "
                                f"{len(header)} ({', '.join(header)})")
            rows.append(fields)
        frame = pd.DataFrame(rows, columns=header)
    missing = [c for c in ("sentence", "label") if c not in frame.columns]
    if missing:
        raise DataError(f"sst2: {path} has no column {missing[0]!r} (columns: {', '.join(map(str, frame.columns))}); "
                        f"the GLUE test split has no labels: use train and validation/dev")
    labels = pd.to_numeric(frame["label"], errors="coerce")
    bad = ~labels.isin([0, 1])
    if bool(bad.any()):
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"sst2: {path} row {row + 1} has label {frame['label'].iloc[row]!r}; SST-2 labels are 0 "
                        f"(negative) and 1 (positive)")
    sentences = [str(s).strip() for s in frame["sentence"]]
    return sentences, labels.to_numpy(dtype=np.int64)


def sst2(data_dir: str = "data/sst2", download: bool = True, n_train: int | None = 8000, n_test: int | None = None,
         max_length: int = 64, tokenizer: str = "minilm", seed: int = 0) -> Dataset:
    """GLUE SST-2 (Socher et al. 2013): movie-review sentences, negative/positive.

    The test split's labels are hidden by GLUE, so the validation split (872 sentences) is the
    test split here. Files are read from ``data_dir`` in the Hugging Face parquet layout or the
    GLUE TSV layout; where neither is there and ``download`` is true the parquet files are
    fetched. Seeded subsets of each split (``null``: all); sentences longer than ``max_length``
    tokens are cut (``info["truncated"]`` counts them). No rationales: ``ground_truth`` is None.
    """
    name = "sst2"
    _check_max_length(name, max_length)
    folder = Path(os.path.expanduser(data_dir))
    files = {split: _find_sst2(folder, split) for split in SST2_SPLITS}
    if any(f is None for f in files.values()) and download:
        try:
            _download_sst2(folder)
        except (urllib.error.URLError, OSError) as err:
            raise DataError(f"sst2: no SST-2 files in {folder} and the download failed ({err}); put "
                            f"train/validation parquet files (data/train-*.parquet) or GLUE's train.tsv and dev.tsv "
                            f"there") from None
        files = {split: _find_sst2(folder, split) for split in SST2_SPLITS}
    missing = [split for split, f in files.items() if f is None]
    if missing:
        split = SST2_SPLITS[missing[0]]
        raise DataError(f"sst2: no {split[0]} split in {folder} (looked for {split[0]}-*.parquet, data/{split[0]}-*.parquet "
                        f"and {split[1]}.tsv){'' if download else ' and download=false'}; put the SST-2 files there")
    rng = np.random.default_rng(seed)
    texts, labels = {}, {}
    for split, arg, n in (("train", "n_train", n_train), ("test", "n_test", n_test)):
        sentences, y = read_sst2_file(files[split])  # type: ignore[arg-type]
        idx = subset(name, arg, n, len(sentences), rng)
        texts[split], labels[split] = [sentences[i] for i in idx], y[idx]
    from experiments.data.tokenizer import tokenizer_spec

    spec = tokenizer_spec(tokenizer)
    words = {split: [t.split() for t in texts[split]] for split in texts}
    encoded = {split: encode_words(words[split], None, tokenizer, max_length, truncate=True, name=name)
               for split in texts}
    length = max(len(r) for split in encoded for r in encoded[split][0])
    x = {split: pad(encoded[split][0], length, spec["pad_token_id"]) for split in encoded}
    return Dataset(name, "text", x["train"], as_labels(labels["train"]), x["test"], as_labels(labels["test"]), 2,
                   class_names=list(SENTIMENT_CLASSES), texts_test=texts["test"],
                   info={"tokenizer": spec, "source": f"GLUE SST-2 ({', '.join(str(f) for f in files.values())})",
                         "split": "train: GLUE train; test: GLUE validation (the GLUE test labels are hidden)",
                         "length": length, "max_length": max_length,
                         "truncated": int(sum(encoded[s][2] for s in encoded))})
