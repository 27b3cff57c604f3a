"""The benchmark's text classifiers (``experiments.zoo.text_models``) through the engine, as they are:
token ids in, a padding mask computed inside ``forward`` from the ids. What the model computes
from the ids alone (``ids.ne(pad)``, its casts, sums and clamps) carries no relevance; per-token
relevance is finite, exactly 0 on padding, and the same whatever the padding length and the
batch (float64). Integer inputs fed to layers are refused by name through both front ends."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from backtrace import Backtrace, UnsupportedOperation, explain
from tests.backtrace.test_rules_naive import BOUNDS, unit_default

text_models = pytest.importorskip("experiments.zoo.text_models")
tokenizer = pytest.importorskip("experiments.data.tokenizer")

DT = torch.float64
LENGTHS = (7, 5, 3)                    # real tokens per sentence, [CLS] and [SEP] included
MODES = ("default", "contrastive")


@pytest.fixture(scope="module")
def spec() -> dict:
    full = tokenizer.tokenizer_spec()
    return {k: full[k] for k in ("vocab_size", "pad_token_id", "mask_token_id", "special_token_ids")}


def token_ids(width: int, seed: int = 0) -> Tensor:
    """Three sentences of 7, 5 and 3 tokens ([CLS] ... [SEP]), right-padded with id 0 to ``width``:
    the same sentences whatever the width."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(LENGTHS), width, dtype=torch.long)
    ids[:, :7] = torch.randint(1000, 5000, (len(LENGTHS), 7), generator=g)
    for b, n in enumerate(LENGTHS):
        ids[b, 0], ids[b, n - 1], ids[b, n:] = 101, 102, 0
    return ids


def probabilities(model: nn.Module) -> nn.Module:
    return nn.Sequential(model.eval(), nn.Softmax(-1))


def maps(result) -> tuple[Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


def check_token_relevance(net: nn.Module, mode: str, **kw) -> None:
    """(N, L) per-token relevance, finite, 0 on pads and non-zero on real tokens; the same when
    padded to a longer width and when each sentence is explained alone."""
    pad = token_ids(7) == 0
    short = maps(explain(net, token_ids(7), mode=mode, target=1, dtype=DT, **kw))
    longer = maps(explain(net, token_ids(12), mode=mode, target=1, dtype=DT, **kw))
    alone = [maps(explain(net, token_ids(7)[b:b + 1], mode=mode, target=1, dtype=DT, **kw)) for b in range(3)]
    assert len(short) == (2 if mode == "contrastive" else 1)
    for k, r in enumerate(short):
        assert r.shape == (3, 7) and r.dtype == DT and bool(torch.isfinite(r).all())
        assert r[pad].abs().max() == 0 and longer[k][:, 7:].abs().max() == 0
        assert bool((r.abs().sum(1) > 0).all())
        torch.testing.assert_close(longer[k][:, :7], r, rtol=0, atol=1e-5 * float(r.abs().max()))
        torch.testing.assert_close(torch.cat([a[k] for a in alone]), r, rtol=0, atol=1e-5 * float(r.abs().max()))


# --- the LSTM classifier (torch.fx) ------------------------------------------------------------

@pytest.fixture(scope="module")
def lstm(spec) -> nn.Module:
    torch.manual_seed(0)
    return text_models.LSTMClassifier(2, embedding_dim=12, hidden=10, **spec).eval()


def test_lstm_mask_values_are_aux_and_mask_products_are_scales(lstm) -> None:
    bt = Backtrace(probabilities(lstm))
    assert bt.frontend == "fx"
    kinds = {n.source.split(" in ")[0]: n.kind for n in bt.graph.nodes}
    for op in ("method Tensor.ne", "method Tensor.long", "method Tensor.unsqueeze", "method Tensor.to",
               "method Tensor.clamp"):
        assert kinds[op] == "aux", op
    assert [n.kind for n in bt.graph.nodes if "mul" in n.source or "truediv" in n.source] == ["scale", "scale"]
    # the ids themselves feed the lookup only (the mask is computed from them, apart)
    users = [n for n in bt.graph.nodes if "input" in n.inputs]
    assert [u.kind for u in users] == ["embedding"]


@pytest.mark.parametrize("mode", MODES)
def test_lstm_per_token_relevance_is_padding_and_batch_invariant(lstm, mode: str) -> None:
    check_token_relevance(probabilities(lstm), mode)


def test_lstm_masked_mean_matches_a_naive_loop(lstm) -> None:
    """Relevance on the LSTM's outputs, written out by hand: the head's linear rule (softmax
    bounds) onto the pooled vector, divided by the token count (a constant: a scale), then the
    sum over the real tokens shared in proportion to ``|out * mask|``: pads get nothing."""
    net = probabilities(lstm)
    ids = token_ids(9)
    bt = Backtrace(net, dtype=DT)
    outs = bt.predict(ids)
    rel = bt.eval(outs, target=1)
    head = next(n for n in bt.graph.nodes if n.kind == "linear")
    pooled_name = head.inputs[0]
    lstm_out = next(n.name for n in bt.graph.nodes if n.kind == "getitem" and n.params["index"] == 0)
    pooled, out = outs[pooled_name], outs[lstm_out]
    seed = rel[bt.graph.output]
    w, b = head.params["weight"], head.params["bias"]
    naive_pooled = torch.zeros_like(pooled)
    for s in range(pooled.shape[0]):
        for j in range(w.shape[0]):
            contribs = [((i,), float(w[j, i] * pooled[s, i])) for i in range(w.shape[1])]
            for (i,), r in unit_default(contribs, float(b[j]), float(seed[s, j]), "softmax", conv=False).items():
                naive_pooled[s, i] += r
    assert BOUNDS["softmax"] == (-1.0, 2.0)
    torch.testing.assert_close(rel[pooled_name], naive_pooled, rtol=1e-10, atol=1e-12)
    mask = (ids != 0).to(DT)
    naive_out = torch.zeros_like(out)
    for s in range(out.shape[0]):
        for h in range(out.shape[2]):
            total = sum(abs(float(out[s, t, h] * mask[s, t])) for t in range(out.shape[1]))
            for t in range(out.shape[1]):
                naive_out[s, t, h] = abs(float(out[s, t, h] * mask[s, t])) / total * naive_pooled[s, h]
    torch.testing.assert_close(rel[lstm_out], naive_out, rtol=1e-10, atol=1e-12)
    assert rel[lstm_out][ids == 0].abs().max() == 0


def test_lstm_conservation_is_reported_per_sample_and_map(lstm) -> None:
    net = probabilities(lstm)
    ids = token_ids(9)
    p = net.to(DT)(ids)[:, 1].detach()
    r, ratio = explain(net, ids, target=1, dtype=DT, return_conservation=True)
    torch.testing.assert_close(ratio, r.sum(1) / (p * 100))
    (rp, rn), (cp, cn) = explain(net, ids, mode="contrastive", target=1, dtype=DT, return_conservation=True)
    torch.testing.assert_close(cp, rp.sum(1) / (p * 100))
    torch.testing.assert_close(cn, rn.sum(1) / ((1 - p) * 100))
    assert all(bool(torch.isfinite(c).all()) and c.shape == (3,) for c in (ratio, cp, cn))
    net.to(torch.float32)


# --- the BERT classifier (torch.export) --------------------------------------------------------

@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_bert_per_token_relevance_is_padding_and_batch_invariant(spec, pooling: str) -> None:
    torch.manual_seed(0)
    net = probabilities(text_models.BertClassifier(2, hidden=16, layers=2, heads=2, intermediate=32,
                                                   pooling=pooling, **spec))
    for mode in MODES:                          # one model object: each input signature exported once
        check_token_relevance(net, mode)


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pretrained_minilm_classifier_is_padding_and_batch_invariant(spec, pooling: str) -> None:
    torch.manual_seed(0)
    net = probabilities(text_models.BertClassifier(2, pretrained="minilm", pooling=pooling, **spec))
    for mode in MODES:
        check_token_relevance(net, mode)


# --- integer inputs: masks carry no relevance, layers refuse integers by name ------------------

class MaskedLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.fc(x * mask / mask.sum(1, keepdim=True).clamp(min=1))


def test_an_integer_mask_input_takes_no_relevance_in_both_front_ends() -> None:
    torch.manual_seed(0)
    model = MaskedLinear().eval()
    x = torch.randn(2, 4)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    fx = explain(model, (x, mask), return_all=True, frontend="fx")
    exported = explain(model, (x, mask), return_all=True, frontend="export")
    for r in (fx, exported):
        assert r["mask"].abs().max() == 0 and r["x"][mask == 0].abs().max() == 0
        assert bool((r["x"][mask == 1] != 0).all())
    torch.testing.assert_close(fx["x"], exported["x"])
    # a float mask is an explained input: clamping it is an op on a live value, with no rule
    with pytest.raises(UnsupportedOperation, match=r"^unsupported operation at node 'clamp': method Tensor.clamp"):
        explain(model, (x, mask.float()), return_all=True, frontend="fx")


class IntegerFeatures(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.float() * 2)


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_an_integer_input_fed_to_a_layer_is_named(frontend: str) -> None:
    ints = torch.ones(2, 4, dtype=torch.long)
    where = {"fx": r"'0' \(linear, module 0 \(Linear\)\)",
             "export": r"'linear' \(linear, op aten.linear.default in module 0 \(Linear\)\)"}[frontend]
    # torch refuses the layer on integers: export fails, and the input is named all the same
    with pytest.raises(ValueError, match=rf"^input 'input' is torch.int64 \(integer/bool\) but feeds node {where}, "
                                         r"which needs floating-point values; pass input.float\(\), or token ids "
                                         r"to an embedding$"):
        explain(nn.Sequential(nn.Linear(4, 3)), ints, frontend=frontend)
    # a value computed from the integer input alone reaching a layer: never silently dropped
    with pytest.raises(ValueError, match=r"^input 'x' is torch.int64 \(integer/bool\) but feeds node '(fc|linear)' "
                                         r"\(linear, .*\(Linear\)\), which needs floating-point values"):
        explain(IntegerFeatures(), ints, frontend=frontend)


class CumulativeMean(nn.Module):
    """A mask computed from the ids (aux) next to an op on a live float value with no rule."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 4, padding_idx=0)
        self.fc = nn.Linear(4, 2)

    def forward(self, ids: Tensor) -> Tensor:
        mask = ids.ne(0).unsqueeze(-1).float()
        return self.fc(torch.cumsum(self.emb(ids) * mask, dim=1)[:, -1])


def test_a_float_op_without_rule_is_still_named_next_to_mask_values() -> None:
    with pytest.raises(UnsupportedOperation, match=r"^unsupported operation at node 'cumsum': function "):
        Backtrace(CumulativeMean())


class Length(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, ids: Tensor) -> Tensor:
        return ids.ne(0).sum(1, keepdim=True).float() * self.scale


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_an_output_of_the_ids_alone_is_refused(frontend: str) -> None:
    with pytest.raises(UnsupportedOperation, match=r"^unsupported operation at node 'output'.*integer inputs alone"):
        explain(Length(), torch.ones(2, 5, dtype=torch.long), frontend=frontend)


class MaskedSelect(nn.Module):
    """``masked_fill`` and ``where`` on embeddings with conditions computed from the ids."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 6)
        self.fc = nn.Linear(6, 2)

    def forward(self, ids: Tensor) -> Tensor:
        keep = ids.ne(0).unsqueeze(-1)
        e = self.emb(ids).masked_fill(ids.eq(1).unsqueeze(-1), 0.0)
        e = torch.where(keep, e, e * 0.5)
        return self.fc(e.sum(1) / keep.sum(1).clamp(min=1))


@pytest.mark.parametrize("mode", MODES)
def test_masked_fill_and_where_on_id_masks_agree_between_front_ends(mode: str) -> None:
    torch.manual_seed(0)
    model = MaskedSelect().eval()
    ids = torch.tensor([[3, 1, 7, 0, 0], [5, 6, 1, 2, 0]])
    fx = maps(explain(model, ids, mode=mode, frontend="fx", dtype=DT))
    exported = maps(explain(model, ids, mode=mode, frontend="export", dtype=DT))
    assert Backtrace(model).graph.node("masked_fill").kind == "masked_fill"
    for a, b in zip(fx, exported):
        torch.testing.assert_close(a, b)
        assert a[ids == 1].abs().max() == 0          # filled with 0: its token takes none
    assert bool((sum(a.abs() for a in fx)[ids > 1] > 0).all())


class CastIds(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 6, padding_idx=0)
        self.fc = nn.Linear(6, 2)

    def forward(self, ids: Tensor) -> Tensor:
        return self.fc(self.emb(ids.long()).sum(1) / ids.ne(0).sum(1, keepdim=True))


def test_ids_cast_on_their_way_to_the_lookup_keep_their_relevance() -> None:
    torch.manual_seed(0)
    ids = torch.tensor([[3, 4, 7, 0], [5, 6, 2, 9]], dtype=torch.int32)
    model = CastIds().eval()
    fx = explain(model, ids, frontend="fx", dtype=DT)
    torch.testing.assert_close(fx, explain(model, ids, frontend="export", dtype=DT))
    assert fx[ids == 0].abs().max() == 0 and bool((fx[ids != 0] != 0).all())
