"""Tabular datasets: sklearn's breast cancer set and the Kaggle Lending Club loan CSV.

Both are returned as (N, F) float32, z-scored with the training split's statistics only.
"""
from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from experiments.errors import DataError

from .base import Dataset, as_inputs, as_labels, standardise, stratified_split, subset


def breast_cancer(n_train: int | None = None, n_test: int | None = None, seed: int = 0,
                  test_fraction: float = 0.25) -> Dataset:
    """sklearn's Wisconsin breast cancer set: 569 samples, 30 features, 2 classes (0 malignant, 1 benign)."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    tr, te = stratified_split("breast_cancer", bunch.target, test_fraction, seed)
    rng = np.random.default_rng(seed)
    tr = tr[subset("breast_cancer", "n_train", n_train, len(tr), rng)]
    te = te[subset("breast_cancer", "n_test", n_test, len(te), rng)]
    x_train, x_test, stats = standardise(bunch.data[tr], bunch.data[te])
    return Dataset("breast_cancer", "tabular", as_inputs(x_train), as_labels(bunch.target[tr]), as_inputs(x_test),
                   as_labels(bunch.target[te]), 2, feature_names=list(bunch.feature_names),
                   class_names=list(bunch.target_names),
                   info={"source": "sklearn.datasets.load_breast_cancer",
                         "preprocessing": "z-score with training-split mean/std",
                         "split": f"stratified, test_fraction={test_fraction}, seed={seed}", **stats})


# --------------------------------------------------------------------------------------------
# Lending Club

# Outcome of a finished loan: 0 = repaid, 1 = charged off or defaulted. Loans still running
# (Current, Late, In Grace Period) have no outcome yet and are dropped.
LENDING_CLUB_TARGET = {
    "Fully Paid": 0,
    "Does not meet the credit policy. Status:Fully Paid": 0,
    "Charged Off": 1,
    "Default": 1,
    "Does not meet the credit policy. Status:Charged Off": 1,
}
LENDING_CLUB_CLASSES = ["Fully Paid", "Charged Off/Default"]
# Only what is known when a loan is granted (no payment-history columns, which leak the outcome).
LENDING_CLUB_NUMERIC = ["loan_amnt", "term", "int_rate", "installment", "emp_length", "annual_inc", "dti",
                        "open_acc", "pub_rec", "revol_bal", "revol_util", "total_acc"]
LENDING_CLUB_CATEGORICAL = ["grade", "home_ownership", "verification_status", "purpose"]
LENDING_CLUB_PREPROCESSING = (
    "target: loan_status Fully Paid -> 0, Charged Off/Default -> 1 (both incl. 'Does not meet the credit "
    "policy' variants), other statuses dropped; numeric columns parsed from text ('36 months' -> 36, "
    "'10+ years' -> 10, '< 1 year' -> 0, 'n/a' -> missing, '13.5%' -> 13.5), missing values imputed with the "
    "training-split median (an infinite value, or a row with more or fewer fields than the header, is "
    "refused); categorical columns one-hot over the training split's levels (missing -> 'missing', unseen "
    "levels -> all zeros); every column z-scored with training-split mean/std"
)


def parse_numeric(values: pd.Series) -> pd.Series:
    """Numbers from Lending Club's text fields: '36 months', '10+ years', '< 1 year', '13.5%', 'n/a'.

    Empty and 'n/a' fields are missing (NaN, imputed later); 'inf' and numbers too large for a
    float become infinite, which the loader refuses rather than imputes.
    """
    if pd.api.types.is_numeric_dtype(values):
        return values.astype(float)
    text = values.astype("string").str.strip().str.lower()
    text = text.mask(text.str.match(r"^<\s*1\s*year").fillna(False), "0")  # "< 1 year": under one year
    number = text.str.replace(",", "", regex=False).str.extract(
        r"([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)", expand=False)
    infinite = text.str.fullmatch(r"[-+]?inf(inity)?").fillna(False)
    number = number.mask(infinite, text.str.replace("inity", "", regex=False))
    return pd.to_numeric(number, errors="coerce").astype(float)


def check_field_counts(path: Path, skip: int, name: str) -> None:
    """Refuse a CSV row whose number of fields differs from the header's.

    pandas reading selected columns drops extra fields and fills missing ones with NaN, so an
    unquoted comma inside a value would shift the rest of its row into the wrong columns without
    a word; the csv module counts the fields of every row (quotes respected) first.
    """
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        for _ in range(skip):
            fh.readline()
        reader = csv.reader(fh)
        header = next(reader, [])
        for row in reader:
            if row and len(row) != len(header):
                raise DataError(f"{name}: {path} line {reader.line_num + skip} has {len(row)} fields but the header has "
                                f"{len(header)}; quote values that contain commas, or fix the row")


def check_finite_columns(path: Path, columns: list[str], values: np.ndarray, rows: np.ndarray, skip: int,
                         name: str) -> None:
    """Refuse an infinite number in a numeric column, naming file, column and row (NaN is a
    missing value and is imputed; infinity is not missing, and imputing it would hide a fault)."""
    bad = np.isinf(values)
    if not bad.any():
        return
    r, c = (int(i[0]) for i in np.nonzero(bad))
    row = int(rows[r])
    raise DataError(f"{name}: {path} column {columns[c]!r} holds a non-finite value ({values[r, c]}) in data row "
                    f"{row + 1} (line {row + 2 + skip}); {int(bad.sum())} such value(s) in all; fix or remove them")


def _read_lending_club(path: Path, columns: list[str]) -> tuple[pd.DataFrame, int]:
    if not path.is_file():
        raise FileNotFoundError(f"lending_club: no CSV at {path}; download the Kaggle Lending Club loan data "
                                f"(accepted_2007_to_2018Q4.csv or loan.csv) and pass its path as dataset.path")
    header = pd.read_csv(path, nrows=0).columns
    skip = 0 if "loan_status" in header else 1  # LendingClub's own exports start with a notice line
    if skip:
        header = pd.read_csv(path, nrows=0, skiprows=1).columns
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"lending_club: {path} lacks column(s) {', '.join(missing)}; "
                        f"available: {', '.join(map(str, header[:40]))}{' ...' if len(header) > 40 else ''}")
    check_field_counts(path, skip, "lending_club")
    return pd.read_csv(path, usecols=columns, skiprows=skip, low_memory=False), skip


def _one_hot(values: pd.Series, levels: list[str]) -> np.ndarray:
    return (values.to_numpy()[:, None] == np.asarray(levels, dtype=object)[None, :]).astype(np.float64)


def lending_club(path: str = "data/lending_club/loans.csv", n_train: int | None = 20000, n_test: int | None = 5000,
                 seed: int = 0, test_fraction: float = 0.2,
                 numeric_columns: Sequence[str] = tuple(LENDING_CLUB_NUMERIC),
                 categorical_columns: Sequence[str] = tuple(LENDING_CLUB_CATEGORICAL)) -> Dataset:
    """The Kaggle Lending Club loans (the paper's tabular task): will a finished loan be charged off?

    Preprocessing (fitted on the training split only) is described by LENDING_CLUB_PREPROCESSING
    and recorded in ``info``. ``n_train``/``n_test`` draw seeded subsets after the stratified split.
    """
    numeric, categorical = list(numeric_columns), list(categorical_columns)
    frame, skip = _read_lending_club(Path(path), ["loan_status", *numeric, *categorical])
    status = frame["loan_status"].astype("string").str.strip()
    target = status.map(LENDING_CLUB_TARGET)
    keep = target.notna().to_numpy()
    dropped = status[~keep].fillna("<empty>").value_counts().to_dict()
    rows = np.flatnonzero(keep)  # data row of the file for each kept loan, for error messages
    frame, y = frame[keep].reset_index(drop=True), target[keep].astype(np.int64).to_numpy()
    if np.bincount(y, minlength=2).min() < 2:
        raise DataError(f"lending_club: {path} needs at least two finished loans of each outcome "
                         f"(Fully Paid and Charged Off/Default), found {np.bincount(y, minlength=2).tolist()}")

    tr, te = stratified_split("lending_club", y, test_fraction, seed)
    rng = np.random.default_rng(seed)
    tr = tr[subset("lending_club", "n_train", n_train, len(tr), rng)]
    te = te[subset("lending_club", "n_test", n_test, len(te), rng)]

    num = np.column_stack([parse_numeric(frame[c]).to_numpy() for c in numeric]) if numeric else np.empty((len(frame), 0))
    check_finite_columns(Path(path), numeric, num, rows, skip, "lending_club")
    with warnings.catch_warnings():  # a column empty in the training split: all-NaN median, imputed as 0
        warnings.simplefilter("ignore", RuntimeWarning)
        medians = np.nan_to_num(np.nanmedian(num[tr], axis=0), nan=0.0)
    num = np.where(np.isnan(num), medians, num)

    blocks, names, levels = [num], list(numeric), {}
    for column in categorical:
        values = frame[column].astype("string").str.strip().fillna("missing").astype(object)
        levels[column] = sorted(set(values.iloc[tr]))
        blocks.append(_one_hot(values, levels[column]))
        names += [f"{column}={level}" for level in levels[column]]
    x = np.concatenate(blocks, axis=1)
    x_train, x_test, stats = standardise(x[tr], x[te])
    return Dataset("lending_club", "tabular", as_inputs(x_train), as_labels(y[tr]), as_inputs(x_test),
                   as_labels(y[te]), 2, feature_names=names, class_names=LENDING_CLUB_CLASSES,
                   info={"source": str(path), "preprocessing": LENDING_CLUB_PREPROCESSING,
                         "numeric_columns": numeric, "categorical_columns": categorical,
                         "medians": dict(zip(numeric, medians.astype(float).tolist())),
                         "levels": levels, "dropped_statuses": {str(k): int(v) for k, v in dropped.items()},
                         "split": f"stratified, test_fraction={test_fraction}, seed={seed}; "
                                  f"seeded subsets n_train={n_train}, n_test={n_test}", **stats})
