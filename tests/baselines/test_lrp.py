"""``lrp`` (Zennit composites): relevance is conserved on bias-free ReLU networks, residual adds
and BatchNorm are canonized (and undone after), the output softmax gets AttnLRP's softmax rule,
refusals are one line, and Quantus imports with zennit installed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from baselines import METHODS, ExplainContext, IncompatibleMethodError
from baselines.lrp_methods import COMPOSITES, LRPMethod, merge_batchnorm_canonizer, start_relevance
from experiments.zoo.models import MLP, ResNet, SmallCNN

ROOT = Path(__file__).resolve().parents[2]
# Conservation (documented in the method's docstring and docs/backtrace-vs-lrp.md): on a bias-free
# ReLU network the only leak is the term each rule adds to its denominators (a unit keeps the share
# eps / (|z_j| + eps) of its relevance). With eps = 1e-12 in float64 the totals match to 1e-8.
TIGHT = {"epsilon": 1e-12, "stabilizer": 1e-12}
CONSERVATION_RTOL = 1e-8


def bias_free(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
                m.bias.zero_()
    return model.double().eval()


def targets_logits(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        z = model(x)
    return z.argmax(1), z


@pytest.fixture(scope="module")
def mlp() -> nn.Module:
    torch.manual_seed(0)
    return bias_free(MLP(6, 3, hidden=(16, 8)))


def test_lrp_conserves_the_target_logit_on_a_bias_free_relu_mlp(mlp):
    x = torch.randn(7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t, z = targets_logits(mlp, x)
    relevance = LRPMethod(mlp, ExplainContext("tabular", "mlp", 3), output="logits", **TIGHT)(x, t).values
    torch.testing.assert_close(relevance.sum(1), z.gather(1, t[:, None]).flatten(), rtol=CONSERVATION_RTOL, atol=0)


def test_lrp_on_softmax_sums_to_the_softmax_rule_total(mlp):
    """softmax: relevance at the logits is z_i p_t (1[i=t] - p_i), which sums to
    p_t (z_t - sum_i p_i z_i); the rules below conserve it."""
    x = torch.randn(7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    with torch.no_grad():
        z = mlp(x)
    p = z.softmax(1)
    p_t = p.gather(1, t[:, None]).flatten()
    expected = p_t * (z.gather(1, t[:, None]).flatten() - (p * z).sum(1))
    relevance = LRPMethod(mlp, ExplainContext("tabular", "mlp", 3), output="softmax", **TIGHT)(x, t).values
    torch.testing.assert_close(relevance.sum(1), expected, rtol=CONSERVATION_RTOL, atol=1e-12)
    # the start itself, by hand for one sample
    start = start_relevance(z[:1], t[:1], "softmax")[0]
    hand = torch.stack([z[0, i] * p_t[0] * ((1.0 if i == t[0] else 0.0) - p[0, i]) for i in range(3)])
    torch.testing.assert_close(start, hand)


def test_lrp_conserves_on_a_bias_free_cnn_with_max_pooling():
    torch.manual_seed(3)
    cnn = bias_free(SmallCNN(1, 3, input_size=(8, 8), channels=(4, 8), hidden=16))
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    t, z = targets_logits(cnn, x)
    method = LRPMethod(cnn, ExplainContext("image", "conv", 3), output="logits", **TIGHT)
    assert method.declared()["rules"]["composite"] == "epsilon_plus_flat"
    relevance = method(x, t).values
    torch.testing.assert_close(relevance.sum((1, 2, 3)), z.gather(1, t[:, None]).flatten(),
                               rtol=CONSERVATION_RTOL, atol=0)


def fresh_resnet() -> nn.Module:
    """ResNet-8 whose BatchNorms are the identity up to their epsilon (running mean 0, variance 1,
    weight 1, bias 0) and whose head has no bias: merged into the convolutions the BatchNorms leave
    no bias, so relevance must be conserved through the canonized residual adds. The convolution
    weights are made non-negative: z+ (epsilon_plus_flat's rule for convolutions) loses the
    relevance of a unit with no positive contribution, which mixed weights produce in a few units."""
    torch.manual_seed(5)
    net = bias_free(ResNet(1, 3, depth=8, width=4))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.abs_()
    return net


def test_lrp_conserves_through_the_canonized_residual_adds():
    net = fresh_resnet()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    t, z = targets_logits(net, x)
    relevance = LRPMethod(net, ExplainContext("image", "conv", 3), output="logits", **TIGHT)(x, t).values
    torch.testing.assert_close(relevance.sum((1, 2, 3)), z.gather(1, t[:, None]).flatten(),
                               rtol=CONSERVATION_RTOL, atol=0)


def test_without_the_residual_canonizer_relevance_is_duplicated(monkeypatch):
    """The add of a block gets a rule only through the canonizer: without it the plain gradient
    hands both summands the whole relevance, and the totals no longer match."""
    net = fresh_resnet()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    t, z = targets_logits(net, x)
    method = LRPMethod(net, ExplainContext("image", "conv", 3), output="logits", **TIGHT)
    monkeypatch.setattr(LRPMethod, "canonizers", lambda self: [merge_batchnorm_canonizer()])
    relevance = method(x, t).values
    ratio = relevance.sum((1, 2, 3)) / z.gather(1, t[:, None]).flatten()
    assert ((ratio - 1).abs() > 0.05).all()


def test_merged_batchnorm_leaves_the_output_unchanged():
    """Zennit's merge leaves BatchNorm dividing by sqrt(1 + eps); the corrected merge leaves the
    network's function exactly as it was."""
    torch.manual_seed(7)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()).double().eval()
    with torch.no_grad():
        net[1].running_mean.normal_(0, 0.5)
        net[1].running_var.uniform_(0.5, 2)
        net[1].bias.normal_(0, 0.5)
    x = torch.randn(2, 1, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        before = net(x)
        (instance,) = merge_batchnorm_canonizer().apply(net)
        merged = net(x)
        instance.remove()
    torch.testing.assert_close(merged, before, rtol=1e-12, atol=1e-12)


def test_canonizers_are_undone_after_each_call():
    net = fresh_resnet()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3)
                m.bias.normal_(0, 0.3)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        out_before = net(x)
    LRPMethod(net, ExplainContext("image", "conv", 3), output="softmax")(x, torch.tensor([0, 1, 2]))
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert not any("forward" in vars(m) or hasattr(m, "canonizer_sum") for m in net.modules())
    with torch.no_grad():
        torch.testing.assert_close(net(x), out_before, rtol=0, atol=0)


def test_auto_composite_is_epsilon_plus_on_mlps(mlp):
    method = LRPMethod(mlp, ExplainContext("tabular", "mlp", 3))
    assert method.declared()["rules"] == {"composite": "epsilon_plus", "epsilon": 1e-6, "stabilizer": 1e-6}
    # the flat rule on a dense first layer would give every feature one value: why auto avoids it
    x = torch.randn(2, 6, dtype=torch.float64)
    flat = LRPMethod(mlp, ExplainContext("tabular", "mlp", 3), composite="epsilon_plus_flat")(x, torch.tensor([0, 1]))
    assert torch.allclose(flat.values, flat.values[:, :1].expand_as(flat.values))


class AddsOutsideALayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.fc = nn.Linear(64, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc((x + self.conv(x)).flatten(1))


class WithLayerNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.norm(self.fc1(x)))


@pytest.mark.parametrize("make,modality,kind,message", [
    (AddsOutsideALayer, "image", "conv",
     "method 'lrp' cannot explain AddsOutsideALayer: its forward computes 'add' outside a layer (add), which no LRP "
     "rule covers"),
    (WithLayerNorm, "tabular", "mlp",
     "method 'lrp' cannot explain WithLayerNorm: layer 'norm' (LayerNorm) has no LRP rule in Zennit's composites"),
])
def test_lrp_refuses_what_its_rules_do_not_cover(make, modality, kind, message):
    with pytest.raises(IncompatibleMethodError) as err:
        LRPMethod(make(), ExplainContext(modality, kind, 3))
    assert str(err.value) == message


@pytest.mark.parametrize("modality,kind,message", [
    ("text", "recurrent", "method 'lrp' does not support 'text' data; it supports: tabular, image"),
    ("text", "transformer", "method 'lrp' does not support 'text' data; it supports: tabular, image"),
    ("image", "transformer", "method 'lrp' does not support 'transformer' models; it supports: mlp, conv"),
])
def test_lrp_refuses_text_and_transformers(modality, kind, message):
    with pytest.raises(IncompatibleMethodError) as err:
        METHODS["lrp"].check_compatible(modality, kind)
    assert str(err.value) == message


def test_lrp_refuses_keras_models():
    with pytest.raises(IncompatibleMethodError) as err:
        METHODS["lrp"].check_compatible("tabular", "mlp", "softmax", framework="keras")
    assert str(err.value) == "method 'lrp' does not support keras models; it supports: torch"


@pytest.mark.parametrize("params,message", [
    ({"composite": "z_plus"}, f"unknown lrp composite 'z_plus'; valid choices: {', '.join(COMPOSITES)}"),
    ({"epsilon": 0}, "lrp epsilon must be a positive number; got 0"),
])
def test_lrp_bad_parameters_are_one_line(mlp, params, message):
    with pytest.raises(ValueError) as err:
        LRPMethod(mlp, ExplainContext("tabular", "mlp", 3), **params)
    assert str(err.value) == message


def test_quantus_imports_with_zennit_installed():
    """zennit's __init__ imports torchvision (absent), and Quantus imports zennit whenever it is
    installed: a bare `import quantus` fails; through the project's import, or after importing
    baselines, Quantus imports and its zennit modules are zennit's own."""
    bare = subprocess.run([sys.executable, "-c", "import quantus"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert bare.returncode != 0 and "No module named 'torchvision'" in bare.stderr
    code = ("from metrics.quantus_import import import_quantus\n"
            "q = import_quantus()\n"
            "import zennit.canonizers, quantus.functions.explanation_func as ef\n"
            "assert ef.zcanon is zennit.canonizers\n"
            "print(q.__version__)\n")
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert ok.returncode == 0, ok.stderr
    after = subprocess.run([sys.executable, "-c", "import baselines, quantus"], capture_output=True, text=True,
                           cwd=ROOT, timeout=300)
    assert after.returncode == 0, after.stderr


@pytest.mark.parametrize("name,modality,kind,message", [
    ("lrp", "tabular", "mlp", "method 'lrp' needs the package zennit (pip install --no-deps zennit==0.5.1)"),
    ("attnlrp", "text", "transformer", "method 'attnlrp' needs the package lxt (pip install --no-deps lxt==2.1)"),
])
def test_a_missing_package_is_a_one_line_refusal(monkeypatch, name, modality, kind, message):
    from baselines import lrp_packages

    monkeypatch.setattr(lrp_packages, "_enter", lambda _name: None)   # as if neither package were installed
    with pytest.raises(IncompatibleMethodError) as err:
        METHODS[name].check_compatible(modality, kind)
    assert str(err.value) == message
