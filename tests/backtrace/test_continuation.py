"""Explaining a continuation (``task="generation"`` with a ``(batch, T)`` target) on a tiny random
Llama: the per-token rows of ``return_all`` against separate per-token calls, the summed map
against the sum of the rows (default mode is linear in the relevance), the seed values by hand,
padding, and the errors for a continuation that is not in the inputs."""
from __future__ import annotations

import pytest
import torch

from backtrace import Backtrace, explain

transformers = pytest.importorskip("transformers")

VOCAB = 40


def llama() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=32, max_position_embeddings=32,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def model():
    return llama()


def batch() -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Rows of 9, 7 and 5 real tokens, right-padded; the continuation is each row's last 3."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, VOCAB, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 5:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    lengths = mask.sum(1)
    continuation = torch.stack([ids[b, lengths[b] - 3:lengths[b]] for b in range(3)])
    return {"input_ids": ids, "attention_mask": mask}, continuation, lengths


def _maps(r):
    return r if isinstance(r, tuple) else (r,)


@pytest.mark.parametrize("mode", ["default", "contrastive"])
def test_rows_per_token_are_the_separate_calls(model, mode):
    inputs, continuation, lengths = batch()
    rows = explain(model, inputs, task="generation", target=continuation, mode=mode, return_all=True)
    assert set(rows) == {"input_ids", "attention_mask"}
    for t in range(3):
        # token t of the continuation is read at the position before it
        alone = explain(model, inputs, task="generation", target=continuation[:, t], position=lengths - 4 + t,
                        score="log_prob", mode=mode)
        for r, a in zip(_maps(rows["input_ids"]), _maps(alone)):
            assert r.shape == (3, 3, 9)
            assert ((r[:, t] - a).abs().max() / a.abs().max()) < 1e-5
    for r in _maps(rows["input_ids"]):
        for b, n in enumerate(lengths.tolist()[1:], start=1):
            assert r[b, :, n:].abs().max() == 0                       # pads: none
        # token t's row: nothing on the tokens after the position that predicts it (causal)
        assert r[0, 0, 6:].abs().max() == 0 and r[0, 0, :6].abs().sum() > 0
    for m in _maps(rows["attention_mask"]):
        assert m.shape == (3, 3, 9) and m.abs().max() == 0


def test_the_summed_map_is_the_sum_of_the_rows_in_default_mode(model):
    inputs, continuation, _ = batch()
    total = explain(model, inputs, task="generation", target=continuation)
    rows = explain(model, inputs, task="generation", target=continuation, return_all=True)["input_ids"]
    assert total.shape == (3, 9)
    assert ((rows.sum(1) - total).abs().max() / total.abs().max()) < 1e-5
    # a list of token lists per sample is the same continuation
    as_lists = explain(model, inputs, task="generation", target=continuation.tolist())
    torch.testing.assert_close(as_lists, total)


def test_a_padded_row_gives_what_it_gives_alone(model):
    inputs, continuation, lengths = batch()
    both = explain(model, inputs, task="generation", target=continuation)
    n = int(lengths[2])
    alone = explain(model, {k: v[2:, :n] for k, v in inputs.items()}, task="generation", target=continuation[2:])
    assert ((both[2, :n] - alone[0]).abs().max() / alone.abs().max()) < 1e-5


def test_the_seed_is_each_tokens_log_probability_at_its_position(model):
    inputs, continuation, lengths = batch()
    bt = Backtrace(model)
    outs = bt.predict(inputs)
    logits = outs[bt.graph.output]
    pos = lengths[:, None] - 4 + torch.arange(3)[None, :]
    seed = bt.eval(outs, task="generation", target=continuation, position=pos, multiplier=1.0)[bt.graph.output]
    logp = torch.log_softmax(logits, dim=-1)
    for b in range(3):
        expected = torch.zeros_like(logits[b])
        for t in range(3):
            expected[pos[b, t], continuation[b, t]] = logp[b, pos[b, t], continuation[b, t]]
        torch.testing.assert_close(seed[b], expected)
    logit_seed = bt.eval(outs, task="generation", target=continuation, position=pos, multiplier=1.0,
                         score="logit")[bt.graph.output]
    b, t = 1, 2
    assert logit_seed[b, pos[b, t], continuation[b, t]] == logits[b, pos[b, t], continuation[b, t]]
    assert logit_seed[b].count_nonzero() == 3


def test_a_continuation_must_be_in_the_inputs(model):
    inputs, continuation, _ = batch()
    wrong = continuation.clone()
    wrong[1, 2] = (wrong[1, 2] + 1) % VOCAB
    with pytest.raises(ValueError, match=r"^continuation token 2 of sample 1 is \d+ but input_ids position 6 holds "
                                         r"\d+; the inputs must hold the prompt followed by the continuation"):
        explain(model, inputs, task="generation", target=wrong)
    with pytest.raises(ValueError, match=r"^the continuation has 6 tokens but sample 2 has 5 real tokens"):
        explain(model, inputs, task="generation", target=torch.ones(3, 6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^a continuation target needs the same number of tokens per sample; "
                                         r"got lengths \[1, 2\]"):
        explain(model, inputs, task="generation", target=[[1], [2, 3], [4]])
    with pytest.raises(ValueError, match=r"^unknown score 'prob'; choose one of: logit, log_prob$"):
        explain(model, inputs, task="generation", target=continuation, score="prob")
    with pytest.raises(ValueError, match=r"^score='log_prob' applies to task='generation' only$"):
        explain(model, inputs, score="log_prob")
