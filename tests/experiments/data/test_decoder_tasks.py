"""The decoder tasks: kv_retrieval's sequences, answers and ground truth by construction, its
vocabulary by name, and the copy prompts' answers (one token, once in the prompt); the prompts
SmolLM2 completes are the zoo's (tests/experiments/zoo/test_decoder_zoo.py)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from experiments.data.decoder_tasks import TEMPLATES, CopyPrompt, copy_prompt, encode_prompt, kv_retrieval, kv_sample
from experiments.data.tokenizer import KVTokenizer, load_tokenizer, tokenizer_spec
from experiments.errors import DataError


@pytest.fixture(scope="module")
def kv():
    return kv_retrieval(n_train=300, n_test=60, seed=3)


def test_kv_answers_have_exactly_one_source_which_is_the_ground_truth(kv):
    tok = KVTokenizer()
    for row, y, gt in zip(kv.x_test.tolist(), kv.y_test.tolist(), kv.ground_truth):
        row = [t for t in row if t != tok.pad_token_id]
        assert row[-3] == tok.query_token_id and row[-1] == tok.answer_token_id
        context, key = row[:-3], row[-2]
        assert context.count(y) == 1                                      # the answer occurs once
        pairs = dict(zip(context[0::2], context[1::2]))
        assert len(pairs) == len(context) // 2 and len(set(pairs.values())) == len(pairs)
        assert pairs[key] == y                                            # it is the queried key's value
        source = torch.nonzero(gt).flatten().tolist()
        assert source == [context.index(key), context.index(y)]           # the key and the value
    assert kv.texts_test[0] == tok.decode(kv.x_test[0].tolist())


def test_kv_is_deterministic_and_its_splits_do_not_overlap(kv):
    again = kv_retrieval(n_train=300, n_test=60, seed=3)
    assert torch.equal(again.x_train, kv.x_train) and torch.equal(again.x_test, kv.x_test)
    assert not torch.equal(kv_retrieval(n_train=300, n_test=60, seed=4).x_test, kv.x_test)
    train = {tuple(r) for r in kv.x_train.tolist()}
    assert not any(tuple(r) in train for r in kv.x_test.tolist())
    # special tokens are never features, keys and values always
    feature = kv.token_feature_mask(kv.x_test)
    tok = KVTokenizer()
    assert bool((feature == (kv.x_test >= len(tok.all_special_ids))).all())


def test_masks_only_in_training_rows_and_never_on_the_queried_pair(kv):
    tok = KVTokenizer()
    assert not bool(kv.x_test.eq(tok.mask_token_id).any())
    masked = 0
    for row, y in zip(kv.x_train.tolist(), kv.y_train.tolist()):
        first = row.index(tok.query_token_id)
        context, key = row[:first], row[first + 1]
        masked += context.count(tok.mask_token_id)
        assert key in context and context[context.index(key) + 1] == y        # the queried pair is intact
    assert masked > 0
    sample = kv_sample(np.random.default_rng(0), tok, 3)
    assert tok.decode(sample.ids).endswith(" ->") and len(sample.ids) == 9


@pytest.mark.parametrize("args, message", [
    ({"n_keys": 1}, r"n_keys=1 is invalid for dataset kv_retrieval; choose an integer in 2\.\.512"),
    ({"max_pairs": 20}, r"max_pairs=20 is invalid for dataset kv_retrieval; choose an integer in 2\.\.16"),
    ({"mask_rate": 1.0}, r"mask_rate=1\.0 is invalid for dataset kv_retrieval; choose a number in \[0, 1\)"),
    ({"n_test": 0}, r"n_test=0 is invalid for dataset kv_retrieval"),
])
def test_kv_refuses_bad_arguments(args, message):
    with pytest.raises(DataError, match=message):
        kv_retrieval(**{"n_train": 10, "n_test": 5, **args})


class WordTokenizer:
    """Words (with the space before them, as byte-level BPE keeps it) and punctuation as ids."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.vocab.setdefault(p, len(self.vocab)) for p in re.findall(r" ?[A-Za-z']+|[.?:]", text)]}


def test_copy_prompts_state_each_answer_once():
    rng = np.random.default_rng(0)
    tok = WordTokenizer()
    for _ in range(50):
        p = copy_prompt(rng)
        template = next(t for t in TEMPLATES if t.name == p.template)
        assert p.answer.strip() in template.values and p.text.count(p.answer + ".") == 1
        ids, answer, where = encode_prompt(tok, p)
        assert ids[where] == answer and ids.count(answer) == 1
    with pytest.raises(DataError, match=r"the answer ' red' occurs 2 times in"):
        encode_prompt(tok, CopyPrompt("Anna's ball is red. Tom's ball is red. Anna's ball is", " red", "colour"))


def test_the_kv_vocabulary_is_found_by_its_name(kv):
    name = kv.info["tokenizer"]["tokenizer"]
    assert name == "kv16x16" and load_tokenizer(name) == KVTokenizer(16, 16)
    assert tokenizer_spec(name) == kv.info["tokenizer"]
    assert load_tokenizer("kv4x3").convert_ids_to_tokens([0, 1, 2, 3, 4, 8, 10]) == ["<pad>", "<mask>", "|", "->", "k0",
                                                                                     "v0", "v2"]
    with pytest.raises(DataError, match=r"kv_retrieval: unknown token 'k9'; the vocabulary is <pad>, <mask>"):
        load_tokenizer("kv4x3").encode("k1 v0 | k9 ->")
