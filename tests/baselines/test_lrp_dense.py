"""``lrp`` on a dense task's head: Zennit runs on the network the head reads and starts from the
parts the head's value is the sum of, so on bias-free networks the relevance adds up to the very
value every other method explains (a U-Net's skip concatenations and transposed convolutions,
a box regressor's sigmoid outputs included)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from baselines import ExplainContext
from baselines.dense_heads import dense_head, explained_targets
from baselines.lrp_methods import LRPMethod
from experiments.zoo.dense_models import BoxCNN, UNet

TIGHT = {"epsilon": 1e-12, "stabilizer": 1e-12}
pytestmark = pytest.mark.usefixtures("one_thread")


def bias_free(model: nn.Module) -> nn.Module:
    """Zero every bias; BatchNorm made the identity (so merging it adds no bias either)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:
                m.bias.zero_()
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.zero_()
                m.running_var.fill_(1.0 - m.eps)
                m.weight.fill_(1.0)
                m.bias.zero_()
    return model.double().eval()


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_lrp_on_a_unet_adds_up_to_the_thresholded_foreground_sum() -> None:
    """Positive weights on positive images: every unit's positive pre-activation is nonzero, so
    the z+ rule of the convolutions loses nothing (where it is zero, z+ drops what reaches it)."""
    torch.manual_seed(0)
    net = bias_free(UNet(1, (16, 16), widths=(4, 8)))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.abs_().mul_(0.5)     # moderate logits: p stays off 1.0
    x = images(3, 1)
    with torch.no_grad():
        t = float(torch.sigmoid(net(x)).median())   # about half the pixels kept
    head = dense_head(net, "binary-segmentation", t)
    value = head(x).detach().flatten()
    assert bool((value > 0).all())
    targets = explained_targets(head, 3)
    relevance = LRPMethod(head, ExplainContext("image", "conv", 1), output="identity", **TIGHT)(x, targets).values
    torch.testing.assert_close(relevance.sum((1, 2, 3)), value, rtol=1e-8, atol=0)
    # the head's arithmetic is only applied at the start: the network is left as it was
    torch.testing.assert_close(head(x).detach().flatten(), value)


@pytest.mark.parametrize("box_output", ["coordinate", "sum"])
def test_lrp_on_a_box_regressor_adds_up_to_the_coordinate_or_the_sum(box_output: str) -> None:
    torch.manual_seed(1)
    net = bias_free(BoxCNN(1, (16, 16), channels=(4, 8), hidden=16))
    head = dense_head(net, "bbox-regression", box_output=box_output)
    x = images(4, 2)
    targets = explained_targets(head, 4, coordinate=2)
    value = head(x).detach().gather(1, targets[:, None]).flatten()
    relevance = LRPMethod(head, ExplainContext("image", "conv", head.n_outputs), output="identity",
                          **TIGHT)(x, targets).values
    torch.testing.assert_close(relevance.sum((1, 2, 3)), value, rtol=1e-8, atol=0)
    if box_output == "sum":   # the sum's relevance is the sum of the four coordinates' relevance
        per = [LRPMethod(dense_head(net, "bbox-regression"), ExplainContext("image", "conv", 4), output="identity",
                         **TIGHT)(x, torch.full((4,), k)).values for k in range(4)]
        torch.testing.assert_close(relevance, sum(per), rtol=1e-8, atol=1e-12)
