"""The default sentiment_rationales corpus hides its rationale from model-free scorers: a token's
rarity in the training split finds about as many neutral content words as rationale words, the
same content words occur under both labels, and the vocabulary is matched in frequency to the
sentiment words. Measured on the default corpus (4000 training, 500 test sentences)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from baselines.base import ExplainContext
from baselines.controls import RarityMethod
from experiments.data import datasets, text
from experiments.data.tokenizer import load_tokenizer, tokenizer_spec
from experiments.zoo.text_models import TextClassifier
from metrics.text import TokenAveragePrecision, TokenRPrecision

SPEC = tokenizer_spec()
# what a model-free scorer may reach on the test split (R-precision: the rationale's size picked)
RARITY_CEILING = 0.25


class NoModel(TextClassifier):
    """The tokenizer's idea of a feature token, and nothing else: the scorers here run no model."""

    kind = "recurrent"

    def __init__(self) -> None:
        super().__init__(SPEC["pad_token_id"], SPEC["mask_token_id"], SPEC["special_token_ids"])
        self.embedding = nn.Embedding(1, 1)

    def embedding_layer(self) -> nn.Embedding:
        return self.embedding


@pytest.fixture(scope="module")
def corpus() -> datasets.Dataset:
    return datasets.sentiment_rationales()


@pytest.fixture(scope="module")
def sentences() -> list[text.Sentence]:
    return text.generate_corpus(4000, [0, 0])


def agreement(corpus, a: torch.Tensor) -> tuple[float, float]:
    """(mean R-precision, mean average precision) of a map over the whole test split."""
    y = corpus.y_test
    r = TokenRPrecision()(NoModel(), corpus.x_test, y, a, ground_truth=corpus.ground_truth)
    ap = TokenAveragePrecision()(NoModel(), corpus.x_test, y, a, ground_truth=corpus.ground_truth)
    return float(np.nanmean(r)), float(np.nanmean(ap))


def test_the_rarity_of_a_token_does_not_find_the_rationale(corpus):
    ctx = ExplainContext(modality="text", model_kind="recurrent", n_classes=2, x_train=corpus.x_train)
    rarity = RarityMethod(NoModel(), ctx)(corpus.x_test, corpus.y_test).values
    r_precision, ap = agreement(corpus, rarity)
    assert r_precision <= RARITY_CEILING
    # the rationale holds about 7 % of a sentence's tokens; a map that knows nothing scores near that
    # share on AP, and rarity stays within 0.3 of it
    share = float((corpus.ground_truth.sum(1) / NoModel().feature_mask(corpus.x_test).sum(1)).mean())
    assert ap < share + 0.3


def test_not_being_a_template_word_does_not_find_the_rationale(corpus):
    tok = load_tokenizer()
    template = {i for w in text.neutral_words() for i in tok(w, add_special_tokens=False)["input_ids"]}
    not_template = (~torch.isin(corpus.x_test, torch.tensor(sorted(template)))).float()
    r_precision, _ = agreement(corpus, not_template)
    assert r_precision <= RARITY_CEILING


def test_the_same_content_words_occur_under_both_labels(sentences):
    vocab = text.corpus_vocabulary()
    by_label: dict[int, Counter] = {0: Counter(), 1: Counter()}
    for s in sentences:
        by_label[s.label].update(w for w, r in zip(s.words, s.roles) if r == "content")
    for word in vocab.content:
        total = by_label[0][word] + by_label[1][word]
        assert total >= 20, word                         # every content word is common in the corpus
        assert 0.25 <= by_label[1][word] / total <= 0.75, word   # and drawn whatever the label
    assert {w for s in sentences for w, r in zip(s.words, s.roles) if r == "content"} == set(vocab.content)


def test_content_words_are_as_frequent_as_sentiment_words_in_english_and_in_the_corpus(sentences):
    vocab = text.corpus_vocabulary()
    sentiment = vocab.lexicon.positive + vocab.lexicon.negative
    ref = np.array([text.zipf(w) for w in sentiment])
    counts = Counter(w for s in sentences for w, r in zip(s.words, s.roles) if r in ("content", "sentiment", "distractor"))
    per_word = {}
    # English frequency: the same spread, quartiles within 0.05 on the zipf scale; the adjectives
    # within 0.25 (a factor 1.8): few adjectives that textblob rates neutral are as rare as the
    # rarer sentiment words, so their lower quartile and median sit higher
    for kind, words, tolerance in (("sentiment", sentiment, 0.0), ("nouns", vocab.nouns, 0.05),
                                   ("adjectives", vocab.adjectives, 0.25), ("distractors", vocab.distractors, 0.05)):
        z = np.array([text.zipf(w) for w in words])
        np.testing.assert_allclose(np.quantile(z, [0.25, 0.5, 0.75]), np.quantile(ref, [0.25, 0.5, 0.75]),
                                   atol=tolerance, err_msg=kind)
        per_word[kind] = np.mean([counts[w] for w in words])
    # corpus frequency: each kind's words occur about as often as a sentiment word (within 10 %)
    for kind, mean in per_word.items():
        assert mean == pytest.approx(per_word["sentiment"], rel=0.1), kind


def test_every_open_slot_word_is_one_token_and_neutral_words_carry_no_valence():
    vocab = text.corpus_vocabulary()
    tok = load_tokenizer()
    vader, blob = text.vader_lexicon(), text.textblob_polarities()
    words = vocab.content | set(vocab.distractors) | set(vocab.lexicon.positive) | set(vocab.lexicon.negative)
    assert all(len(tok.tokenize(w)) == 1 for w in words)
    assert not [w for w in vocab.content if w in vader or any(blob.get(w, [0.0]))]
    assert all(blob.get(w) for w in vocab.adjectives)            # rated by textblob, and rated 0
    assert len(vocab.lexicon.positive) == len(vocab.lexicon.negative)
    assert not vocab.content & text.EXCLUDED_CONTENT


def test_negators_also_stand_before_neutral_adjectives_and_are_rationale_only_before_sentiment(sentences):
    before = Counter()
    for s in sentences:
        for i, (w, r) in enumerate(zip(s.words, s.roles)):
            if w in text.NEGATORS:
                nxt = s.roles[i + 1]
                before[nxt] += 1
                assert (r == "negator") == (nxt == "sentiment"), s.text
    assert before["sentiment"] > 500 and before["content"] > 500


def test_the_corpus_is_deterministic_and_its_test_split_does_not_depend_on_n_train():
    a = datasets.sentiment_rationales(n_train=50, n_test=40, seed=5)
    b = datasets.sentiment_rationales(n_train=50, n_test=40, seed=5)
    c = datasets.sentiment_rationales(n_train=90, n_test=40, seed=5)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test) and a.texts_test == b.texts_test
    assert a.texts_test == c.texts_test
    width = min(a.x_test.shape[1], c.x_test.shape[1])
    real = a.x_test != SPEC["pad_token_id"]
    assert torch.equal(a.x_test[:, :width][real[:, :width]], c.x_test[:, :width][real[:, :width]])
    assert text.corpus_vocabulary() is text.corpus_vocabulary()     # built once per setting
