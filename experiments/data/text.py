"""Text datasets: a generated sentiment corpus with known rationales (GLUE SST-2, encoded the
same way, is in :mod:`experiments.data.sst2`).

Both are tokenised with the benchmark's one tokenizer (``experiments.zoo.text_models``): int64 ids
``(N, L)``, ``[CLS] ... [SEP]`` then right padding with the pad id, ``L`` the longest sequence of
either split (at most ``max_length``). Labels: 0 negative, 1 positive.

``sentiment_rationales`` is to text what ``synthetic_image`` is to images: every sentence is built
from clauses ``the <noun> <copula> [not|never] <adjective>``, one to three of which carry a
sentiment word of one polarity (after negation) taken from the lexicons that ship in the
vaderSentiment and textblob packages, and one or two of which carry an adjective that both
lexicons rate neutral; a neutral clause around a noun, distractor adjectives of weak valence,
and template openers, joiners and closers. The label is the sign of the summed valence of the
sentiment words (each flipped when negated), and those words together with their negators are
the rationale, stored per token in ``ground_truth``.

Finding the rationale needs the model: the nouns and neutral adjectives come from a large
vocabulary (``wordfreq``), are drawn whatever the label (so the same content words appear under
both labels), and are as rare as the sentiment words, both in English (zipf frequency) and in the
corpus (each vocabulary is sized so that its words occur as often as a sentiment word); negators
also stand in front of neutral adjectives. So a model-free scorer that ranks tokens by their
rarity in the training split, or by not being template words, picks several content words for
each rationale word, and the word after a copula or negator is a neutral adjective about as often
as a sentiment word. Every word is one WordPiece token of the tokenizer.
"""
from __future__ import annotations

import functools
import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from experiments.errors import DataError

from .base import Dataset, as_labels, check_size

SENTIMENT_CLASSES = ["negative", "positive"]

# -- the lexicon --------------------------------------------------------------------------------

STRONG_VALENCE = 2.0    # |VADER valence| (scale -4..4) of a sentiment word, at least
WEAK_VALENCE = 0.8      # |valence| of a distractor, at most; 2 distractors never outweigh one sentiment word
MAX_DISTRACTORS = 2     # so sum(distractors) <= 1.6 < STRONG_VALENCE: the rationale decides the label
NEGATORS = ("not", "never")
# Words of the lexicons that are slurs, profanity or about people rather than about a film;
# leaving them out changes nothing about the task.
EXCLUDED = frozenset({"fucked", "retarded", "sexy", "autistic", "disabled", "leftist", "rightist", "criminal",
                      "illegal", "masculine", "cardiac", "military", "black", "pink", "green", "naughty"})
# Neutral content words are drawn from the most frequent English words of wordfreq ...
VOCABULARY_SIZE = 50000
# ... leaving out words the lexicons rate neutral but a reader would not take as neutral in a
# sentence about anything (identity, body, sex, violence, illness, religion, praise or blame), and
# names and adverbs the tagger files as nouns. The list is about what reads badly in a generated
# sentence, not about the task.
EXCLUDED_CONTENT = frozenset({
    "male", "female", "gay", "lesbian", "jewish", "muslim", "christian", "catholic", "islamic", "black", "white",
    "asian", "african", "hispanic", "latino", "arab", "religious", "racial", "ethnic", "sexual", "teen", "teenage",
    "nude", "naked", "blonde", "bodily", "facial", "transgender", "pregnant", "disabled", "elderly", "obese",
    "immigrant", "slave", "sex", "penis", "vagina", "breast", "breasts", "porn", "nipple", "thong", "bra",
    "prostitute", "corpse", "funeral", "cancer", "tumor", "drug", "drugs", "gun", "guns", "bomb", "weapon",
    "prison", "jail", "rape", "murder", "terrorist", "nazi", "abortion", "suicide", "virgin", "pious", "crooked",
    "condom", "homosexuality", "sexuality", "fascism", "racism", "segregation", "slavery", "genocide", "disease",
    "virus", "fever", "infection", "resurrection", "pastor", "priest", "church", "retaliation", "orientation",
    "diversity", "majesty", "welfare", "dwarf", "colon", "cavity", "throat", "skin", "hair",
    "archbishop", "bombing", "explosion", "bandit", "parasite", "cemetery", "custody", "unrest", "wrath", "religion",
    "homeland", "sultan", "lord", "mummy", "french", "moral", "flaw", "victory", "concern", "blood", "vice", "stain",
    "wonder", "submission", "prayer", "china",
    # names, abbreviations and adverbs the tagger files as common nouns
    "john", "william", "bobby", "bush", "briefly", "indoors", "brad", "charlotte", "eva", "lima", "nothin", "none",
    "yesterday", "min", "bio", "demo", "guinea", "behalf",
    "anybody", "anyone", "someone", "somebody", "everybody", "everyone", "nobody",
})
# Candidates of equal frequency are taken in the order of a hash of the word (wordfreq lists them
# alphabetically within a frequency bin, which would favour words starting with "a"); a hash, not a
# shuffle, so that leaving one word out changes no other choice.

COPULAS = ("was", "is", "felt", "seemed", "looked")
OPENERS = ("", "", "", "all in all ,", "in the end ,", "after an hour ,", "on a quiet sunday evening ,",
           "as i see it ,", "from start to finish ,", "in short ,", "by the time it ended ,",
           "according to my sister ,", "this weekend ,")
CLOSERS = ("", "", "", "overall", "this time", "in my view", "on television", "at the cinema")
JOINERS = ("and", ", and", "; also ,", ", while", ", plus")
# A clause of content words without any adjective: ``{}`` is a noun of the neutral vocabulary.
NEUTRAL_FRAMES = ("it reminded me of the {}", "we talked about the {} afterwards", "it takes place by the {}",
                  "the {} comes back at the end", "my {} saw it twice", "it was shot next to the {}")
NEUTRAL_CLAUSE_RATE = 1.0   # share of sentences with a neutral clause (every one: more content words)


def _package_file(module: str, *parts: str) -> Path:
    """A data file of an installed package, found without importing the package (importing
    textblob imports nltk, which takes seconds)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"sentiment_rationales needs the package {module} for its lexicon "
                        f"(pip install -c constraints.txt vaderSentiment textblob)")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.is_file():
        raise DataError(f"sentiment_rationales: the lexicon file {path} is missing from the installed {module}")
    return path


@functools.lru_cache(maxsize=1)
def vader_lexicon() -> dict[str, float]:
    """VADER's word -> mean valence (-4..4), from the vader_lexicon.txt of vaderSentiment."""
    out = {}
    for line in _package_file("vaderSentiment", "vader_lexicon.txt").read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            out[parts[0]] = float(parts[1])
    return out


@functools.lru_cache(maxsize=1)
def textblob_adjectives() -> dict[str, list[float]]:
    """textblob's adjective -> the polarity (-1..1) of each of its senses (en-sentiment.xml)."""
    out: dict[str, list[float]] = {}
    root = ET.parse(_package_file("textblob", "en", "en-sentiment.xml")).getroot()
    for word in root.iter("word"):
        if word.get("pos") == "JJ" and word.get("form"):
            out.setdefault(word.get("form"), []).append(float(word.get("polarity", 0.0)))
    return out


@functools.lru_cache(maxsize=1)
def textblob_polarities() -> dict[str, list[float]]:
    """textblob's word -> the polarity of each of its senses, every part of speech."""
    out: dict[str, list[float]] = {}
    for word in ET.parse(_package_file("textblob", "en", "en-sentiment.xml")).getroot().iter("word"):
        if word.get("form"):
            out.setdefault(word.get("form"), []).append(float(word.get("polarity", 0.0)))
    return out


@functools.lru_cache(maxsize=1)
def parts_of_speech() -> dict[str, str]:
    """A lower-case word's most frequent part-of-speech tag (Penn tags), from the Brill lexicon
    that ships with textblob (en-lexicon.txt); words seen only capitalised (names) are absent."""
    out = {}
    for line in _package_file("textblob", "en", "en-lexicon.txt").read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith(";") and parts[0].islower():
            out[parts[0]] = parts[1]
    return out


@dataclass(frozen=True)
class Lexicon:
    """Sentiment words of each polarity, weak-valence distractors, and every word's valence."""

    positive: tuple[str, ...]
    negative: tuple[str, ...]
    distractors: tuple[str, ...]
    valence: dict[str, float]


def _single_tokens(words: Sequence[str], tokenizer: str) -> list[str]:
    """The words that are one WordPiece token of ``tokenizer`` (in its vocabulary as they are)."""
    vocab = _tokenizer(tokenizer).get_vocab()
    return [w for w in words if w in vocab]


@functools.lru_cache(maxsize=4)
def sentiment_lexicon(tokenizer: str = "minilm") -> Lexicon:
    """The words the corpus is built from, where the two lexicons agree, each one token of
    ``tokenizer`` (so a word's rarity is its token's rarity).

    Sentiment words: adjectives whose VADER valence is at least ``STRONG_VALENCE`` in magnitude
    and every textblob sense of which has the same sign (mean polarity at least 0.3), as many of
    each polarity (the larger side cut to the smaller's size, keeping its spread of English
    frequencies, so every sentiment word occurs about equally often). Distractors:
    adjectives of weak valence, VADER's (0 < |v| <= ``WEAK_VALENCE``, textblob |polarity| <= 0.3)
    or, for words VADER lacks, textblob's (0.05 <= |polarity| <= 0.2, valence 4 x polarity).
    """
    vader, blob = vader_lexicon(), textblob_adjectives()
    word = re.compile(r"[a-z]{3,}")
    valence: dict[str, float] = {}
    positive, negative, distractors = [], [], []
    for form, senses in sorted(blob.items()):
        if not word.fullmatch(form) or form in EXCLUDED or form in NEGATORS:
            continue
        mean = sum(senses) / len(senses)
        v = vader.get(form)
        if v is not None and abs(v) >= STRONG_VALENCE and abs(mean) >= 0.3 and all(s * v >= 0 for s in senses):
            (positive if v > 0 else negative).append(form)
            valence[form] = v
        elif v is not None and 0 < abs(v) <= WEAK_VALENCE and abs(mean) <= 0.3:
            distractors.append(form)
            valence[form] = v
        elif v is None and 0.05 <= abs(mean) <= 0.2:
            distractors.append(form)
            valence[form] = 4.0 * mean
    positive, negative, distractors = (_single_tokens(ws, tokenizer) for ws in (positive, negative, distractors))
    # as many words of each polarity, so that every sentiment word occurs about as often (a
    # polarity's words fill half the sentiment slots); the larger side keeps its spread of frequencies
    n = min(len(positive), len(negative))
    positive, negative = (sorted(matched_in_frequency(ws, ws, n)) for ws in (positive, negative))
    keep = set(positive) | set(negative) | set(distractors)
    return Lexicon(tuple(positive), tuple(negative), tuple(distractors), {w: v for w, v in valence.items() if w in keep})


def zipf(word: str) -> float:
    """The word's frequency in English on the zipf scale (log10 per billion words), from wordfreq."""
    from wordfreq import zipf_frequency

    return float(zipf_frequency(word, "en"))


def matched_in_frequency(candidates: Sequence[str], reference: Sequence[str], size: int) -> tuple[str, ...]:
    """``size`` of ``candidates`` whose zipf frequencies follow those of ``reference``: for each
    quantile (i + 0.5) / size of the reference's frequencies, the unused candidate nearest to it
    (the earlier candidate on a tie). Deterministic."""
    if size > len(candidates):
        raise DataError(f"sentiment_rationales: {size} words wanted, {len(candidates)} candidates")
    target = np.quantile(np.array([zipf(w) for w in reference]), (np.arange(size) + 0.5) / size)
    freq = np.array([zipf(w) for w in candidates])
    free = np.ones(len(candidates), dtype=bool)
    chosen = []
    for t in target:
        distance = np.where(free, np.abs(freq - t), np.inf)
        j = int(np.argmin(distance))
        free[j] = False
        chosen.append(candidates[j])
    return tuple(chosen)


@dataclass(frozen=True)
class Vocabulary:
    """Every open slot's words: sentiment words and distractors (from the lexicons), and the
    neutral nouns and adjectives, the latter three matched in English frequency to the
    sentiment words and sized so that each of their words occurs in the corpus as often as a
    sentiment word does."""

    lexicon: Lexicon
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]
    distractors: tuple[str, ...]

    @property
    def content(self) -> frozenset[str]:
        """The neutral content words (nouns and adjectives)."""
        return frozenset(self.nouns) | frozenset(self.adjectives)


def expected_slots(max_sentiment_words: int, max_neutral_adjectives: int, distractor_rate: float) -> dict[str, float]:
    """How many words of each kind a sentence holds on average (:func:`generate_sentence`)."""
    sentiment = (1 + max_sentiment_words) / 2
    adjectives = (1 + max_neutral_adjectives) / 2
    return {"sentiment": sentiment, "adjectives": adjectives,
            "nouns": sentiment + adjectives + NEUTRAL_CLAUSE_RATE,
            "distractors": MAX_DISTRACTORS * distractor_rate}


@functools.lru_cache(maxsize=8)
def corpus_vocabulary(tokenizer: str = "minilm", max_sentiment_words: int = 3, max_neutral_adjectives: int = 2,
                      distractor_rate: float = 0.5) -> Vocabulary:
    """The vocabulary of :func:`generate_corpus` (see :class:`Vocabulary`).

    Neutral words: among wordfreq's ``VOCABULARY_SIZE`` most frequent English words, those of at
    least three letters that are one token of ``tokenizer``, are neither template words, negators
    nor in ``EXCLUDED_CONTENT``, have no VADER valence and no textblob sense of non-zero polarity,
    and whose most frequent tag in textblob's Brill lexicon is NN (nouns) or JJ (adjectives; an
    adjective must also be rated, neutral, by textblob). Each kind's share of the corpus sets its
    size: a kind holding k words per sentence, against s sentiment words per sentence drawn from
    S words, gets k / s x S words."""
    from wordfreq import top_n_list

    lex = sentiment_lexicon(tokenizer)
    vader, blob, tags = vader_lexicon(), textblob_polarities(), parts_of_speech()
    taken = set(lex.positive) | set(lex.negative) | set(lex.distractors) | neutral_words() | set(NEGATORS)
    word = re.compile(r"[a-z]{3,}")
    candidates = [w for w in _single_tokens(top_n_list("en", VOCABULARY_SIZE), tokenizer)
                  if word.fullmatch(w) and w not in taken and w not in EXCLUDED_CONTENT and w not in EXCLUDED
                  and w not in vader and not any(blob.get(w, [0.0]))]
    candidates = sorted(candidates, key=lambda w: hashlib.sha256(w.encode()).hexdigest())
    nouns = [w for w in candidates if tags.get(w) == "NN"]
    adjectives = [w for w in candidates if tags.get(w) == "JJ" and w in blob]
    reference = lex.positive + lex.negative
    slots = expected_slots(max_sentiment_words, max_neutral_adjectives, distractor_rate)

    def size(kind: str) -> int:
        return max(1, round(slots[kind] / slots["sentiment"] * len(reference)))

    return Vocabulary(lex, matched_in_frequency(nouns, reference, size("nouns")),
                      matched_in_frequency(adjectives, reference, size("adjectives")),
                      matched_in_frequency(list(lex.distractors), reference, size("distractors"))
                      if slots["distractors"] else ())


def neutral_words() -> set[str]:
    """Every word the templates use besides the open slots (nouns, adjectives, distractors,
    negators): copulas, openers, joiners, closers, the neutral frames, "the" and "."."""
    phrases = COPULAS + OPENERS + CLOSERS + JOINERS + tuple(f.format("") for f in NEUTRAL_FRAMES) + ("the", ".")
    return {w for phrase in phrases for w in phrase.split()}


# -- the generator ------------------------------------------------------------------------------

ROLES = ("filler", "content", "sentiment", "negator", "distractor")


@dataclass(frozen=True)
class Sentence:
    """One generated sentence: its words, each word's role, and its label. A negator is a
    ``negator`` in front of a sentiment word (part of the rationale) and ``filler`` in front of a
    neutral adjective; nouns and neutral adjectives are ``content``."""

    words: tuple[str, ...]
    roles: tuple[str, ...]
    label: int

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def rationale(self) -> tuple[bool, ...]:
        """Word-level rationale: the sentiment words and their negators."""
        return tuple(r in ("sentiment", "negator") for r in self.roles)


def _choice(rng: np.random.Generator, words: Sequence[str]) -> str:
    return str(words[int(rng.integers(len(words)))])


def _clause(rng: np.random.Generator, vocab: Vocabulary, sentiment: int, negate: bool) -> list[tuple[str, str]]:
    """``the <noun> <copula> [not|never] <adjective>``. ``sentiment`` 1 or -1: the adjective is a
    sentiment word of that polarity once negation is applied (its own polarity is ``-sentiment``
    when negated); 0: a neutral adjective."""
    out = [("the", "filler"), (_choice(rng, vocab.nouns), "content"), (_choice(rng, COPULAS), "filler")]
    if negate:
        out.append((_choice(rng, NEGATORS), "negator" if sentiment else "filler"))
    if sentiment:
        pool = vocab.lexicon.positive if (sentiment > 0) != negate else vocab.lexicon.negative
        out.append((_choice(rng, pool), "sentiment"))
    else:
        out.append((_choice(rng, vocab.adjectives), "content"))
    return out


def generate_sentence(rng: np.random.Generator, label: int, vocab: Vocabulary, negation_rate: float = 0.3,
                      max_sentiment_words: int = 3, distractor_rate: float = 0.5,
                      max_neutral_adjectives: int = 2) -> Sentence:
    """A sentence of label ``label`` (0 negative, 1 positive): 1..``max_sentiment_words`` clauses
    each carrying one sentiment word of the label's polarity (or of the other polarity, negated),
    1..``max_neutral_adjectives`` clauses carrying a neutral adjective (negated as often) and a
    neutral clause around a noun (in a share ``NEUTRAL_CLAUSE_RATE`` of sentences), in a random
    order; up to ``MAX_DISTRACTORS`` distractor adjectives in front of nouns; template openers,
    joiners and closers."""
    polarity = 1 if label == 1 else -1
    kinds = [polarity] * int(rng.integers(1, max_sentiment_words + 1)) \
        + [0] * int(rng.integers(1, max_neutral_adjectives + 1))
    clauses = [_clause(rng, vocab, kind, bool(rng.random() < negation_rate)) for kind in kinds]
    if rng.random() < NEUTRAL_CLAUSE_RATE:
        frame = _choice(rng, NEUTRAL_FRAMES).split()
        clauses.append([(_choice(rng, vocab.nouns), "content") if w == "{}" else (w, "filler") for w in frame])
    clauses = [clauses[i] for i in rng.permutation(len(clauses))]
    # distractors: an adjective in front of the noun of a clause that starts with "the"
    n_dist = int(rng.binomial(MAX_DISTRACTORS, distractor_rate))
    targets = [i for i, c in enumerate(clauses) if c[0][0] == "the"]
    for i in rng.choice(targets, min(n_dist, len(targets)), replace=False) if targets else []:
        clauses[int(i)].insert(1, (_choice(rng, vocab.distractors), "distractor"))
    words: list[tuple[str, str]] = [(w, "filler") for w in _choice(rng, OPENERS).split()]
    for k, clause in enumerate(clauses):
        if k:
            words += [(w, "filler") for w in _choice(rng, JOINERS).split()]
        words += clause
    words += [(w, "filler") for w in _choice(rng, CLOSERS).split()] + [(".", "filler")]
    return Sentence(tuple(w for w, _ in words), tuple(r for _, r in words), label)


def rationale_label(words: Sequence[str], roles: Sequence[str], lex: Lexicon) -> tuple[int, float]:
    """(label, summed valence) read back from a sentence: the valence of each rationale word,
    flipped when the word before it is a negator. Distractors are left out of the sum."""
    total = 0.0
    for i, (w, r) in enumerate(zip(words, roles)):
        if r == "sentiment":
            total += -lex.valence[w] if i and words[i - 1] in NEGATORS else lex.valence[w]
    return int(total > 0), total


def generate_corpus(n: int, seed: int | Sequence[int], negation_rate: float = 0.3, max_sentiment_words: int = 3,
                    distractor_rate: float = 0.5, max_neutral_adjectives: int = 2, exclude: Sequence[str] = (),
                    tokenizer: str = "minilm") -> list[Sentence]:
    """``n`` distinct sentences, half of each label in a seeded order, none of whose texts is in
    ``exclude``; deterministic from ``seed``."""
    vocab = corpus_vocabulary(tokenizer, max_sentiment_words, max_neutral_adjectives, distractor_rate)
    rng = np.random.default_rng(list(seed) if isinstance(seed, (list, tuple)) else seed)
    labels = rng.permutation(np.arange(n) % 2)
    seen = set(exclude)
    out = []
    for label in labels:
        for _ in range(1000):
            s = generate_sentence(rng, int(label), vocab, negation_rate, max_sentiment_words, distractor_rate,
                                  max_neutral_adjectives)
            if s.text not in seen:
                break
        else:  # pragma: no cover - the template space holds billions of sentences
            raise DataError(f"sentiment_rationales: cannot generate {n} distinct sentences; lower n_train/n_test")
        seen.add(s.text)
        out.append(s)
    return out


# -- tokenisation ---------------------------------------------------------------------------------

def _tokenizer(name: str) -> Any:
    from experiments.data.tokenizer import load_tokenizer

    return load_tokenizer(name)


def encode_words(words: Sequence[Sequence[str]], word_masks: Sequence[Sequence[bool]] | None, tokenizer: str,
                 max_length: int, truncate: bool, name: str) -> tuple[list[list[int]], list[list[int]] | None, int]:
    """WordPiece ids with ``[CLS]``/``[SEP]`` per sentence, and per token the rationale flag of the
    word it came from (0 on special tokens). A sequence longer than ``max_length`` is cut to its
    first ``max_length - 1`` tokens and ``[SEP]`` (``truncate``) or refused. Returns (ids, masks,
    number of sequences cut)."""
    tok = _tokenizer(tokenizer)
    enc = tok([list(w) for w in words], is_split_into_words=True, add_special_tokens=True)
    ids = [list(map(int, x)) for x in enc["input_ids"]]
    masks = None
    if word_masks is not None:
        masks = [[0 if j is None else int(bool(word_masks[i][j])) for j in enc.word_ids(i)] for i in range(len(ids))]
    long = [i for i, r in enumerate(ids) if len(r) > max_length]
    if long and not truncate:
        raise DataError(f"{name}: sentence {long[0]} has {len(ids[long[0]])} tokens, more than "
                        f"max_length={max_length}; raise max_length")
    for i in long:
        ids[i] = ids[i][: max_length - 1] + [int(tok.sep_token_id)]
        if masks is not None:
            masks[i] = masks[i][: max_length - 1] + [0]
    return ids, masks, len(long)


def pad(rows: Sequence[Sequence[int]], length: int, value: int) -> torch.Tensor:
    """Right-pad int rows to ``length``: (N, length) int64."""
    out = torch.full((len(rows), length), int(value), dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
    return out


def _check_max_length(name: str, max_length: Any) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 8 <= max_length <= 512:
        raise DataError(f"max_length={max_length!r} is invalid for dataset {name}; choose an integer in 8..512")


def sentiment_rationales(n_train: int = 4000, n_test: int = 500, max_length: int = 64, negation_rate: float = 0.3,
                         max_sentiment_words: int = 3, distractor_rate: float = 0.5, max_neutral_adjectives: int = 2,
                         tokenizer: str = "minilm", seed: int = 0) -> Dataset:
    """The generated sentiment corpus (module docstring): balanced binary labels, a test split
    with no sentence of the training split, and the rationale of every test token in
    ``ground_truth`` (1 on the WordPiece tokens of the sentiment words and their negators)."""
    name = "sentiment_rationales"
    for arg, n in (("n_train", n_train), ("n_test", n_test)):
        check_size(name, arg, n, 10**6)
    _check_max_length(name, max_length)
    if not isinstance(negation_rate, (int, float)) or isinstance(negation_rate, bool) or not 0 <= negation_rate <= 1:
        raise DataError(f"negation_rate={negation_rate!r} is invalid for dataset {name}; choose a number in [0, 1]")
    if not isinstance(distractor_rate, (int, float)) or isinstance(distractor_rate, bool) or not 0 <= distractor_rate <= 1:
        raise DataError(f"distractor_rate={distractor_rate!r} is invalid for dataset {name}; choose a number in [0, 1]")
    if isinstance(max_sentiment_words, bool) or max_sentiment_words not in (1, 2, 3):
        raise DataError(f"max_sentiment_words={max_sentiment_words!r} is invalid for dataset {name}; choose 1, 2 or 3")
    if isinstance(max_neutral_adjectives, bool) or max_neutral_adjectives not in (1, 2, 3):
        raise DataError(f"max_neutral_adjectives={max_neutral_adjectives!r} is invalid for dataset {name}; "
                        f"choose 1, 2 or 3")
    from experiments.data.tokenizer import tokenizer_spec

    spec = tokenizer_spec(tokenizer)
    # The test split comes from its own seeded stream, so it does not change with n_train (a model
    # fine-tuned on fewer sentences is scored on the same test sentences); training sentences
    # repeat none of its texts.
    settings = (negation_rate, max_sentiment_words, distractor_rate, max_neutral_adjectives)
    test = generate_corpus(n_test, [seed, 1], *settings, tokenizer=tokenizer)
    sentences = generate_corpus(n_train, [seed, 0], *settings, exclude=[s.text for s in test],
                                tokenizer=tokenizer) + test
    ids, masks, _ = encode_words([s.words for s in sentences], [s.rationale for s in sentences], tokenizer,
                                 max_length, truncate=False, name=name)
    length = max(len(r) for r in ids)
    x = pad(ids, length, spec["pad_token_id"])
    gt = pad(masks[n_train:], length, 0).float()
    y = np.array([s.label for s in sentences], dtype=np.int64)
    vocab = corpus_vocabulary(tokenizer, max_sentiment_words, max_neutral_adjectives, distractor_rate)
    lex = vocab.lexicon
    return Dataset(name, "text", x[:n_train], as_labels(y[:n_train]), x[n_train:], as_labels(y[n_train:]), 2,
                   class_names=list(SENTIMENT_CLASSES), ground_truth=gt,
                   texts_test=[s.text for s in sentences[n_train:]],
                   info={"tokenizer": spec, "source": "generated from the vaderSentiment and textblob lexicons and "
                                                      "wordfreq's English vocabulary",
                         "lexicon": {"positive": len(lex.positive), "negative": len(lex.negative),
                                     "distractors": len(vocab.distractors), "nouns": len(vocab.nouns),
                                     "neutral_adjectives": len(vocab.adjectives)},
                         "label_rule": "sign of the summed VADER valence of the sentiment words, each flipped "
                                       "when preceded by a negator (not, never)",
                         "rationale": "the WordPiece tokens of the sentiment words and of their negators",
                         "length": length, "negation_rate": negation_rate, "distractor_rate": distractor_rate,
                         "max_neutral_adjectives": max_neutral_adjectives})
