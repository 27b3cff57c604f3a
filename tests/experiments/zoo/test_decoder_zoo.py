"""Decoders as next-token classifiers: the wrapper reads the causal LM at the last real token
(padding changes nothing), the engine explains it as it explains the LM's own next-token logit,
every method explains its target token, and SmolLM2 loads from the model cache (slow)."""
from __future__ import annotations

import pytest
import torch

from backtrace import explain
from experiments.data.decoder_tasks import kv_retrieval
from experiments.zoo.decoders import NextTokenClassifier, TinyDecoder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return kv_retrieval(n_train=40, n_test=12, seed=1)


@pytest.fixture(scope="module")
def decoder(data):
    torch.manual_seed(0)
    return TinyDecoder(**data.model_kwargs(), hidden=16, layers=2, heads=4, kv_heads=2, intermediate=32).eval()


def test_the_wrapper_reads_the_last_real_token_and_padding_changes_nothing(decoder, data):
    x = data.x_test[:4]
    lengths = x.ne(0).sum(1)
    with torch.no_grad():
        out = decoder(x)
        full = decoder.lm(input_ids=x, attention_mask=x.ne(0).long()).logits
        for i, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(out[i], full[i, n - 1])
            alone = decoder.lm(input_ids=x[i:i + 1, :n]).logits[0, -1]
            torch.testing.assert_close(out[i], alone, rtol=1e-5, atol=1e-5)
    assert out.shape == (4, data.n_classes)
    assert decoder.last_position(torch.tensor([[5, 6, 0, 7, 0, 0]])).tolist() == [3]


def test_vocabulary_and_sizes_are_checked(data):
    from experiments.errors import ConfigError

    kwargs = data.model_kwargs()
    with pytest.raises(ConfigError, match=r"its classes are the vocabulary \(36\), but the dataset has 2 classes"):
        TinyDecoder(**{**kwargs, "num_classes": 2})
    with pytest.raises(ConfigError, match=r"TinyDecoder needs hidden \(30\) divisible by heads \(4\)"):
        TinyDecoder(**kwargs, hidden=30)


@pytest.mark.parametrize("mode", ["default", "contrastive"])
def test_the_engine_explains_the_wrapper_as_the_lms_next_token(decoder, data, mode):
    x, y = data.x_test[:3], data.y_test[:3]
    mask = x.ne(0).long()
    probs = torch.nn.Sequential(decoder, torch.nn.Softmax(dim=-1)).eval()
    wrapped = explain(probs, x, target=y, mode=mode)

    class LMProbabilities(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask):
            return torch.softmax(self.lm(input_ids=input_ids, attention_mask=attention_mask).logits, dim=-1)

    direct = explain(LMProbabilities(decoder.lm).eval(), {"input_ids": x, "attention_mask": mask}, target=y,
                     mode=mode, task="generation")
    for a, b in zip(wrapped if isinstance(wrapped, tuple) else (wrapped,), direct if isinstance(direct, tuple) else (direct,)):
        assert a.shape == x.shape and a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        assert a.masked_select(mask == 0).abs().max() == 0


def test_attentions_are_eager_and_causal(decoder, data):
    before = decoder.lm.config._attn_implementation
    maps = decoder.attentions(data.x_test[:2])
    assert decoder.lm.config._attn_implementation == before                 # restored after the call
    assert len(maps) == 2 and maps[0].shape == (2, 4, data.x_test.shape[1], data.x_test.shape[1])
    assert float(torch.triu(maps[0], diagonal=1).abs().max()) == 0.0
    torch.testing.assert_close(maps[0].sum(-1)[:, :, :5], torch.ones(2, 4, 5))
    assert decoder.top_layers() == ["lm.lm_head", "lm.model.layers.1"]


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("gguf")
    from experiments.data.smollm2_files import smollm2_spec
    from experiments.zoo.decoders import SmolLM2

    spec = smollm2_spec()
    return SmolLM2(spec["vocab_size"], spec["vocab_size"]).eval(), spec


@pytest.mark.slow
def test_smollm2_from_the_cache(smollm2):
    from experiments.data.smollm2_files import smollm2_tokenizer, tokenizer_dir
    from experiments.zoo.decoders import weights_path
    from experiments.zoo.training import _load

    model, spec = smollm2
    assert isinstance(model, NextTokenClassifier) and model.vocab_size == spec["vocab_size"] == 49152
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.lm.lm_head.weight is model.embedding_layer().weight              # tied, as in the GGUF
    meta, state = _load(weights_path())                                            # checksummed
    assert "quantization_config" not in meta["config"] and set(state) >= {"model.embed_tokens.weight"}
    assert (tokenizer_dir() / "tokenizer.json").is_file()
    tok = smollm2_tokenizer()
    ids = torch.tensor([tok("The capital of France is")["input_ids"] + [spec["pad_token_id"]] * 3])
    with torch.no_grad():
        assert tok.decode([int(model(ids).argmax())]) == " Paris"
    assert model.top_layers() == ["lm.model.layers.29"]                             # the head is tied


@pytest.mark.slow
def test_copy_prompts_keep_what_smollm2_completes(smollm2):
    from experiments.data.decoder_tasks import copy_prompt_candidates
    from experiments.data.smollm2_files import smollm2_tokenizer
    from experiments.zoo.decoders import copy_prompts, correct_top1

    model, spec = smollm2
    ds = copy_prompts(n_prompts=24, seed=5)
    info = ds.info
    assert info["generated"] == 24 and info["kept"] == info["correct"] == len(ds.x_test) > 0
    assert sum(k for k, _ in info["by_template"].values()) == info["kept"]
    assert sum(n for _, n in info["by_template"].values()) == 24
    assert bool(correct_top1(model, ds.x_test, ds.y_test).all())
    everything = copy_prompt_candidates(24, seed=5)
    assert int(correct_top1(model, everything.x_test, everything.y_test).sum()) == info["correct"]
    tok = smollm2_tokenizer()
    for row, y, gt, text in zip(ds.x_test, ds.y_test, ds.ground_truth, ds.texts_test):
        assert int(gt.sum()) == 1 and int(row[gt.bool()]) == int(y)
        assert tok.decode(row[row.ne(spec["pad_token_id"])].tolist()) == text
    again = copy_prompts(n_prompts=24, seed=5, n_test=1)                 # read back from the cache
    assert torch.equal(again.x_test[0], ds.x_test[0, :again.x_test.shape[1]])


DECODER_METHODS = ["backtrace", "backtrace_contrastive", "attnlrp", "saliency", "gradxinput", "ig",
                   "attention_rollout", "attention_last", "random"]


@pytest.mark.parametrize("name", DECODER_METHODS)
def test_every_method_explains_the_target_token_of_the_wrapper(decoder, data, name):
    """Each method built from its config explains class = the answer's token id; attributions are
    per token, zero on the special tokens and padding, and the same when the rows are padded
    further (the deterministic methods)."""
    from hydra.utils import instantiate

    from baselines import ExplainContext
    from experiments.run.config import method_config

    cfg = method_config(name, "softmax", **({"n_steps": 8} if name == "ig" else {}))
    ctx = ExplainContext(modality="text", model_kind="transformer", n_classes=data.n_classes, seed=0)
    method = instantiate(cfg, model=decoder, context=ctx)
    x, y = data.x_test[:3], data.y_test[:3]
    width = int(x.ne(0).sum(1).max())
    a = method(x[:, :width], y).values
    assert a.shape == (3, width) and bool(torch.isfinite(a).all())
    special = ~data.token_feature_mask(x[:, :width])
    assert a.masked_select(special).abs().max() == 0 and a.abs().sum() > 0
    if method.deterministic:
        longer = method(torch.nn.functional.pad(x[:, :width], (0, 4), value=0), y).values
        torch.testing.assert_close(longer[:, :width], a, rtol=1e-4, atol=1e-5)
        assert longer[:, width:].abs().max() == 0


def test_attention_last_reads_the_last_real_tokens_row(decoder, data):
    from baselines import METHODS, ExplainContext

    x = data.x_test[:2]
    method = METHODS["attention_last"](decoder, ExplainContext(modality="text", model_kind="transformer",
                                                               n_classes=data.n_classes))
    values = method(x, data.y_test[:2]).values
    last = decoder.attentions(x)[-1].mean(1)                   # causal: no mass on later tokens or pads
    for i, n in enumerate(x.ne(0).sum(1).tolist()):
        expected = last[i, n - 1] * data.token_feature_mask(x[i:i + 1])[0]
        torch.testing.assert_close(values[i], expected)


def test_attnlrp_on_the_wrapper_is_the_lms_own_next_token_relevance(decoder, data):
    """AttnLRP's rules reach the Llama inside the wrapper: its raw map (before the Explainer zeroes
    the special tokens) is the LM's next-token relevance at the last real token, exactly 0 on the
    pads, and the same when the rows are padded further."""
    from baselines import ExplainContext
    from baselines.attnlrp import next_token_relevance
    from baselines.lrp_methods import AttnLRPMethod

    x, y = data.x_test[:4], data.y_test[:4]
    method = AttnLRPMethod(decoder, ExplainContext("text", "transformer", data.n_classes), output="logits")
    raw = method.explain(x, y).detach()
    direct, logit = next_token_relevance(decoder.lm, x, x.ne(0).long(), target=y)
    torch.testing.assert_close(raw, direct, rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        torch.testing.assert_close(logit, decoder(x).gather(1, y[:, None])[:, 0])
    pads = x.eq(0)
    assert pads.any() and (raw[pads] == 0).all() and raw[~pads].abs().min() > 0
    longer = method.explain(torch.nn.functional.pad(x, (0, 5), value=0), y).detach()
    assert (longer[:, x.shape[1]:] == 0).all()
    torch.testing.assert_close(longer[:, :x.shape[1]], raw, rtol=1e-5, atol=1e-6)


def test_attnlrp_refuses_a_decoder_without_rules_in_one_line(data):
    """A next-token classifier around a decoder whose attention AttnLRP has no rules for here
    (Qwen2's) is refused when the method is built, naming the model."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from baselines import ExplainContext, IncompatibleMethodError
    from baselines.lrp_methods import AttnLRPMethod

    kwargs = data.model_kwargs()
    config = Qwen2Config(vocab_size=kwargs["vocab_size"], hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = NextTokenClassifier(Qwen2ForCausalLM(config), kwargs["pad_token_id"], kwargs["mask_token_id"],
                                kwargs["special_token_ids"]).eval()
    with pytest.raises(IncompatibleMethodError) as err:
        AttnLRPMethod(model, ExplainContext("text", "transformer", data.n_classes))
    assert str(err.value) == ("method 'attnlrp' cannot explain NextTokenClassifier: AttnLRP's rules here cover BERT, "
                              "Llama and GPT-2 attention, and the model has none of them")
