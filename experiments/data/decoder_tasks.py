"""Next-token tasks for decoders whose evidence is known by construction.

``kv_retrieval``: sequences of key-value pairs and a query, ``k3 v7 k1 v2 k9 v4 | k1 ->``, whose
answer (``v2``) is the value stored under the queried key. Keys and values are distinct within a
sequence, so the answer token occurs exactly once in the context; the ground truth is that value
token and its key there. Its vocabulary is its own (:class:`KVTokenizer`).

``copy_prompts``: English in-context recall prompts for SmolLM2, from templates such as
``Anna lives in Rome. Tom lives in Oslo. Question: Where does Anna live? Answer: Anna lives in``
-> `` Rome``: every answer word is one token of SmolLM2's tokenizer and occurs once in the
prompt, and that token is the ground truth.
Only the prompts the model completes correctly (top-1) are kept; how many of how many is stored
in the dataset's ``info``.

Both are text datasets as the benchmark's text models take them: int64 ids ``(N, L)``, right-
padded with the pad id (the decoders read the last real token, ``NextTokenClassifier``), labels
= the answer's token id (the classes are the vocabulary), ``ground_truth`` ``(N, L)`` in {0, 1}
on feature tokens only. Deterministic from the seed.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from experiments.loaders.base import DataError, Dataset, as_labels, check_size
from experiments.loaders.text import pad

# -- kv_retrieval ------------------------------------------------------------------------------------

KV_SPECIAL = ("<pad>", "<mask>", "|", "->")   # ids 0..3: never features; keys and values follow


@dataclass(frozen=True)
class KVTokenizer:
    """The vocabulary of ``kv_retrieval``: ``<pad>``, ``<mask>``, the separators ``|`` and ``->``,
    keys ``k0..k{n_keys-1}`` and values ``v0..v{n_values-1}``, in that order of ids."""

    n_keys: int = 16
    n_values: int = 16

    @property
    def vocabulary(self) -> list[str]:
        return list(KV_SPECIAL) + [f"k{i}" for i in range(self.n_keys)] + [f"v{i}" for i in range(self.n_values)]

    @property
    def vocab_size(self) -> int:
        return len(KV_SPECIAL) + self.n_keys + self.n_values

    pad_token_id: int = 0
    mask_token_id: int = 1
    query_token_id: int = 2
    answer_token_id: int = 3

    @property
    def all_special_ids(self) -> list[int]:
        return list(range(len(KV_SPECIAL)))

    def key(self, i: int) -> int:
        return len(KV_SPECIAL) + int(i)

    def value(self, i: int) -> int:
        return len(KV_SPECIAL) + self.n_keys + int(i)

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        vocab = self.vocabulary
        return [vocab[int(i)] for i in ids]

    def encode(self, text: str) -> list[int]:
        """Ids of a space-separated sequence of tokens (``"k3 v7 | k3 ->"``)."""
        index = {t: i for i, t in enumerate(self.vocabulary)}
        try:
            return [index[t] for t in text.split()]
        except KeyError as exc:
            raise DataError(f"kv_retrieval: unknown token {exc.args[0]!r}; the vocabulary is "
                            f"{', '.join(self.vocabulary)}") from None

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(t for t in self.convert_ids_to_tokens(ids) if t != "<pad>")

    def spec(self) -> dict[str, Any]:
        """The ids a text dataset stores (``Dataset.info["tokenizer"]``)."""
        return {"tokenizer": f"kv{self.n_keys}x{self.n_values}", "vocab_size": self.vocab_size,
                "pad_token_id": self.pad_token_id, "mask_token_id": self.mask_token_id,
                "special_token_ids": self.all_special_ids, "vocabulary": self.vocabulary}


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


def _atomic_json(payload: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


@torch.no_grad()
def correct_top1(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Per row, whether the model's top-1 next token is the target (rows sorted by length so each
    batch is trimmed to its longest real row)."""
    lengths = x.ne(int(model.pad_token_id)).sum(1)
    order = torch.argsort(lengths, stable=True)
    out = torch.zeros(len(x), dtype=torch.bool)
    for start in range(0, len(x), batch_size):
        rows = order[start:start + batch_size]
        width = int(lengths[rows].max())
        out[rows] = model(x[rows, :width]).argmax(-1).eq(y[rows])
    return out


def copy_prompts(n_prompts: int = 400, n_test: Optional[int] = None, min_entities: int = 2, max_entities: int = 3,
                 seed: int = 0, cache_dir: Optional[str] = None) -> Dataset:
    """``n_prompts`` generated prompts (module docstring), of which those SmolLM2 completes with
    the answer (top-1) are the test split (the first ``n_test`` of them, or all). Which prompts
    the model gets right is computed once and kept in the model cache (``cache_dir``, default the
    run's) under a key of the prompts and the model. There is no training split (SmolLM2 is
    pretrained): ``x_train`` has no rows. ``info["kept"]`` / ``info["generated"]``: how many."""
    from experiments.zoo.decoders import SmolLM2, default_cache_dir, smollm2_key, smollm2_spec, smollm2_tokenizer

    name = "copy_prompts"
    check_size(name, "n_prompts", n_prompts, 10**5)
    check_size(name, "n_test", n_test, n_prompts)
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
    y = torch.tensor([a for _, a, _ in encoded], dtype=torch.int64)
    gt = torch.zeros(x.shape, dtype=torch.float32)
    for i, (_, _, where) in enumerate(encoded):
        gt[i, where] = 1.0

    key = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes() + smollm2_key().encode()).hexdigest()[:16]
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / "data" / f"{name}-{key}.json"
    try:
        correct = torch.tensor(json.loads(path.read_text())["correct"], dtype=torch.bool)
        if len(correct) != len(x):
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError):
        model = SmolLM2(spec["vocab_size"], spec["vocab_size"], cache_dir=cache_dir)
        correct = correct_top1(model, x, y)
        del model
        _atomic_json({"correct": correct.tolist(), "model": "smollm2", "prompts": len(x)}, path)
    keep = torch.nonzero(correct).flatten()
    if n_test is not None:
        if len(keep) < n_test:
            raise DataError(f"n_test={n_test} is invalid for dataset {name}: SmolLM2 completes only {len(keep)} of "
                            f"the {n_prompts} prompts; choose n_test <= {len(keep)} or raise n_prompts")
        keep = keep[:n_test]
    x_test = x[keep]
    width = int(x_test.ne(spec["pad_token_id"]).sum(1).max()) if len(keep) else length
    by_template = {t.name: 0 for t in TEMPLATES}
    kept_by_template = dict(by_template)
    for i, p in enumerate(prompts):
        by_template[p.template] += 1
        kept_by_template[p.template] += int(correct[i])
    return Dataset(name, "text", torch.zeros((0, width), dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
                   x_test[:, :width].contiguous(), y[keep], spec["vocab_size"], ground_truth=gt[keep][:, :width].contiguous(),
                   texts_test=[prompts[i].text for i in keep.tolist()],
                   info={"tokenizer": spec, "generated": len(prompts), "correct": int(correct.sum()),
                         "kept": len(keep), "by_template": {k: [kept_by_template[k], by_template[k]] for k in by_template},
                         "length": width, "task": "next token = the value the prompt stated for the queried entity",
                         "rationale": "the answer token in the context"})
