"""The measured claim of docs/backtrace-vs-lrp.md: on ReLU networks explaining a logit, backtrace's
default mode is LRP with the absolute-contribution rule (``baselines.lrp_rules``), checked
against a naive float64 computation of that rule, and it is none of the standard LRP rules (z+,
epsilon) unless every contribution is non-negative."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from backtrace import explain
from baselines.lrp_methods import merge_batchnorm_canonizer, residual_block_canonizer
from baselines.lrp_packages import zennit_modules
from baselines.lrp_rules import uniform_composite
from experiments.zoo.models import ResNet
from metrics.map_agreement import agreement_note, spearman_per_sample, text_feature_positions


def naive_abs_z(net: nn.Sequential, x: Tensor, target: Tensor) -> Tensor:
    """The rule written out unit by unit in float64: input i of unit j gets
    R_j |w_ji x_i| / (sum_i |w_ji x_i| + |b_j|); ReLU passes relevance on; max pooling gives each
    window's relevance to its maximum; flatten reshapes."""
    acts = [x]
    with torch.no_grad():
        for layer in net:
            acts.append(layer(acts[-1]))
    out = acts[-1]
    relevance = torch.zeros_like(out)
    relevance[torch.arange(len(x)), target] = out[torch.arange(len(x)), target]
    for layer, a in zip(reversed(list(net)), reversed(acts[:-1])):
        if isinstance(layer, nn.Linear):
            new = torch.zeros_like(a)
            for n in range(a.shape[0]):
                for j in range(layer.out_features):
                    contrib = (layer.weight[j] * a[n]).abs()
                    bias = layer.bias[j].abs() if layer.bias is not None else 0.0
                    new[n] += relevance[n, j] * contrib / (contrib.sum() + bias)
            relevance = new
        elif isinstance(layer, nn.Conv2d):
            k, pad = layer.kernel_size[0], layer.padding[0]
            cols = nn.functional.unfold(a, k, padding=pad).abs()              # (N, Cin*k*k, L)
            w = layer.weight.reshape(layer.out_channels, -1).abs()            # (Cout, Cin*k*k)
            bias = layer.bias.abs()[None, :, None] if layer.bias is not None else 0.0
            denominator = torch.einsum("ok,nkl->nol", w, cols) + bias       # (N, Cout, L)
            share = relevance.reshape(len(a), layer.out_channels, -1) / denominator
            back = torch.einsum("ok,nol->nkl", w, share) * cols
            relevance = nn.functional.fold(back, a.shape[2:], k, padding=pad)
        elif isinstance(layer, nn.MaxPool2d):
            _, index = nn.functional.max_pool2d(a, layer.kernel_size, return_indices=True)
            new = torch.zeros_like(a).flatten(2)
            new.scatter_add_(2, index.flatten(2), relevance.flatten(2))
            relevance = new.reshape(a.shape)
        elif isinstance(layer, nn.Flatten):
            relevance = relevance.reshape(a.shape)
        elif not isinstance(layer, nn.ReLU):
            raise TypeError(f"no naive rule for {type(layer).__name__}")
    return relevance


def net(bias: bool, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(3, 4, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(16, 8, bias=bias), nn.ReLU(), nn.Linear(8, 3, bias=bias)).double().eval()
    if bias:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)):
                    m.bias.normal_(0.0, 0.1)
    return model


def lrp(model: nn.Module, x: Tensor, target: Tensor, rule: str, absolute_sums: bool | None = None) -> Tensor:
    zennit = zennit_modules()
    composite = uniform_composite(rule, canonizers=[merge_batchnorm_canonizer(), residual_block_canonizer()],
                                  absolute_sums=absolute_sums)
    start = lambda out: out.detach() * nn.functional.one_hot(target, out.shape[1]).to(out.dtype)  # noqa: E731
    with zennit.attribution.Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(x.clone().requires_grad_(True), start)
    return relevance.detach()


def backtrace(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    return explain(model, x, target=target, dtype=torch.float64, multiplier=1.0)


def inputs(n: int = 6, seed: int = 1, positive: bool = False) -> Tensor:
    x = torch.randn(n, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return x.abs() if positive else x


@pytest.mark.parametrize("bias", [False, True])
def test_backtrace_default_is_the_absolute_z_rule(bias):
    model = net(bias)
    x = inputs()
    target = model(x).argmax(1)
    naive = naive_abs_z(model, x, target)
    torch.testing.assert_close(backtrace(model, x, target), naive, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(lrp(model, x, target, "abs_z"), naive, rtol=1e-9, atol=1e-12)


def relative_gap(a: Tensor, b: Tensor) -> float:
    return float(((a - b).flatten(1).abs().max(1).values / b.flatten(1).abs().max(1).values).max())


def test_backtrace_is_not_z_plus_or_epsilon_on_mixed_sign_contributions():
    model = net(False)
    x = inputs()
    target = model(x).argmax(1)
    bt = backtrace(model, x, target)
    assert relative_gap(lrp(model, x, target, "z_plus"), bt) > 0.1
    assert relative_gap(lrp(model, x, target, "epsilon"), bt) > 0.1


def test_with_non_negative_contributions_all_three_rules_agree():
    """Non-negative weights, inputs and no biases: every contribution is >= 0, so |z| = z = z+."""
    model = net(False)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.abs_()
    x = inputs(positive=True)
    target = model(x).argmax(1)
    bt = backtrace(model, x, target)
    for rule in ("z_plus", "epsilon", "abs_z"):
        torch.testing.assert_close(lrp(model, x, target, rule), bt, rtol=1e-8, atol=1e-12)


def test_residual_adds_part_where_a_summand_is_negative():
    """ResNet-8 with random BatchNorm statistics: backtrace splits an add by |a_k|, LRP's Norm
    (Zennit's rule for sums) by a_k; with the absolute split the two agree."""
    torch.manual_seed(2)
    model = ResNet(1, 3, depth=8, width=4).double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.normal_(0.0, 0.3)
    x = inputs(4)
    target = model(x).argmax(1)
    bt = backtrace(model, x, target)
    torch.testing.assert_close(lrp(model, x, target, "abs_z"), bt, rtol=1e-7, atol=1e-10)
    assert relative_gap(lrp(model, x, target, "abs_z", absolute_sums=False), bt) > 0.05


# -- the maps' rank agreement -------------------------------------------------------------------------


def test_spearman_per_sample_by_hand():
    a = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, -5.0, 3.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    b = np.array([[10.0, 20.0, 30.0, 40.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    rho = spearman_per_sample(a, b)                 # magnitudes: |a[1]| = 1, 5, 3, 2
    assert rho[0] == pytest.approx(1.0)
    # ranks of |a[1]|: 1, 4, 3, 2; of b[1]: 4, 3, 2, 1 -> d = -3, 1, 1, 1; rho = 1 - 6*12/(4*15) = -0.2
    assert rho[1] == pytest.approx(-0.2)
    assert np.isnan(rho[2])                         # a constant map has no ranking
    signed = spearman_per_sample(a[1:2], b[1:2], magnitude=False)   # ranks of a[1]: 2, 1, 4, 3; d = -2, -2, 2, 2
    assert signed[0] == pytest.approx(1 - 6 * (4 + 4 + 4 + 4) / (4 * 15))
    keep = text_feature_positions(np.array([[0.0, 1.0, 2.0, 0.0]]), np.array([[0.0, 3.0, 0.5, 0.0]]))
    assert keep.tolist() == [[False, True, True, False]]


def test_agreement_note_reads_the_records(tmp_path):
    """The tables' note: per-sample rho of the two records' maps on the samples both explained."""
    for name, samples, maps in (("backtrace", [3, 5, 7], [[1, 2, 3], [3, 2, 1], [1, 3, 2]]),
                                ("lrp", [5, 7, 9], [[-30, 2, 1], [0.1, 0.3, 0.2], [5, 5, 6]])):
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / "arrays.npz", sample=np.array(samples), attributions=np.array(maps, float))
    lines = agreement_note({"backtrace": tmp_path / "backtrace", "lrp": tmp_path / "lrp", "ig": tmp_path / "x"})
    # samples 5 and 7: |[-30, 2, 1]| vs [3, 2, 1] -> rho 1; [0.1, 0.3, 0.2] vs [1, 3, 2] -> rho 1
    assert lines == ["Rank agreement of the maps (Spearman's rho of the attribution magnitudes per sample): "
                     "backtrace vs lrp: mean 1.00 (quartiles 1.00 to 1.00, 2 samples)."]
    assert agreement_note({"lrp": tmp_path / "lrp"}) == []
