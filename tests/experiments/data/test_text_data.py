"""Text datasets: the generated sentiment corpus (labels agree with rationales, determinism,
rationale masks on the right tokens) and the SST-2 loader on files generated here in both of its
layouts (nothing is downloaded)."""
from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from experiments.data import datasets
from experiments.data import formats, text
from experiments.data.datasets import Dataset
from experiments.data.tokenizer import load_tokenizer, tokenizer_spec
from experiments.errors import DataError

SPEC = tokenizer_spec()
SPECIAL = set(SPEC["special_token_ids"]) | {SPEC["pad_token_id"]}


@pytest.fixture(scope="module")
def corpus() -> Dataset:
    return datasets.sentiment_rationales(n_train=120, n_test=80, seed=3)


def words_of(sentence: str) -> list[str]:
    return sentence.split()


def label_from_text(sentence: str) -> tuple[int, float, float, list[int]]:
    """What a reader with the two lexicons concludes from the text alone: (label, summed valence
    of the sentiment words with negation flips, the distractors' summed valence, the indices of
    the rationale words: sentiment words and the negators in front of them)."""
    lex = text.sentiment_lexicon()
    polar = set(lex.positive) | set(lex.negative)
    words = words_of(sentence)
    total, noise, rationale = 0.0, 0.0, []
    for i, w in enumerate(words):
        if w in polar:
            negated = i > 0 and words[i - 1] in text.NEGATORS
            total += -lex.valence[w] if negated else lex.valence[w]
            rationale += [i - 1, i] if negated else [i]
        elif w in lex.distractors:
            noise += lex.valence[w]
    return int(total > 0), total, noise, rationale


# -- the lexicon --------------------------------------------------------------------------------

def test_lexicon_words_have_the_polarity_both_lexicons_give_them():
    lex = text.sentiment_lexicon()
    vader, blob = text.vader_lexicon(), text.textblob_adjectives()
    assert len(lex.positive) > 50 and len(lex.negative) > 50 and len(lex.distractors) > 50
    for w in lex.positive:
        assert vader[w] >= text.STRONG_VALENCE and min(blob[w]) >= 0 and np.mean(blob[w]) >= 0.3, w
    for w in lex.negative:
        assert vader[w] <= -text.STRONG_VALENCE and max(blob[w]) <= 0 and np.mean(blob[w]) <= -0.3, w
    for w in lex.distractors:
        assert 0 < abs(lex.valence[w]) <= text.WEAK_VALENCE, w
    assert not (set(lex.positive) | set(lex.negative)) & set(lex.distractors)
    # two distractors can never outweigh one sentiment word
    assert text.MAX_DISTRACTORS * text.WEAK_VALENCE < text.STRONG_VALENCE


def test_template_words_carry_no_valence_in_either_lexicon():
    vader, blob = text.vader_lexicon(), text.textblob_adjectives()
    valenced = sorted(w for w in text.neutral_words() if w in vader or any(blob.get(w, [0.0])))
    assert valenced == []
    assert not set(text.NEGATORS) & text.neutral_words()


# -- the generator --------------------------------------------------------------------------------

def test_labels_agree_with_the_rationale_read_from_the_text_alone():
    sentences = text.generate_corpus(600, seed=11)
    lex = text.sentiment_lexicon()
    negated = 0
    for s in sentences:
        label, total, noise, rationale = label_from_text(s.text)
        assert label == s.label, s.text
        assert abs(total) >= text.STRONG_VALENCE and abs(noise) < abs(total)   # distractors never decide
        assert int(total + noise > 0) == s.label                               # nor flip the sum
        assert [i for i, r in enumerate(s.rationale) if r] == rationale, s.text
        assert text.rationale_label(s.words, s.roles, lex) == (label, pytest.approx(total))
        n_sent = sum(r == "sentiment" for r in s.roles)
        assert 1 <= n_sent <= 3 and sum(r == "distractor" for r in s.roles) <= text.MAX_DISTRACTORS
        negated += sum(r == "negator" for r in s.roles)
    # negations exist and flip: some positive sentences hold negated negative words and vice versa
    assert negated > 100
    flipped = [s for s in sentences if any(r == "negator" for r in s.roles)]
    assert {s.label for s in flipped} == {0, 1}
    assert sum(s.label for s in sentences) == 300 and len({s.text for s in sentences}) == 600


def test_a_negation_flips_the_label():
    lex = text.sentiment_lexicon()
    good = lex.positive[0]
    assert text.rationale_label(["the", "plot", "was", good, "."], ["filler"] * 3 + ["sentiment", "filler"], lex)[0] == 1
    assert text.rationale_label(["the", "plot", "was", "not", good, "."],
                                ["filler"] * 3 + ["negator", "sentiment", "filler"], lex)[0] == 0


def test_same_seed_same_corpus_other_seed_other_corpus(corpus):
    again = datasets.sentiment_rationales(n_train=120, n_test=80, seed=3)
    other = datasets.sentiment_rationales(n_train=120, n_test=80, seed=4)
    assert torch.equal(corpus.x_train, again.x_train) and torch.equal(corpus.x_test, again.x_test)
    assert torch.equal(corpus.ground_truth, again.ground_truth) and corpus.texts_test == again.texts_test
    assert corpus.texts_test != other.texts_test


def test_the_corpus_is_a_text_dataset_of_padded_ids(corpus):
    assert corpus.modality == "text" and corpus.n_classes == 2 and corpus.class_names == ["negative", "positive"]
    for x, y in ((corpus.x_train, corpus.y_train), (corpus.x_test, corpus.y_test)):
        assert x.dtype == torch.int64 and y.dtype == torch.int64 and x.shape[1] == corpus.info["length"] <= 64
        assert (x[:, 0] == load_tokenizer().cls_token_id).all()
        real = x != SPEC["pad_token_id"]
        assert (real.long().cummin(1).values == real.long()).all()          # right padding only
        last = real.sum(1) - 1
        assert (x[torch.arange(len(x)), last] == load_tokenizer().sep_token_id).all()
    assert int(corpus.y_train.sum() + corpus.y_test.sum()) == 100          # balanced over the corpus
    assert corpus.model_kwargs() == {"num_classes": 2, "vocab_size": SPEC["vocab_size"],
                                     "pad_token_id": SPEC["pad_token_id"], "mask_token_id": SPEC["mask_token_id"],
                                     "special_token_ids": SPEC["special_token_ids"]}
    assert corpus.input_shape == (corpus.x_test.shape[1],) and corpus.channels is None


def test_rationale_masks_cover_the_rationale_words_tokens_and_nothing_else(corpus):
    tok = load_tokenizer()
    gt = corpus.ground_truth
    assert gt.shape == corpus.x_test.shape and set(gt.unique().tolist()) <= {0.0, 1.0}
    assert (gt.sum(1) >= 1).all()
    for i, sentence in enumerate(corpus.texts_test):
        ids = corpus.x_test[i]
        assert not any(int(t) in SPECIAL for t in ids[gt[i].bool()])        # never a special or pad token
        words = words_of(sentence)
        _, _, _, rationale = label_from_text(sentence)
        # the tokens of the rationale words, in order, are exactly the marked tokens
        want = [p for j in rationale for p in tok.tokenize(words[j])]
        assert tok.convert_ids_to_tokens(ids[gt[i].bool()].tolist()) == want, sentence
        # and the sentence's ids are the tokenizer's own for the text
        real = ids[ids != SPEC["pad_token_id"]].tolist()
        assert real == tok(sentence)["input_ids"]


def test_the_test_split_shares_no_sentence_with_the_training_split():
    ds = datasets.sentiment_rationales(n_train=300, n_test=100, seed=0)
    train = {tuple(r[r != 0].tolist()) for r in ds.x_train}
    assert not train & {tuple(r[r != 0].tolist()) for r in ds.x_test}


def test_bad_corpus_settings_are_one_line():
    with pytest.raises(DataError, match=r"^n_test=0 is invalid for dataset sentiment_rationales; choose an integer"):
        datasets.sentiment_rationales(n_train=10, n_test=0)
    with pytest.raises(DataError, match=r"tokens, more than max_length=8; raise max_length$"):
        datasets.sentiment_rationales(n_train=10, n_test=10, max_length=8)
    with pytest.raises(DataError, match=r"^max_length=4 is invalid for dataset sentiment_rationales; choose an integer in 8\.\.512$"):
        datasets.sentiment_rationales(n_train=10, n_test=10, max_length=4)
    with pytest.raises(DataError, match=r"^negation_rate=2 is invalid"):
        datasets.sentiment_rationales(n_train=10, n_test=10, negation_rate=2)
    with pytest.raises(DataError, match=r"^max_neutral_adjectives=0 is invalid for dataset sentiment_rationales; "
                                        r"choose 1, 2 or 3$"):
        datasets.sentiment_rationales(n_train=10, n_test=10, max_neutral_adjectives=0)


# -- the Dataset contract for text ----------------------------------------------------------------

def _text_dataset(**changes) -> Dataset:
    ids = torch.tensor([[101, 2204, 102, 0], [101, 2919, 3185, 102]])
    kwargs = dict(name="toy", modality="text", x_train=ids, y_train=torch.tensor([1, 0]), x_test=ids.clone(),
                  y_test=torch.tensor([1, 0]), n_classes=2, info={"tokenizer": SPEC},
                  ground_truth=torch.tensor([[0, 1, 0, 0], [0, 1, 1, 0]], dtype=torch.float32),
                  texts_test=["good", "bad movie"])
    kwargs.update(changes)
    return Dataset(**kwargs)


def test_the_text_contract_refuses_what_would_break_a_model():
    assert _text_dataset().n_features == 4
    with pytest.raises(DataError, match=r"x_train must be int64 of rank 2, got torch.float32"):
        _text_dataset(x_train=torch.zeros(2, 4))
    with pytest.raises(DataError, match=r"x_test holds token id 99999 at sample 1, position 2, outside the vocabulary"):
        _text_dataset(x_test=torch.tensor([[101, 2204, 102, 0], [101, 2919, 99999, 102]]))
    with pytest.raises(DataError, match=r"ground_truth marks a special or pad token \(test sample 0, position 3\)"):
        _text_dataset(ground_truth=torch.tensor([[0, 1, 0, 1], [0, 1, 1, 0]], dtype=torch.float32))
    with pytest.raises(DataError, match=r"texts_test holds 1 texts for 2 test samples"):
        _text_dataset(texts_test=["good"])
    with pytest.raises(DataError, match=r"needs info\['tokenizer'\]"):
        _text_dataset(info={})


# -- SST-2 -------------------------------------------------------------------------------------------

TRAIN = [("a gorgeous , witty , seductive movie .", 1), ("the story is too predictable", 0),
         ("it 's a charming and often affecting journey .", 1), ("unflinchingly bleak and desperate", 0),
         ("the acting is just awful", 0), ("a masterpiece four years in the making", 1)]
VALIDATION = [("it 's slow -- very , very slow .", 0), ("a sometimes tedious film .", 0),
              ("this is a film well worth seeing", 1)]


def write_parquet(folder: Path) -> None:
    (folder / "data").mkdir(parents=True)
    for split, rows in (("train", TRAIN), ("validation", VALIDATION)):
        frame = pd.DataFrame({"idx": range(len(rows)), "sentence": [s for s, _ in rows],
                              "label": [y for _, y in rows]})
        frame.to_parquet(folder / "data" / f"{split}-00000-of-00001.parquet")
    pd.DataFrame({"idx": [0], "sentence": ["hidden"], "label": [-1]}).to_parquet(
        folder / "data" / "test-00000-of-00001.parquet")


def write_tsv(folder: Path, train=TRAIN) -> None:
    (folder / "SST-2").mkdir(parents=True)
    for name, rows in (("train", train), ("dev", VALIDATION)):
        lines = ["sentence\tlabel"] + [f"{s}\t{y}" for s, y in rows]
        (folder / "SST-2" / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "SST-2" / "test.tsv").write_text("index\tsentence\n0\thidden\n", encoding="utf-8")


@pytest.mark.parametrize("layout", ["parquet", "tsv"])
def test_sst2_reads_both_layouts_and_tests_on_validation(layout, tmp_path):
    (write_parquet if layout == "parquet" else write_tsv)(tmp_path)
    ds = datasets.sst2(data_dir=str(tmp_path), download=False, n_train=None, n_test=None, seed=0)
    assert ds.modality == "text" and ds.ground_truth is None and ds.n_classes == 2
    assert sorted(ds.texts_test) == sorted(s for s, _ in VALIDATION)
    by_text = dict(VALIDATION)
    assert [by_text[t] for t in ds.texts_test] == ds.y_test.tolist()
    tok = load_tokenizer()
    for t, ids in zip(ds.texts_test, ds.x_test):
        assert ids[ids != 0].tolist() == tok(t)["input_ids"]
    assert len(ds.x_train) == len(TRAIN) and sorted(ds.y_train.tolist()) == sorted(y for _, y in TRAIN)


def test_sst2_layouts_give_the_same_dataset(tmp_path):
    write_parquet(tmp_path / "a")
    write_tsv(tmp_path / "b")
    a = datasets.sst2(data_dir=str(tmp_path / "a"), download=False, n_train=4, seed=1)
    b = datasets.sst2(data_dir=str(tmp_path / "b"), download=False, n_train=4, seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test) and a.texts_test == b.texts_test


def test_sst2_cuts_long_sentences_at_max_length(tmp_path):
    write_tsv(tmp_path, train=TRAIN + [(" ".join(["word"] * 40), 1)])
    ds = datasets.sst2(data_dir=str(tmp_path), download=False, n_train=None, max_length=16)
    assert ds.x_train.shape[1] == 16 and ds.info["truncated"] == 1
    assert (ds.x_train[:, -1][ds.x_train[:, -1] != 0] == load_tokenizer().sep_token_id).all()


def test_sst2_missing_files_name_the_folder(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=rf"^sst2: no train split in {tmp_path} .*and download=false; put the SST-2 files there$"):
        datasets.sst2(data_dir=str(tmp_path), download=False)

    def offline(url, dest, timeout=30.0):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(formats, "download", offline)
    with pytest.raises(DataError, match=rf"^sst2: no SST-2 files in {tmp_path} and the download failed"):
        datasets.sst2(data_dir=str(tmp_path), download=True)


def test_sst2_downloads_the_parquet_files_where_missing(tmp_path, monkeypatch):
    source = tmp_path / "mirror"
    write_parquet(source)
    fetched = []

    def fake(url, dest, timeout=30.0):
        fetched.append(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((source / "data" / Path(url).name).read_bytes())

    monkeypatch.setattr(formats, "download", fake)
    ds = datasets.sst2(data_dir=str(tmp_path / "sst2"), download=True, n_train=None)
    assert sorted(Path(u).name for u in fetched) == ["train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"]
    assert len(ds.x_test) == len(VALIDATION)


def test_sst2_bad_files_are_one_line(tmp_path):
    write_tsv(tmp_path)
    path = tmp_path / "SST-2" / "train.tsv"
    path.write_text("sentence\tlabel\ngood\t1\nbad\t0\textra\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^sst2: {path} line 3 has 3 tab-separated fields, the header 2"):
        datasets.sst2(data_dir=str(tmp_path), download=False)
    path.write_text("sentence\tlabel\ngood\t1\nbad\t7\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^sst2: {path} row 2 has label '7'; SST-2 labels are 0"):
        datasets.sst2(data_dir=str(tmp_path), download=False)
    path.write_text("index\tsentence\n0\tgood\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"has no column 'label'"):
        datasets.sst2(data_dir=str(tmp_path), download=False)
