"""The dense models (U-Net, box regressor; torch and Keras), their losses and test scores on
hand-computed cases, and their seeded training."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from backtrace import explain
from baselines.dense_heads import dense_head
from experiments.data.base import Dataset
from experiments.errors import ConfigError
from experiments.zoo import dense_training as dt
from experiments.zoo.dense_models import BoxCNN, UNet, parameter_count
from experiments.zoo.training import train

pytestmark = pytest.mark.usefixtures("one_thread")


def toy_segmentation(n: int = 24, size: int = 16) -> Dataset:
    """Bright squares on a dark noisy field; the mask is the square."""
    g = torch.Generator().manual_seed(0)
    x = 0.3 * torch.rand(n, 1, size, size, generator=g)
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        top, left = (int(v) for v in torch.randint(0, size - 6, (2,), generator=g))
        masks[i, 0, top:top + 6, left:left + 6] = 1
    x = torch.where(masks > 0, torch.full_like(x, 0.9), x)
    k = n * 3 // 4
    return Dataset("toy", "image", x[:k], torch.zeros(k, dtype=torch.long), x[k:], torch.zeros(n - k, dtype=torch.long),
                   1, task="binary-segmentation", targets_train=masks[:k], targets_test=masks[k:])


def toy_boxes(n: int = 24, size: int = 16) -> Dataset:
    seg = toy_segmentation(n, size)
    def boxes(m: torch.Tensor) -> torch.Tensor:
        out = []
        for mask in m[:, 0]:
            rows, cols = torch.nonzero(mask, as_tuple=True)
            out.append([cols.min() / size, rows.min() / size, (cols.max() + 1) / size, (rows.max() + 1) / size])
        return torch.tensor(out, dtype=torch.float32)
    return Dataset("toy", "image", seg.x_train, seg.y_train, seg.x_test, seg.y_test, 1, task="bbox-regression",
                   targets_train=boxes(seg.targets_train), targets_test=boxes(seg.targets_test))


TRAIN = OmegaConf.create({"epochs": 2, "batch_size": 8, "lr": 0.01, "weight_decay": 0.0})


# ---------------------------------------------------------------------------------------------
# networks

@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
def test_unet_gives_one_logit_per_pixel_and_the_engine_explains_it(upsampling: str) -> None:
    torch.manual_seed(0)
    net = UNet(3, (16, 16), widths=(4, 8, 16), upsampling=upsampling).eval()
    x = torch.rand(2, 3, 16, 16)
    assert net(x).shape == (2, 1, 16, 16)
    assert net.cam_layer == "decoder.1" and isinstance(dict(net.named_modules())[net.cam_layer], nn.Sequential)
    for mode in ("default", "contrastive"):
        rel = explain(nn.Sequential(net, nn.Sigmoid()), x, mode=mode, task="binary-segmentation", thresholding=0.45)
        for r in (rel if isinstance(rel, tuple) else (rel,)):
            assert r.shape == x.shape and bool(torch.isfinite(r).all())


def test_box_cnn_gives_four_fractions() -> None:
    torch.manual_seed(0)
    out = BoxCNN(1, (16, 16), channels=(4, 8)).eval()(torch.rand(5, 1, 16, 16))
    assert out.shape == (5, 4) and bool(((out > 0) & (out < 1)).all())


@pytest.mark.parametrize("make, message", [
    (lambda: UNet(1, (18, 18), widths=(4, 8, 16)), r"UNet with 2 pooling steps needs image sides divisible by 4; got \[18, 18\]"),
    (lambda: UNet(1, (16, 16), widths=(4,)), r"UNet widths=\(4,\) is invalid"),
    (lambda: UNet(1, (16, 16), upsampling="nearest"), "UNet upsampling='nearest' is invalid; choose one of: transpose, bilinear"),
    (lambda: BoxCNN(1, (20, 20), channels=(4, 8, 16)), "BoxCNN with 3 pooling steps needs image sides divisible by 8"),
])
def test_bad_architectures_are_one_line(make, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


# ---------------------------------------------------------------------------------------------
# losses and scores by hand

def test_box_iou_and_generalised_iou_by_hand() -> None:
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.2, 0.2], [0.1, 0.1, 0.3, 0.3]])
    b = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.5, 0.5, 0.7, 0.7], [0.1, 0.1, 0.3, 0.3]])
    # overlap 0.25^2 = 0.0625 of a union 0.25 + 0.25 - 0.0625; disjoint; identical
    torch.testing.assert_close(dt.box_iou(a, b), torch.tensor([0.0625 / 0.4375, 0.0, 1.0]))
    # GIoU subtracts the share of the enclosing box (0.75^2; 0.7^2) the union leaves empty
    giou = dt.box_iou(a, b, generalised=True)
    torch.testing.assert_close(giou, torch.tensor([0.0625 / 0.4375 - (0.5625 - 0.4375) / 0.5625,
                                                   -(0.49 - 0.08) / 0.49, 1.0]))
    swapped = torch.tensor([[0.5, 0.5, 0.0, 0.0]])                  # corners swapped: no area
    assert float(dt.box_iou(swapped, a[:1])) == 0.0


def test_mask_iou_and_dice_by_hand() -> None:
    pred = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    true = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    torch.testing.assert_close(dt.mask_iou(pred, true), torch.tensor([1 / 3, 1.0], dtype=torch.float64))
    p = torch.tensor([[[[0.8, 0.6], [0.2, 0.0]]]])
    m = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    # (2 * (0.8 + 0.2) + 1) / (1.6 + 2 + 1)
    torch.testing.assert_close(dt.soft_dice(p, m), torch.tensor([3.0 / 4.6]))


def test_losses_by_hand() -> None:
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    p = torch.sigmoid(logits)
    bce = -(mask * p.log() + (1 - mask) * (1 - p).log()).mean()
    dice = 1 - (2 * (p * mask).sum() + 1) / (p.sum() + mask.sum() + 1)
    torch.testing.assert_close(dt.dense_loss("binary-segmentation", "bce", logits, mask), bce)
    torch.testing.assert_close(dt.dense_loss("binary-segmentation", "bce_dice", logits, mask), bce + dice)
    box, true = torch.tensor([[0.1, 0.2, 0.5, 0.6]]), torch.tensor([[0.2, 0.2, 0.6, 0.6]])
    l1 = torch.tensor(0.05)                                          # (0.1 + 0 + 0.1 + 0) / 4
    iou = 0.3 * 0.4 / (0.16 + 0.16 - 0.12)
    torch.testing.assert_close(dt.dense_loss("bbox-regression", "l1", box, true), l1)
    torch.testing.assert_close(dt.dense_loss("bbox-regression", "l1_giou", box, true),
                               l1 + 1 - torch.tensor(iou - (0.5 * 0.4 - 0.2) / (0.5 * 0.4)), rtol=1e-5, atol=1e-6)


def test_loss_choice_comes_from_the_task() -> None:
    assert dt.loss_name("binary-segmentation", OmegaConf.create({})) == "bce_dice"
    assert dt.loss_name("bbox-regression", OmegaConf.create({"loss": "giou"})) == "giou"
    with pytest.raises(ConfigError, match="model.train.loss='giou' is invalid for binary-segmentation; choose one of: "
                                          "bce_dice, bce, dice"):
        dt.loss_name("binary-segmentation", OmegaConf.create({"loss": "giou"}))


def test_a_network_that_predicts_the_masks_scores_one() -> None:
    ds = toy_segmentation()
    perfect = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        perfect.weight.fill_(20.0)
        perfect.bias.fill_(-12.0)                                     # logit > 0 exactly where x = 0.9
    assert dt.dense_score(perfect, ds) == 1.0
    with torch.no_grad():
        perfect.bias.fill_(-30.0)                                     # nothing predicted: IoU 0 everywhere
    assert dt.dense_score(perfect, ds) == 0.0


# ---------------------------------------------------------------------------------------------
# training

@pytest.mark.parametrize("task", ["binary-segmentation", "bbox-regression"])
def test_training_is_seeded_and_lowers_the_loss(task: str) -> None:
    ds = toy_segmentation() if task == "binary-segmentation" else toy_boxes()
    def trained(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        net = UNet(1, (16, 16), widths=(4, 8)) if task == "binary-segmentation" else BoxCNN(1, (16, 16), channels=(4, 8))
        before = dt.dense_loss(task, dt.loss_name(task, TRAIN), dt.dense_outputs(net.eval(), ds.x_train),
                               ds.targets_train)
        train(net, ds, TRAIN, seed, torch.device("cpu"))
        after = dt.dense_loss(task, dt.loss_name(task, TRAIN), dt.dense_outputs(net, ds.x_train), ds.targets_train)
        assert after < before
        return net
    a, b = trained(0), trained(0)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


# ---------------------------------------------------------------------------------------------
# Keras

keras_only = pytest.mark.slow


@keras_only
def test_keras_unet_trains_explains_and_computes_the_value_like_torch() -> None:
    pytest.importorskip("tensorflow")
    import tensorflow as tf

    from baselines import ExplainContext, METHODS
    from experiments.zoo.dense_models import keras_unet

    ds = toy_segmentation(n=16)
    torch.manual_seed(0)
    net = keras_unet(1, (16, 16), widths=(4, 8))
    assert parameter_count(net) > 0 and net.cam_layer == "dec0_out"
    train(net, ds, OmegaConf.create({**TRAIN, "epochs": 1}), 0, torch.device("cpu"))
    x = ds.x_test[:3]
    with torch.no_grad():
        t = float(torch.sigmoid(net(x)).median())
    head = dense_head(net, "binary-segmentation", t)
    value = head(x).detach()
    out = net.keras_model(tf.constant(net.to_keras(x)), training=False)
    np.testing.assert_allclose(np.asarray(head.keras_value(out, torch.zeros(3))), value.numpy(), rtol=1e-5)
    ctx = ExplainContext(modality="image", model_kind="conv", n_classes=1, x_train=ds.x_train)
    targets = torch.zeros(3, dtype=torch.long)
    att = METHODS["backtrace"](head, ctx, output="identity")(x, targets)
    assert att.values.shape == x.shape and "conservation" in att.extras
    cam = METHODS["gradcam"](head, ctx, output="identity")(x, targets)
    assert cam.values.shape == (3, 1, 16, 16) and bool((cam.values >= 0).all())
    sal = METHODS["saliency"](head, ctx, output="identity")(x, targets).values   # gradient through the tape
    xg = x.clone().requires_grad_(True)
    head(xg).sum().backward()
    torch.testing.assert_close(sal, xg.grad.abs())


@keras_only
def test_keras_box_regressor_trains_and_the_sum_head_is_a_fixed_dense_layer() -> None:
    pytest.importorskip("tensorflow")
    from experiments.zoo.dense_models import keras_bbox

    ds = toy_boxes(n=16)
    torch.manual_seed(0)
    net = keras_bbox(1, (16, 16), channels=(4, 8))
    train(net, ds, OmegaConf.create({**TRAIN, "epochs": 1}), 0, torch.device("cpu"))
    x = ds.x_test[:3]
    boxes = net(x).detach()
    assert boxes.shape == (3, 4)
    head = dense_head(net, "bbox-regression", box_output="sum")
    model, options = head.backtrace_view()
    summed = explain(model, net.to_keras(x), target=0, **options)
    parts = sum(explain(net.keras_model, net.to_keras(x), target=k, **options) for k in range(4))
    np.testing.assert_allclose(summed, parts, rtol=1e-4, atol=1e-6)
