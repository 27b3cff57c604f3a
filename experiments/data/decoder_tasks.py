"""Next-token tasks for decoders whose evidence is known by construction.

``kv_retrieval``: sequences of key-value pairs and a query, ``k3 v7 k1 v2 k9 v4 | k1 ->``, whose
answer (``v2``) is the value stored under the queried key. Keys and values are distinct within a
sequence, so the answer token occurs exactly once in the context; the ground truth is that value
token and its key there. Its vocabulary is its own
(:class:`experiments.data.tokenizer.KVTokenizer`).

``copy_prompts``: English in-context recall prompts for SmolLM2, from templates such as
``Anna lives in Rome. Tom lives in Oslo. Question: Where does Anna live? Answer: Anna lives in``
-> `` Rome``: every answer word is one token of SmolLM2's tokenizer and occurs once in the
prompt, and that token is the ground truth. Here the prompts are generated and encoded; which of
them SmolLM2 completes (top-1), the only ones the benchmark explains, is the zoo's to say
(:func:`experiments.zoo.decoders.copy_prompts`).

Both are text datasets as the benchmark's text models take them: int64 ids ``(N, L)``, right-
padded with the pad id (the decoders read the last real token, ``NextTokenClassifier``), labels
= the answer's token id (the classes are the vocabulary), ``ground_truth`` ``(N, L)`` in {0, 1}
on feature tokens only. Deterministic from the seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from experiments.data.base import Dataset, as_labels, check_size
from experiments.data.text import pad
from experiments.data.tokenizer import KVTokenizer
from experiments.errors import DataError

# -- kv_retrieval ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KVSample:
    ids: tuple[int, ...]
    target: int
    source: tuple[int, int]       # positions of the answer's key and value in the context


def kv_sample(rng: np.random.Generator, tok: KVTokenizer, n_pairs: int, mask_rate: float = 0.0) -> KVSample:
    """One sequence of ``n_pairs`` distinct keys with distinct values, a query of one of them
    (``| k ->``), and its answer. With ``mask_rate``, each token of the other pairs is replaced by
    ``<mask>`` with that probability (training only: the model learns that ``<mask>`` holds
    nothing, which makes masking a token a way to delete it)."""
    keys = rng.choice(tok.n_keys, n_pairs, replace=False)
    values = rng.choice(tok.n_values, n_pairs, replace=False)
    q = int(rng.integers(n_pairs))
    ids: list[int] = []
    for i, (k, v) in enumerate(zip(keys, values)):
        pair = [tok.key(k), tok.value(v)]
        if i != q and mask_rate > 0:
            pair = [tok.mask_token_id if rng.random() < mask_rate else t for t in pair]
        ids += pair
    ids += [tok.query_token_id, tok.key(keys[q]), tok.answer_token_id]
    return KVSample(tuple(int(t) for t in ids), tok.value(values[q]), (2 * q, 2 * q + 1))


def _kv_split(rng: np.random.Generator, tok: KVTokenizer, n: int, min_pairs: int, max_pairs: int,
              mask_rate: float, exclude: set[tuple[int, ...]]) -> list[KVSample]:
    out: list[KVSample] = []
    seen = set(exclude)
    while len(out) < n:
        s = kv_sample(rng, tok, int(rng.integers(min_pairs, max_pairs + 1)), mask_rate)
        if s.ids not in seen:
            seen.add(s.ids)
            out.append(s)
    return out


def _int_arg(name: str, arg: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise DataError(f"{arg}={value!r} is invalid for dataset {name}; choose an integer in {low}..{high}")


def kv_retrieval(n_train: int = 20000, n_test: int = 500, n_keys: int = 16, n_values: int = 16,
                 min_pairs: int = 2, max_pairs: int = 8, mask_rate: float = 0.1, seed: int = 0) -> Dataset:
    """Key-value retrieval (module docstring). ``min_pairs``..``max_pairs`` pairs per sequence;
    ``mask_rate`` masks distractor tokens of the training split only. No test sequence occurs in
    the training split. ``ground_truth``: 1 on the answer's value token and its key in the context.
    """
    name = "kv_retrieval"
    check_size(name, "n_train", n_train, 10**6)
    check_size(name, "n_test", n_test, 10**5)
    _int_arg(name, "n_keys", n_keys, 2, 512)
    _int_arg(name, "n_values", n_values, 2, 512)
    _int_arg(name, "min_pairs", min_pairs, 1, min(n_keys, n_values))
    _int_arg(name, "max_pairs", max_pairs, min_pairs, min(n_keys, n_values))
    if isinstance(mask_rate, bool) or not isinstance(mask_rate, (int, float)) or not 0 <= mask_rate < 1:
        raise DataError(f"mask_rate={mask_rate!r} is invalid for dataset {name}; choose a number in [0, 1)")
    tok = KVTokenizer(n_keys, n_values)
    test = _kv_split(np.random.default_rng([seed, 1]), tok, n_test, min_pairs, max_pairs, 0.0, set())
    train = _kv_split(np.random.default_rng([seed, 0]), tok, n_train, min_pairs, max_pairs, float(mask_rate),
                      {s.ids for s in test})
    width = 2 * max_pairs + 3
    x_train = pad([s.ids for s in train], width, tok.pad_token_id)
    x_test = pad([s.ids for s in test], width, tok.pad_token_id)
    gt = torch.zeros(x_test.shape, dtype=torch.float32)
    for i, s in enumerate(test):
        gt[i, list(s.source)] = 1.0
    return Dataset(name, "text", x_train, as_labels([s.target for s in train]), x_test,
                   as_labels([s.target for s in test]), tok.vocab_size, class_names=tok.vocabulary,
                   ground_truth=gt, texts_test=[tok.decode(s.ids) for s in test],
                   info={"tokenizer": tok.spec(), "length": int(x_test.shape[1]), "pairs": [min_pairs, max_pairs],
                         "mask_rate": mask_rate, "task": "next token = the value stored under the queried key",
                         "rationale": "the answer's value token and its key in the context"})


# -- copy_prompts (SmolLM2) -----------------------------------------------------------------------

NAMES = ("Anna", "Tom", "Maria", "John", "Lucy", "Peter", "Emma", "David", "Sarah", "Paul", "Julia", "Mark",
         "Laura", "James", "Kate", "Ben", "Alice", "Sam", "Nina", "Max")


@dataclass(frozen=True)
class Template:
    """A fact about an entity and the question that recalls it: ``fact`` holds ``{e}`` (the
    entity) and ``{v}`` (the value); ``question`` holds ``{e}`` and ends where the value is due.
    A question and the start of the answer ("Question: Where does Anna live? Answer: Anna lives
    in") is what SmolLM2-135M completes from the context most often; the bare fact's start
    ("Anna lives in") it mostly completes from its priors."""

    name: str
    fact: str
    question: str
    values: tuple[str, ...]


TEMPLATES = (
    Template("colour", "{e}'s ball is {v}.", "Question: What colour is {e}'s ball? Answer: {e}'s ball is",
             ("red", "blue", "green", "yellow", "black", "white", "brown", "pink", "purple", "orange", "grey")),
    Template("city", "{e} lives in {v}.", "Question: Where does {e} live? Answer: {e} lives in",
             ("Paris", "London", "Berlin", "Madrid", "Rome", "Tokyo", "Cairo", "Dublin", "Vienna", "Prague", "Oslo",
              "Lima", "Sydney", "Boston", "Chicago", "Moscow", "Athens", "Lisbon", "Warsaw", "Denver")),
    Template("pet", "{e} has a pet {v}.", "Question: Which pet does {e} have? Answer: {e} has a pet",
             ("dog", "cat", "horse", "rabbit", "parrot", "goat", "pig", "fox", "owl", "duck", "mouse", "snake",
              "frog")),
    Template("food", "{e} likes {v}.", "Question: What does {e} like? Answer: {e} likes",
             ("pizza", "pasta", "rice", "soup", "bread", "cheese", "salad", "apples", "bananas", "cake", "chocolate",
              "coffee", "tea", "fish", "eggs")),
    Template("job", "{e} works as a {v}.", "Question: What is {e}'s job? Answer: {e} works as a",
             ("doctor", "teacher", "lawyer", "farmer", "pilot", "nurse", "chef", "baker", "painter", "singer",
              "writer", "dancer", "driver")),
)


@dataclass(frozen=True)
class CopyPrompt:
    text: str
    answer: str              # the answer word, with its leading space (`` red``)
    template: str


def copy_prompt(rng: np.random.Generator, min_entities: int = 2, max_entities: int = 3) -> CopyPrompt:
    """One prompt: 2..3 entities each with a distinct value of one template, then the query of
    one of them."""
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    n = int(rng.integers(min_entities, max_entities + 1))
    entities = [NAMES[i] for i in rng.choice(len(NAMES), n, replace=False)]
    values = [template.values[i] for i in rng.choice(len(template.values), n, replace=False)]
    asked = int(rng.integers(n))
    facts = " ".join(template.fact.format(e=e, v=v) for e, v in zip(entities, values))
    return CopyPrompt(f"{facts} {template.question.format(e=entities[asked])}", " " + values[asked], template.name)


def encode_prompt(tokenizer: Any, prompt: CopyPrompt) -> tuple[list[int], int, int]:
    """(ids, answer id, position of the answer in the prompt). The answer must be one token
    that occurs exactly once in the prompt; otherwise a DataError names the prompt."""
    ids = [int(i) for i in tokenizer(prompt.text, add_special_tokens=False)["input_ids"]]
    answer = tokenizer(prompt.answer, add_special_tokens=False)["input_ids"]
    if len(answer) != 1:
        raise DataError(f"copy_prompts: the answer {prompt.answer!r} is {len(answer)} tokens; answers are one token")
    where = [i for i, t in enumerate(ids) if t == int(answer[0])]
    if len(where) != 1:
        raise DataError(f"copy_prompts: the answer {prompt.answer!r} occurs {len(where)} times in {prompt.text!r}")
    return ids, int(answer[0]), where[0]


def copy_prompt_candidates(n_prompts: int = 400, min_entities: int = 2, max_entities: int = 3, seed: int = 0,
                           cache_dir: Optional[str] = None) -> Dataset:
    """``n_prompts`` distinct generated prompts (module docstring), all in the test split, encoded
    with SmolLM2's tokenizer, the answer's position as ground truth; no training rows (SmolLM2 is
    pretrained). :func:`experiments.zoo.decoders.copy_prompts` keeps those the model completes."""
    from experiments.data.smollm2_files import smollm2_spec, smollm2_tokenizer

    name = "copy_prompts"
    check_size(name, "n_prompts", n_prompts, 10**5)
    _int_arg(name, "min_entities", min_entities, 2, 6)
    _int_arg(name, "max_entities", max_entities, min_entities, 6)
    tokenizer = smollm2_tokenizer(cache_dir)
    spec = smollm2_spec(cache_dir)
    rng = np.random.default_rng(seed)
    prompts, seen = [], set()
    while len(prompts) < n_prompts:
        p = copy_prompt(rng, min_entities, max_entities)
        if p.text not in seen:
            seen.add(p.text)
            prompts.append(p)
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    length = max(len(ids) for ids, _, _ in encoded)
    x = pad([ids for ids, _, _ in encoded], length, spec["pad_token_id"])
    gt = torch.zeros(x.shape, dtype=torch.float32)
    for i, (_, _, where) in enumerate(encoded):
        gt[i, where] = 1.0
    return Dataset(name, "text", torch.zeros((0, length), dtype=torch.int64), torch.zeros(0, dtype=torch.int64), x,
                   torch.tensor([a for _, a, _ in encoded], dtype=torch.int64), spec["vocab_size"], ground_truth=gt,
                   texts_test=[p.text for p in prompts],
                   info={"tokenizer": spec, "templates": [p.template for p in prompts], "length": length,
                         "task": "next token = the value the prompt stated for the queried entity",
                         "rationale": "the answer token in the context"})
