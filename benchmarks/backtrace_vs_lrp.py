"""Backtrace against LRP, measured: which LRP rule backtrace's default mode equals, where the two
part, layer by layer on small networks, and how alike their maps are on the table models.

    python benchmarks/backtrace_vs_lrp.py layers               # per-layer differences on small nets (seconds)
    python benchmarks/backtrace_vs_lrp.py tables --n-samples 64 # Spearman on mlp, resnet, bert (trains them once)
    python benchmarks/backtrace_vs_lrp.py tables cache_dir=/path    # extra overrides for the run configs
    python benchmarks/backtrace_vs_lrp.py conservation          # total relevance / logit of lrp and attnlrp

``layers``: small random networks in float64, explaining the target logit (the argmax). For each
layer, the relevance at its input is computed by both methods on the network's suffix from that
layer on (relevance flows from the output down, so the suffix's input relevance is the full
network's relevance at that layer), with backtrace's multiplier 1 and LRP's start ``R = z_t``.
Printed per layer and rule: the largest difference relative to the largest backtrace relevance
(max over samples) and the mean Spearman rho of the two maps (signed values).

``tables``: the table models as the tables run them (``output=softmax``, the label as target),
backtrace and lrp (attnlrp for bert) built from their configs; Spearman rho per sample of the
maps' magnitudes (channels summed first, as for the metrics; text over the feature tokens), mean
and quartiles.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backtrace import explain  # noqa: E402
from baselines.lrp_methods import merge_batchnorm_canonizer, residual_block_canonizer  # noqa: E402
from baselines.lrp_packages import zennit_modules  # noqa: E402
from baselines.lrp_rules import UNIFORM_RULES, uniform_composite  # noqa: E402
from metrics.map_agreement import spearman_per_sample, text_feature_positions  # noqa: E402

# -- small networks ------------------------------------------------------------------------------


def _mlp(bias: bool) -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, 16, bias=bias), nn.ReLU(), nn.Linear(16, 16, bias=bias), nn.ReLU(),
                         nn.Linear(16, 3, bias=bias))


def _cnn(pool: type[nn.Module], bias: bool, batchnorm: bool = False) -> nn.Sequential:
    def block(cin: int, cout: int) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=bias)]
        if batchnorm:
            layers.append(nn.BatchNorm2d(cout))
        return layers + [nn.ReLU(), pool(2)]

    return nn.Sequential(*block(1, 4), *block(4, 8), nn.Flatten(), nn.Linear(8 * 2 * 2, 16, bias=bias), nn.ReLU(),
                         nn.Linear(16, 3, bias=bias))


def _resnet() -> nn.Sequential:
    """The zoo's ResNet-8 as a sequence of blocks (stem, residual blocks, pool, head)."""
    from experiments.zoo.models import ResNet

    net = ResNet(in_channels=1, num_classes=3, depth=8, width=4)
    blocks = [net.stem, *[b for stage in net.stages for b in stage], net.pool, net.flatten, net.fc]
    return nn.Sequential(*blocks)


NETS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp, no bias": (lambda: _mlp(False), (8,)),
    "cnn max-pool, no bias": (lambda: _cnn(nn.MaxPool2d, False), (1, 8, 8)),
    "cnn avg-pool, no bias": (lambda: _cnn(nn.AvgPool2d, False), (1, 8, 8)),
    "mlp, biases": (lambda: _mlp(True), (8,)),
    "cnn max-pool, biases": (lambda: _cnn(nn.MaxPool2d, True), (1, 8, 8)),
    "cnn + batchnorm (folded)": (lambda: _cnn(nn.MaxPool2d, False, batchnorm=True), (1, 8, 8)),
    "resnet-8 (residual adds)": (_resnet, (1, 8, 8)),
    "mlp, no bias, softmax output": (lambda: _mlp(False), (8,)),   # last layer x 20: logits beyond (-1, 2)
}
# The last net explains the target probability: backtrace on the net followed by a softmax, LRP
# starting at the target logit with the probability (backtrace's start; its softmax saturation
# bounds on the last layer are what differs).
SOFTMAX_NETS = ("mlp, no bias, softmax output",)
# the rules compared: one LRP rule on every dense/conv layer; "abs_z, signed sums" keeps Zennit's
# Norm (signed values) for residual adds and average pools
RULES = (*UNIFORM_RULES, "abs_z, signed sums")


def build(name: str, seed: int = 0) -> tuple[nn.Sequential, tuple[int, ...]]:
    """A small network in float64 with random weights, non-zero biases and random BatchNorm
    statistics (so that nothing is an identity by accident)."""
    make, shape = NETS[name]
    torch.manual_seed(seed)
    net = make().double().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
                m.bias.normal_(0.0, 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
        if name in SOFTMAX_NETS:
            net[-1].weight.mul_(20.0)   # logits of several units: backtrace's softmax bounds (-1, 2) apply
    return net, shape


def backtrace_relevance(net: nn.Module, x: Tensor, target: Tensor, softmax: bool = False) -> Tensor:
    """Backtrace's default mode, starting at the target logit with its value (multiplier 1), or
    with ``softmax`` at the target probability of the net followed by a softmax."""
    if softmax:
        net = nn.Sequential(net, nn.Softmax(dim=-1))
    return explain(net, x, target=target, dtype=torch.float64, multiplier=1.0)


def lrp_relevance(net: nn.Module, x: Tensor, target: Tensor, rule: str, softmax: bool = False) -> Tensor:
    """LRP with ``rule`` on every dense/conv layer, starting at the target logit with its value
    (``softmax``: with the target probability)."""
    zennit = zennit_modules()
    canonizers = [merge_batchnorm_canonizer(), residual_block_canonizer()]
    signed_sums = rule.endswith("signed sums")
    composite = uniform_composite(rule.split(",")[0], canonizers=canonizers,
                                  absolute_sums=False if signed_sums else None)

    def start(out: Tensor) -> Tensor:
        value = out.detach().softmax(1) if softmax else out.detach()
        return value * nn.functional.one_hot(target, out.shape[1]).to(out.dtype)

    with zennit.attribution.Gradient(model=net, composite=composite) as attributor:
        _, relevance = attributor(x.detach().clone().requires_grad_(True), start)
    return relevance.detach()


def layer_inputs(net: nn.Sequential, x: Tensor) -> list[tuple[str, int, Tensor]]:
    """``(layer name, index, its input)`` for every dense, conv or residual layer of ``net``."""
    out = []
    h = x
    with torch.no_grad():
        for i, layer in enumerate(net):
            kind = type(layer).__name__
            if isinstance(layer, (nn.Linear, nn.Conv2d)) or kind in ("BasicBlock", "Sequential"):
                out.append((f"{i}:{kind}", i, h))
            h = layer(h)
    return out


def compare_layers(name: str, n: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    net, shape = build(name, seed)
    x = torch.randn(n, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        target = net(x).argmax(1)
    rows = []
    softmax = name in SOFTMAX_NETS
    for layer, index, h in layer_inputs(net, x):
        suffix = nn.Sequential(*list(net)[index:])
        bt = backtrace_relevance(suffix, h, target, softmax)
        scale = bt.reshape(n, -1).abs().max(1).values.clamp_min(1e-300)
        for rule in RULES:
            lrp = lrp_relevance(suffix, h, target, rule, softmax)
            diff = ((bt - lrp).reshape(n, -1).abs().max(1).values / scale).max().item()
            rho = np.nanmean(spearman_per_sample(bt.numpy(), lrp.numpy(), magnitude=False))
            rows.append({"net": name, "layer": layer, "rule": rule, "max_rel_diff": diff, "spearman": float(rho)})
    return rows


def print_layers(n: int, seed: int) -> None:
    print(f"relevance at each layer's input, backtrace (default) vs one LRP rule on every layer; {n} random "
          f"inputs, float64; max |difference| / max |backtrace| (max over samples), mean Spearman rho\n")
    header = f"{'net':28s} {'layer':14s} " + " ".join(f"{r:>22s}" for r in RULES)
    print(header)
    print("-" * len(header))
    for name in NETS:
        rows = compare_layers(name, n, seed)
        for layer in dict.fromkeys(r["layer"] for r in rows):
            cells = {r["rule"]: r for r in rows if r["layer"] == layer}
            print(f"{name:28s} {layer:14s} " + " ".join(
                f"{cells[r]['max_rel_diff']:10.1e} rho {cells[r]['spearman']:5.2f}   " for r in RULES))
    signed, magnitude = attention_agreement(n, seed)
    print(f"\n{'bert-tiny (random), tokens':28s} backtrace vs attnlrp, per-token maps at the input: "
          f"mean Spearman rho {signed:.2f} (signed), {magnitude:.2f} (magnitudes)")


def attention_agreement(n: int, seed: int) -> tuple[float, float]:
    """Backtrace's and AttnLRP's per-token maps of a random 2-layer BERT classifier (logits; the
    attention rules differ, so only the input maps are compared)."""
    from baselines import ExplainContext, METHODS
    from experiments.data.tokenizer import tokenizer_spec
    from experiments.zoo.text_models import BertClassifier

    spec = tokenizer_spec()
    torch.manual_seed(seed)
    model = BertClassifier(2, spec["vocab_size"], spec["pad_token_id"], spec["mask_token_id"],
                           spec["special_token_ids"], hidden=32, layers=2, heads=2, intermediate=64).eval()
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(1000, 5000, (n, 12), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    with torch.no_grad():
        target = model(ids).argmax(1)
    ctx = ExplainContext("text", "transformer", 2)
    maps = [METHODS[m](model, ctx, output="logits")(ids, target).values.numpy() for m in ("backtrace", "attnlrp")]
    keep = text_feature_positions(*maps)
    return tuple(float(np.nanmean(spearman_per_sample(*maps, magnitude=m, keep=keep))) for m in (False, True))


# -- the table models ----------------------------------------------------------------------------

TABLE_MODELS = (("mlp", "lrp"), ("resnet", "lrp"), ("bert", "attnlrp"))


def table_agreement(model: str, other: str, n_samples: int, overrides: list[str]) -> dict[str, np.ndarray]:
    """Per-sample Spearman rho of |backtrace| and |other| on the first test samples of ``model``'s
    default dataset, as a table run explains them (softmax output, label as the target); for the
    dense and conv models also of |backtrace| and the |z| rule on every layer started as backtrace
    starts (the target logit gets the target probability), on the same model."""
    from experiments.run.pipeline import build_explainer

    from baselines import ExplainContext, reduce_channels
    from experiments.run.config import load_config, method_config
    from experiments.run.pipeline import prepare

    cfg = load_config([f"model={model}", "output=softmax", *overrides])
    prep = prepare(cfg)
    ds = prep.dataset
    ctx = ExplainContext(modality=ds.modality, model_kind=prep.model_kind, n_classes=ds.n_classes,
                         x_train=ds.x_train, seed=int(cfg.seed), device=prep.device, feature_names=ds.feature_names)
    x, y = ds.x_test[:n_samples], ds.y_test[:n_samples].long()
    maps = {}
    for name in ("backtrace", other):
        method = build_explainer(method_config(name, "softmax"), prep.model, ctx)
        parts = [method(x[i:i + 16], y[i:i + 16]).values for i in range(0, len(x), 16)]
        maps[name] = reduce_channels(torch.cat(parts), "sum").cpu().numpy()
    if ds.modality != "text":
        parts = [lrp_relevance(prep.model, x[i:i + 16].float(), y[i:i + 16], "abs_z", softmax=True)
                 for i in range(0, len(x), 16)]
        maps["abs_z"] = reduce_channels(torch.cat(parts), "sum").cpu().numpy()
    out = {}
    for name in maps:
        if name == "backtrace":
            continue
        keep = text_feature_positions(maps["backtrace"], maps[name]) if ds.modality == "text" else None
        out[name] = spearman_per_sample(maps["backtrace"], maps[name], magnitude=True, keep=keep)
    return out


def print_tables(n_samples: int, overrides: list[str]) -> None:
    print(f"Spearman rho of |backtrace| vs |LRP| maps per sample, first {n_samples} test samples, output=softmax "
          f"(abs_z: the |z| rule on every layer, started at the target logit with p_t)\n")
    for model, other in TABLE_MODELS:
        for name, rho in table_agreement(model, other, n_samples, overrides).items():
            rho = rho[np.isfinite(rho)]
            q1, q3 = np.percentile(rho, [25, 75])
            print(f"{model:8s} backtrace vs {name:8s}: mean {rho.mean():.3f}, quartiles {q1:.3f} to {q3:.3f} "
                  f"({rho.size} samples)", flush=True)


def conservation(model: str, n_samples: int, overrides: list[str]) -> np.ndarray:
    """Per sample: total input relevance over the explained target logit (``output=logits``), for
    ``lrp`` (dense/conv models) or AttnLRP (text; the word, position and token-type embeddings'
    relevance together, every token), on the trained model with its biases."""
    from baselines import ExplainContext
    from baselines.attnlrp import attnlrp_rules
    from baselines.lrp_methods import LRPMethod
    from experiments.run.config import load_config
    from experiments.run.pipeline import prepare

    prep = prepare(load_config([f"model={model}", *overrides]))
    ds, net = prep.dataset, prep.model
    x, y = ds.x_test[:n_samples], ds.y_test[:n_samples].long()
    with torch.no_grad():
        logit = net(x).gather(1, y[:, None]).flatten()
    if ds.modality != "text":
        ctx = ExplainContext(modality=ds.modality, model_kind=prep.model_kind, n_classes=ds.n_classes)
        total = LRPMethod(net, ctx, output="logits")(x, y).values.flatten(1).sum(1)
        return (total / logit).numpy()
    emb = net.encoder.embeddings
    ratios = []
    for i in range(len(x)):     # one sentence at a time: the position embeddings are shared by a batch
        outs: list[Tensor] = []

        def keep(_m: nn.Module, _i: Any, o: Tensor) -> None:
            o.retain_grad() if o.requires_grad else o.requires_grad_(True)   # frozen embeddings: a leaf
            outs.append(o)

        hooks = [m.register_forward_hook(keep) for m in (emb.word_embeddings, emb.position_embeddings,
                                                           emb.token_type_embeddings)]
        try:
            with attnlrp_rules(net, "bert"), torch.enable_grad():
                z = net(x[i:i + 1])[0, y[i]]
                z.backward()
        finally:
            for h in hooks:
                h.remove()
        ratios.append(float(sum((o * o.grad).sum() for o in outs).detach()) / float(z.detach()))
    return np.array(ratios)


def print_conservation(n_samples: int, overrides: list[str]) -> None:
    print(f"total input relevance / target logit (output=logits), first {n_samples} test samples; trained "
          f"models with their biases\n")
    for model, method in (("mlp", "lrp"), ("resnet", "lrp"), ("bert_tiny", "attnlrp"), ("bert", "attnlrp")):
        r = conservation(model, n_samples, overrides)
        q1, med, q3 = np.percentile(r, [25, 50, 75])
        print(f"{model:10s} {method:8s}: median {med:.3f}, quartiles {q1:.3f} to {q3:.3f} ({len(r)} samples)",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("layers", "tables", "conservation"))
    parser.add_argument("--n-samples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="run-config overrides for `tables`, e.g. cache_dir=...")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.part == "layers":
        print_layers(min(args.n_samples, 16), args.seed)
    elif args.part == "tables":
        print_tables(args.n_samples, args.overrides)
    else:
        print_conservation(args.n_samples, args.overrides)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
