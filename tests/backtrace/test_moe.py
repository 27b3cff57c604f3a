"""Mixture-of-experts layers: a block against a naive float64 loop that walks each token through
its router and its selected experts with the elementary rules (``backtrace.rules.experts`` says
which), and tiny Hugging Face MoE decoders (Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE): padding and
batch invariance, pads exactly zero, default and contrastive modes. Also the ops the blocks
brought in: products by weights picked per row, in-place scales, conditions computed from the
input."""
from __future__ import annotations

from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backtrace import Backtrace, UnsupportedOperation, explain
from tests.backtrace.test_rules_naive import dense_units, gather
from tests.backtrace.test_transformers import VOCAB, _hf_inputs, _tokens

transformers = pytest.importorskip("transformers")
from transformers.models.mixtral.modeling_mixtral import MixtralExperts  # noqa: E402

DT = torch.float64
Pair = tuple[Tensor, Optional[Tensor]]          # (R+, R-); default mode: (R, None)


# --- the naive walk ------------------------------------------------------------------------------

def _linear_back(w: Tensor, x: Tensor, r: Pair, act: Optional[str], mode: str) -> Pair:
    """``w @ x`` (no bias): the linear rule, one output unit at a time."""
    units = dense_units(x, w, torch.zeros(w.shape[0], dtype=DT))
    if mode == "default":
        return gather(units, r[0], tuple(x.shape), act, False, "default"), None
    return gather(units, r[0], tuple(x.shape), None, False, "contrastive", r[1])


def _sum_back(terms: list[Tensor], r: Pair, mode: str) -> list[Pair]:
    """``sum_k terms[k]`` per element: the add rule, the summands as one unit's contributions."""
    n, size = len(terms), terms[0].shape[0]
    units = [([((k, d), terms[k][d].item()) for k in range(n)], 0.0, (d,)) for d in range(size)]
    out = gather(units, r[0], (n, size), None, False, mode, r[1])
    if mode == "default":
        return [(out[k], None) for k in range(n)]
    return [(out[0][k], out[1][k]) for k in range(n)]


def _mul_back(a: Tensor, b: Tensor, r: Pair) -> tuple[Pair, Pair]:
    """``a * b`` per element (a one-element operand broadcast): ``R_a = |ab - a| / (|ab - a| +
    |ab - b|) R``, ``R_b`` the rest, in each map alike."""
    size = r[0].shape[0]

    def split(rel: Optional[Tensor]) -> tuple[Optional[Tensor], Optional[Tensor]]:
        if rel is None:
            return None, None
        ra, rb = torch.zeros(a.shape, dtype=DT), torch.zeros(b.shape, dtype=DT)
        for d in range(size):
            ia, ib = (d if a.numel() > 1 else 0), (d if b.numel() > 1 else 0)
            av, bv = a[ia].item(), b[ib].item()
            da, db = abs(av * bv - av), abs(av * bv - bv)
            if da + db > 0:
                ra[ia] += da / (da + db) * rel[d].item()
                rb[ib] += db / (da + db) * rel[d].item()
        return ra, rb

    (pa, pb), (na, nb) = split(r[0]), split(r[1])
    return (pa, na), (pb, nb)


def _plus(a: Pair, b: Pair) -> Pair:
    return a[0] + b[0], None if a[1] is None else a[1] + b[1]


def _gated_mlp_back(w_gate: Tensor, w_up: Tensor, w_down: Tensor, x: Tensor, r: Pair, mode: str) -> Pair:
    """``w_down (silu(w_gate x) * (w_up x))``: linear, multiply, SiLU (passes), linear."""
    a, u = w_gate @ x, w_up @ x
    s = F.silu(a)
    r_m = _linear_back(w_down, s * u, r, None, mode)
    r_s, r_u = _mul_back(s, u, r_m)
    return _plus(_linear_back(w_gate, x, r_s, None, mode), _linear_back(w_up, x, r_u, None, mode))


def naive_block(block: nn.Module, x: Tensor, seed: Pair, mode: str) -> Pair:
    """The block's input relevance, token by token and expert by expert (float64)."""
    p = _block_parts(block)
    E, k = p["gate_up"].shape[0], p["k"]
    I = p["gate_up"].shape[1] // 2
    flat = x.reshape(-1, x.shape[-1])
    seeds = [s.reshape(flat.shape[0], -1) if s is not None else None for s in seed]
    out_p, out_n = torch.zeros_like(flat), torch.zeros_like(flat)
    for t in range(flat.shape[0]):
        xt = flat[t]
        rt: Pair = (seeds[0][t], None if seeds[1] is None else seeds[1][t])
        logits = p["router"] @ xt
        if p["softmax_after_topk"]:
            top, chosen = logits.topk(k)
            gates = torch.softmax(top, dim=0)
        else:                                       # transformers takes the softmax in float32
            top, chosen = torch.softmax(logits.float(), dim=0).topk(k)
            gates = (top / top.sum() if p["renormalise"] else top).to(DT)
        outs = []
        for j in range(k):
            e = int(chosen[j])
            w_gu, w_down = p["gate_up"][e], p["down"][e]
            outs.append(w_down @ (F.silu(w_gu[:I] @ xt) * (w_gu[I:] @ xt)))
        weighted = [gates[j] * outs[j] for j in range(k)]
        routed = sum(weighted)
        r_routed = rt
        r_x: Pair = (torch.zeros_like(xt), None if mode == "default" else torch.zeros_like(xt))
        if "shared" in p:
            w_g, w_u, w_d, w_s = p["shared"]
            shared_out = w_d @ (F.silu(w_g @ xt) * (w_u @ xt))
            sig = torch.sigmoid(w_s @ xt)
            r_routed, r_shared = _sum_back([routed, sig * shared_out], rt, mode)
            r_sig, r_out = _mul_back(sig, shared_out, r_shared)
            r_x = _plus(r_x, _linear_back(w_s, xt, r_sig, "sigmoid", mode))
            r_x = _plus(r_x, _gated_mlp_back(w_g, w_u, w_d, xt, r_out, mode))
        r_logits: Pair = (torch.zeros(E, dtype=DT), None if mode == "default" else torch.zeros(E, dtype=DT))
        for j, r_w in enumerate(_sum_back(weighted, r_routed, mode)):
            e = int(chosen[j])
            r_out, r_gate = _mul_back(outs[j], gates[j:j + 1], r_w)
            w_gu, w_down = p["gate_up"][e], p["down"][e]
            r_x = _plus(r_x, _gated_mlp_back(w_gu[:I], w_gu[I:], w_down, xt, r_out, mode))
            # the gate's share: renormalisation (a scale), top-k (to the chosen entry), softmax (passes)
            r_logits[0][e] += r_gate[0][0]
            if r_logits[1] is not None:
                r_logits[1][e] += r_gate[1][0]
        act = None if p["softmax_after_topk"] else "softmax"     # the activation after the router's layer
        r_x = _plus(r_x, _linear_back(p["router"], xt, r_logits, act, mode))
        out_p[t] = r_x[0]
        if r_x[1] is not None:
            out_n[t] = r_x[1]
    return out_p.reshape(x.shape), (None if mode == "default" else out_n.reshape(x.shape))


# --- small blocks --------------------------------------------------------------------------------

class TopKThenSoftmax(nn.Module):
    """The other order: the softmax over the top-k router logits, over Mixtral's experts."""

    def __init__(self, config) -> None:
        super().__init__()
        self.router = nn.Linear(config.hidden_size, config.num_local_experts, bias=False)
        self.experts = MixtralExperts(config)
        self.k = config.num_experts_per_tok

    def forward(self, hidden_states: Tensor) -> Tensor:
        B, T, H = hidden_states.shape
        x = hidden_states.reshape(-1, H)
        top, chosen = torch.topk(self.router(x), self.k, dim=-1)
        return self.experts(x, chosen, torch.softmax(top, dim=-1)).reshape(B, T, H)


def _mixtral_config(**kw):
    return transformers.MixtralConfig(hidden_size=6, intermediate_size=4, num_local_experts=4, num_experts_per_tok=2,
                                      **kw)


def _block(name: str, experts: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "qwen2_moe":
        cfg = transformers.Qwen2MoeConfig(hidden_size=6, moe_intermediate_size=4, shared_expert_intermediate_size=4,
                                          num_experts=4, num_experts_per_tok=2)
        from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock as Block
    elif name == "mixtral":
        cfg = _mixtral_config()
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock as Block
    else:
        cfg, Block = _mixtral_config(), TopKThenSoftmax
    cfg._experts_implementation = experts          # a block built on its own has none set: "eager"
    block = Block(cfg).eval()
    with torch.no_grad():
        for w in block.parameters():                # the blocks leave their weights uninitialised
            w.normal_(0.0, 0.6)
    return block


def _block_parts(block: nn.Module) -> dict:
    parts = {"gate_up": block.experts.gate_up_proj.detach().to(DT), "down": block.experts.down_proj.detach().to(DT)}
    if isinstance(block, TopKThenSoftmax):
        return {**parts, "router": block.router.weight.detach().to(DT), "k": block.k, "softmax_after_topk": True,
                "renormalise": False}
    parts.update(router=block.gate.weight.detach().to(DT), k=block.gate.top_k, softmax_after_topk=False,
                 renormalise=getattr(block.gate, "norm_topk_prob", True))
    if hasattr(block, "shared_expert"):
        s = block.shared_expert
        parts["shared"] = tuple(m.weight.detach().to(DT) for m in (s.gate_proj, s.up_proj, s.down_proj,
                                                                   block.shared_expert_gate))
    return parts


def _engine(block: nn.Module, x: Tensor, mode: str, dtype: Optional[torch.dtype]) -> tuple[Pair, Pair]:
    """(input relevance, seed): every output element seeded (the bbox task's uniform seed; in
    contrastive mode R- is the output rescaled)."""
    bt = Backtrace(block, dtype=dtype)
    outs = bt.predict(x)
    name, out = bt.graph.inputs[0], bt.graph.output
    rel = bt.eval(outs, mode=mode, task="bbox-regression", scaler=float(x[0].numel()), multiplier=1.0,
                  keep=[name, out])
    if mode == "default":
        return (rel[name], None), (rel[out], None)
    return rel[name], rel[out]


BLOCKS = ["mixtral", "qwen2_moe", "topk_then_softmax"]


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("mode", ["default", "contrastive"])
@pytest.mark.parametrize("experts", ["grouped_mm", "batched_mm"])
@pytest.mark.parametrize("name", BLOCKS)
def test_block_matches_a_naive_float64_loop(name: str, experts: str, mode: str) -> None:
    block = _block(name, experts)
    x = torch.randn(2, 3, 6, dtype=DT)
    ours, seed = _engine(block, x, mode, DT)
    naive = naive_block(block.to(DT), x, seed, mode)
    assert ours[0].abs().sum() > 0
    for a, b in zip(ours, naive):
        if b is not None:
            assert _rel(a, b) < 1e-12                       # measured <= 7e-16


@pytest.mark.parametrize("mode", ["default", "contrastive"])
@pytest.mark.parametrize("name", BLOCKS)
def test_block_in_float32_agrees_with_the_float64_loop(name: str, mode: str) -> None:
    block = _block(name, "grouped_mm")
    x = torch.randn(2, 3, 6)
    ours, _ = _engine(block, x, mode, None)
    _, seed64 = _engine(block, x.double(), mode, DT)
    naive = naive_block(block.to(DT), x.double(), seed64, mode)
    for a, b in zip(ours, naive):
        if b is not None:
            assert a.dtype == torch.float32 and _rel(a, b) < 1e-5        # measured <= 8e-7


def test_the_router_input_gets_the_gates_share_and_the_choice_none() -> None:
    """The relevance reaching the router's logits is what the multiply rule gave the gates; the
    expert indices are aux (a choice: no relevance), so no index node is handed any."""
    block = _block("mixtral", "grouped_mm")
    x = torch.randn(2, 3, 6, dtype=DT)
    bt = Backtrace(block, dtype=DT)
    outs = bt.predict(x)
    rel = bt.eval(outs)
    nodes = {n.name: n for n in bt.graph.nodes}
    (topk,) = [n for n in bt.graph.nodes if n.kind == "topk"]
    (router,) = [nodes[i] for i in nodes[topk.inputs[0]].inputs]          # softmax <- router layer's cast
    assert rel[router.name].abs().sum() > 0 and rel[topk.name][0].abs().sum() > 0
    integer = [n for n in bt.graph.nodes
               if isinstance(outs.get(n.name), Tensor) and not outs[n.name].is_floating_point()]
    assert integer and {n.kind for n in integer} == {"aux"}         # indices, sorts, counts, offsets
    kinds = {n.kind for n in bt.graph.nodes}
    assert {"topk", "index", "grouped_linear", "mul", "sum"} <= kinds and "matmul" not in kinds


# --- tiny Hugging Face MoE decoders ------------------------------------------------------------------

_DECODER = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=32, bos_token_id=0, eos_token_id=0, pad_token_id=0)


def mixtral(**kw) -> nn.Module:
    cfg = transformers.MixtralConfig(intermediate_size=8, num_local_experts=4, num_experts_per_tok=2, **_DECODER)
    return transformers.MixtralForCausalLM._from_config(cfg, **kw).eval()


def olmoe(**kw) -> nn.Module:
    cfg = transformers.OlmoeConfig(intermediate_size=8, num_experts=4, num_experts_per_tok=2, **_DECODER)
    return transformers.OlmoeForCausalLM._from_config(cfg, **kw).eval()


def qwen2_moe(**kw) -> nn.Module:
    cfg = transformers.Qwen2MoeConfig(intermediate_size=8, moe_intermediate_size=8, shared_expert_intermediate_size=8,
                                      num_experts=4, num_experts_per_tok=2, **_DECODER)
    return transformers.Qwen2MoeForCausalLM._from_config(cfg, **kw).eval()


def qwen3_moe(**kw) -> nn.Module:
    cfg = transformers.Qwen3MoeConfig(intermediate_size=8, moe_intermediate_size=8, num_experts=4,
                                      num_experts_per_tok=2, head_dim=4, norm_topk_prob=True, **_DECODER)
    return transformers.Qwen3MoeForCausalLM._from_config(cfg, **kw).eval()


DECODERS: dict[str, Callable[..., nn.Module]] = {"mixtral": mixtral, "olmoe": olmoe, "qwen2_moe": qwen2_moe,
                                                 "qwen3_moe": qwen3_moe}


def _maps(r) -> tuple:
    return r if isinstance(r, tuple) else (r,)


def _invariance(model: nn.Module, mode: str, dtype: torch.dtype) -> float:
    """Largest relative difference between each sequence explained in the padded batch and alone
    (lengths 7, 5, 3: batch and padding invariance); asserts pads get exactly none."""
    ids, mask = _tokens()
    batch = _maps(explain(model, _hf_inputs(ids, mask), mode=mode, task="generation", dtype=dtype))
    worst = 0.0
    for m in batch:
        assert m.shape == (3, 7) and m.dtype == dtype and bool(torch.isfinite(m).all()) and m[0].abs().sum() > 0
    for i, length in ((0, 7), (1, 5), (2, 3)):
        alone = _maps(explain(model, _hf_inputs(ids[i:i + 1, :length], mask[i:i + 1, :length]), mode=mode,
                              task="generation", dtype=dtype))
        for m, a in zip(batch, alone):
            worst = max(worst, float((m[i, :length] - a[0]).abs().max() / a.abs().max()))
            assert length == 7 or m[i, length:].abs().max() == 0               # pad tokens: exactly none
    return worst


# Exact properties, so checked to rounding in float64 (measured at most 2.1e-14, qwen3_moe contrastive).
# Float32 (explicitly: without a dtype these attention models are explained in float64), measured at
# most 1.2e-6 (default) and 1.2e-5 (contrastive, qwen3_moe: the attention rule's split of the scores
# into queries and keys amplifies rounding there; the MoE blocks add ~1e-7); the bounds are over ten
# times those.
INVARIANCE_BOUNDS = {torch.float64: {"default": 1e-12, "contrastive": 1e-12},
                     torch.float32: {"default": 2e-5, "contrastive": 2e-4}}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("mode", ["default", "contrastive"])
@pytest.mark.parametrize("family", list(DECODERS))
def test_moe_decoders_padding_and_batch_invariance(family: str, mode: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    assert _invariance(DECODERS[family](), mode, dtype) < INVARIANCE_BOUNDS[dtype][mode]


@pytest.mark.parametrize("mode", ["default", "contrastive"])
def test_every_experts_implementation_explains_alike(mode: str) -> None:
    """"eager" (a Python loop over the experts hit, which torch.export cannot trace: the engine's
    copy runs "grouped_mm"), "grouped_mm" and "batched_mm" are one computation."""
    torch.manual_seed(0)
    grouped = mixtral()
    inputs = _hf_inputs(*_tokens(1))
    ref = _maps(explain(grouped, inputs, mode=mode, task="generation", dtype=DT))
    for impl in ("eager", "batched_mm"):
        model = mixtral(experts_implementation=impl)
        model.load_state_dict(grouped.state_dict())
        for a, b in zip(_maps(explain(model, inputs, mode=mode, task="generation", dtype=DT)), ref):
            assert _rel(a, b) < 1e-12, impl                   # measured: eager 0, batched_mm <= 2e-16
        assert model.config._experts_implementation == impl            # the caller's model is left as it was


def test_bfloat16_experts_map_torchs_grouped_product() -> None:
    """In bfloat16 transformers' grouped experts call torch's grouped product (``aten._grouped_mm``;
    in float32 and float64 its own fallback op): the same rule, agreeing with float64 up to
    bfloat16 rounding (measured 3.0e-3)."""
    torch.manual_seed(0)
    model = mixtral().to(torch.bfloat16)
    inputs = _hf_inputs(*_tokens())
    bt = Backtrace(model)
    bt.predict(inputs)
    grouped = [n.source for n in bt.graph.nodes if n.kind == "grouped_linear"]
    assert len(grouped) == 4 and all(s.startswith("op aten._grouped_mm") for s in grouped)
    half = explain(model, inputs, task="generation", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    assert _rel(half, explain(model, inputs, task="generation", dtype=DT)) < 3e-2


# --- the ops the blocks brought in ------------------------------------------------------------------

class PerGroupProduct(nn.Module):
    """``x @ W[g]`` for every group g of a 3-D parameter (the product broadcasts ``x``)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 5, 4))
        self.head = nn.Linear(3 * 4, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.matmul(x.unsqueeze(1), self.w)           # (B, 3, 1, 4)
        return self.head(torch.relu(h.flatten(1)))


@pytest.mark.parametrize("mode", ["default", "contrastive"])
def test_a_product_by_a_computed_or_3d_matrix_is_the_linear_rule_per_matrix(mode: str) -> None:
    torch.manual_seed(0)
    model = PerGroupProduct().to(DT).eval()
    x = torch.randn(2, 1, 5, dtype=DT)
    bt = Backtrace(model, frontend="export")
    outs = bt.predict(x)
    (node,) = [n for n in bt.graph.nodes if n.kind == "batched_linear"]
    assert node.params["side"] == "left"
    rel = bt.eval(outs, mode=mode)
    r_h = _maps(rel[node.name])
    for s in range(2):
        naive: Pair = (torch.zeros(5, dtype=DT), None if mode == "default" else torch.zeros(5, dtype=DT))
        for g in range(3):
            r = (r_h[0][s, g, 0], None if mode == "default" else r_h[1][s, g, 0])
            naive = _plus(naive, _linear_back(model.w[g].detach().t(), x[s, 0], r, None, mode))
        for a, b in zip(_maps(rel[bt.graph.inputs[0]]), naive):
            assert _rel(a[s, 0], b) < 1e-12                   # measured <= 3e-16


class InPlace(nn.Module):
    """A row scale written in place (after another layer read the row) or not."""

    def __init__(self, in_place: bool) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 6), nn.Linear(6, 3), nn.Linear(6, 3)
        self.in_place = in_place

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        early = self.fc2(h)                                  # reads h before it is scaled
        if self.in_place:
            h.div_(h.abs().sum(-1, keepdim=True))          # fc2's rule reads h as it was before
        else:
            h = h / h.abs().sum(-1, keepdim=True)
        return early + self.fc3(h)


def _explain_alike(make: Callable[[bool], nn.Module], x: Tensor, mode: str) -> nn.Module:
    """``make(True)`` and ``make(False)`` (one model written two ways, same weights) explain alike
    through torch.export; returns the first."""
    written, other = make(True).to(DT).eval(), make(False).to(DT).eval()
    other.load_state_dict(written.state_dict())
    for a, b in zip(_maps(explain(written, x, mode=mode, frontend="export")),
                    _maps(explain(other, x, mode=mode, frontend="export"))):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    return written


@pytest.mark.parametrize("mode", ["default", "contrastive"])
def test_an_in_place_scale_explains_as_its_out_of_place_form(mode: str) -> None:
    torch.manual_seed(0)
    _explain_alike(InPlace, torch.randn(3, 4, dtype=DT), mode)


def test_an_in_place_product_of_two_live_values_is_refused_by_name() -> None:
    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: Tensor) -> Tensor:
            h = self.fc(x)
            return h.mul_(torch.sigmoid(x))

    with pytest.raises(UnsupportedOperation, match=r"^unsupported operation at node 'mul_': op aten.mul_.Tensor in "
                                                   r"module <root> \(Gate\) \(an in-place product of two values "
                                                   r"computed from the input; "):
        explain(Gate().eval(), torch.randn(2, 4), frontend="export")


class WhereGate(nn.Module):
    """Leaky ReLU written as ``where(h > 0, h, 0.1 h)``: its condition is computed from the input."""

    def __init__(self, written_out: bool) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 3)
        self.written_out = written_out

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        h = torch.where(h > 0, h, 0.1 * h) if self.written_out else F.leaky_relu(h, 0.1)
        return self.fc2(h)


@pytest.mark.parametrize("mode", ["default", "contrastive"])
def test_a_condition_computed_from_the_input_routes_relevance_and_takes_none(mode: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 4, dtype=DT)
    bt = Backtrace(_explain_alike(WhereGate, x, mode), frontend="export")
    bt.predict(x)
    (where,) = [n for n in bt.graph.nodes if n.kind == "where"]
    assert bt.graph.node(where.inputs[0]).kind == "aux"


class Router(nn.Module):
    """The top-k router probabilities of a plain torch module."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 4)

    def forward(self, x: Tensor) -> Tensor:
        top, _ = torch.topk(torch.softmax(self.fc(x), dim=-1), 2, dim=-1)
        return top


def test_topk_sends_the_values_relevance_to_the_entries_chosen() -> None:
    torch.manual_seed(0)
    model = Router().to(DT).eval()
    x = torch.randn(3, 5, dtype=DT)
    with pytest.raises(UnsupportedOperation, match=r"^unsupported operation at node 'topk': .*torch.fx cannot tell "
                                                   r"the indices from the values; frontend='export' maps it"):
        explain(model, x, frontend="fx")
    bt = Backtrace(model, frontend="export")
    outs = bt.predict(x)
    rel = bt.eval(outs, task="bbox-regression", scaler=2.0, multiplier=1.0)
    (topk,) = [n for n in bt.graph.nodes if n.kind == "topk"]
    probs = rel[topk.inputs[0]]
    chosen = outs[topk.name][1]
    expected = torch.zeros(3, 4, dtype=DT).scatter(1, chosen, 1.0)      # every chosen value was seeded with 1
    torch.testing.assert_close(probs, expected, rtol=0, atol=0)
