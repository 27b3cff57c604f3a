"""Real architectures: residual ResNet with BatchNorm, a depthwise-separable CNN, the
pretrained EfficientNet-Lite0; batch invariance and BatchNorm folding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backtrace import Backtrace, explain
from experiments.zoo.models import ResNet


def _randomise_bn(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


class DepthwiseSeparable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
        self.bn_dw = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 16, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu6(self.bn_dw(self.dw(x)))
        x = F.relu6(self.bn_pw(self.pw(x)))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        return _randomise_bn(ResNet(in_channels=3, num_classes=10, depth=8))


def test_resnet_explains_with_finite_relevance_and_names_layers(resnet: nn.Module) -> None:
    x = torch.randn(3, 3, 16, 16)
    bt = Backtrace(resnet)
    names = [n.name for n in bt.graph.nodes]
    assert {"stem.0", "stages.0.0.conv1", "stages.1.0.shortcut.0", "fc"} <= set(names)
    assert not any(n.kind == "batch_norm" for n in bt.graph.nodes)       # all folded
    rel = bt.eval(bt.predict(x))
    assert rel["x"].shape == x.shape and torch.isfinite(rel["x"]).all() and rel["x"].abs().sum() > 0
    rp, rn = explain(resnet, x, mode="contrastive")
    assert torch.isfinite(rp).all() and torch.isfinite(rn).all()


def test_batchnorm_folding_is_exact_and_leaves_the_model_alone(resnet: nn.Module) -> None:
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    x = torch.randn(2, 3, 16, 16)
    bt = Backtrace(resnet)
    outs = bt.predict(x)
    torch.testing.assert_close(outs[bt.graph.output], resnet(x), rtol=0, atol=1e-5)
    folded = [n for n in bt.graph.nodes if "folded" in n.meta]
    assert len(folded) == 9
    for n in folded:       # the folded layer reproduces conv -> BatchNorm to 1e-5
        p = n.params
        y = F.conv2d(outs[n.inputs[0]], p["weight"], p["bias"], p["stride"], p["padding"], p["dilation"],
                     p["groups"])
        assert (y - outs[n.name]).abs().max().item() < 1e-5
    after = resnet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not resnet.training


@pytest.mark.parametrize("mode", ["default", "contrastive"])
def test_batch_invariance(resnet: nn.Module, mode: str) -> None:
    x = torch.randn(3, 3, 16, 16)
    bt = Backtrace(resnet)
    batch = bt.eval(bt.predict(x), mode=mode)
    for i in range(3):
        alone = bt.eval(bt.predict(x[i:i + 1]), mode=mode)
        for name in ("x", "stages.1.0.conv1", "fc"):
            b, a = batch[name], alone[name]
            pairs = zip(b, a) if mode == "contrastive" else [(b, a)]
            for bb, aa in pairs:
                torch.testing.assert_close(bb[i:i + 1], aa, rtol=1e-4, atol=1e-5)


def test_depthwise_separable_cnn_explains() -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        model = _randomise_bn(DepthwiseSeparable())
    bt = Backtrace(model)
    dw = next(n for n in bt.graph.nodes if n.name == "dw")
    assert dw.params["groups"] == 8 and dw.meta.get("folded") == "bn_dw"
    R = explain(model, torch.randn(2, 3, 12, 12))
    assert R.shape == (2, 3, 12, 12) and torch.isfinite(R).all() and R.abs().sum() > 0


@pytest.mark.slow
def test_efficientnet_lite0_explains_chelsea() -> None:
    from skimage import data
    from skimage.transform import resize

    from experiments.zoo.models import efficientnet_lite0

    model = efficientnet_lite0()
    img = resize(data.chelsea(), (224, 224), anti_aliasing=True).astype(np.float32)
    x = ((torch.from_numpy(img).permute(2, 0, 1) - 0.5) / 0.5).unsqueeze(0)
    bt = Backtrace(model)
    outs = bt.predict(x)
    assert outs[bt.graph.output].argmax().item() == 285          # Egyptian cat
    R = bt.eval(outs)[bt.graph.inputs[0]]
    assert R.shape == x.shape and torch.isfinite(R).all() and R.abs().sum() > 0
