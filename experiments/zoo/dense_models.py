"""Dense models: a small U-Net (per-pixel foreground logits) and a CNN box regressor, in torch and
in Keras.

``UNet`` returns one logit per pixel ``(N, 1, H, W)``; the foreground probability is its sigmoid,
which the segmentation head (``baselines.dense_heads.SegmentationScore``) applies. ``BoxCNN``
returns the box ``(N, 4)`` = (x0, y0, x1, y1) as fractions of the image, through a sigmoid.
Their Keras versions (``keras_unet``, ``keras_bbox``) are the same layers, channels-last inside,
behind the harness's torch face (:class:`KerasDenseNet`); the engine explains them through its
Keras front end. Each network names the layer Seg-Grad-CAM reads (``cam_layer``): the U-Net's last
decoder block.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from experiments.errors import ConfigError
from experiments.zoo.keras_models import KerasClassifier, _init_seed, _keras, _progress_callback, tensorflow_threads

UPSAMPLINGS = ("transpose", "bilinear")


def _widths(name: str, widths: Sequence[int], least: int) -> list[int]:
    if isinstance(widths, (str, int)) or len(widths) < least or not all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise ConfigError(f"{name} widths={widths!r} is invalid; choose a list of at least {least} positive "
                          f"channel counts, e.g. [8, 16, 32]")
    return [int(w) for w in widths]


def _check_size(name: str, input_size: Optional[Sequence[int]], levels: int) -> None:
    if input_size is None:
        return
    step = 2 ** levels
    if any(int(s) % step for s in input_size):
        raise ConfigError(f"{name} with {levels} pooling steps needs image sides divisible by {step}; "
                          f"got {list(input_size)} (change the widths or the dataset's size)")


def conv_block(cin: int, cout: int, batchnorm: bool) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by BatchNorm (optional) and ReLU."""
    layers: list[nn.Module] = []
    for c_in in (cin, cout):
        layers += [nn.Conv2d(c_in, cout, 3, padding=1, bias=not batchnorm)]
        if batchnorm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """A small U-Net (Ronneberger et al., 2015): an encoder of conv blocks and 2x2 max pools at
    ``widths`` channels (the last one the bottleneck), a decoder that upsamples by 2
    (``transpose``: a 2x2 stride-2 transposed convolution; ``bilinear``: bilinear interpolation
    and a 1x1 convolution), concatenates the encoder's map of the same size (skip) and applies a
    conv block, and a 1x1 convolution to one logit per pixel."""

    cam_layer = "decoder.0"     # overwritten per instance: the last decoder block

    def __init__(self, in_channels: int, input_size: Optional[Sequence[int]] = None,
                 widths: Sequence[int] = (8, 16, 32), upsampling: str = "transpose", batchnorm: bool = True) -> None:
        super().__init__()
        widths = _widths("UNet", widths, 2)
        if upsampling not in UPSAMPLINGS:
            raise ConfigError(f"UNet upsampling={upsampling!r} is invalid; choose one of: {', '.join(UPSAMPLINGS)}")
        _check_size("UNet", input_size, len(widths) - 1)
        self.encoder = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.encoder.append(conv_block(cin, w, batchnorm))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for w_skip in reversed(widths[:-1]):
            if upsampling == "transpose":
                self.up.append(nn.ConvTranspose2d(cin, w_skip, 2, stride=2))
            else:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                             nn.Conv2d(cin, w_skip, 1)))
            self.decoder.append(conv_block(2 * w_skip, w_skip, batchnorm))
            cin = w_skip
        self.head = nn.Conv2d(cin, 1, 1)
        self.cam_layer = f"decoder.{len(self.decoder) - 1}"

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i < len(self.encoder) - 1:
                skips.append(x)
                x = self.pool(x)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips)):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)


class BoxCNN(nn.Module):
    """Conv blocks (3x3 conv, BatchNorm, ReLU, 2x2 max pool) at ``channels``, then two dense
    layers to four sigmoid outputs: the box (x0, y0, x1, y1) as fractions of the image."""

    def __init__(self, in_channels: int, input_size: Sequence[int] = (32, 32), channels: Sequence[int] = (16, 32, 64),
                 hidden: int = 64) -> None:
        super().__init__()
        channels = _widths("BoxCNN", channels, 1)
        _check_size("BoxCNN", input_size, len(channels))
        layers: list[nn.Module] = []
        cin = in_channels
        for c in channels:
            layers += [nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            cin = c
        self.features = nn.Sequential(*layers)
        h, w = (int(s) // 2 ** len(channels) for s in input_size)
        self.regressor = nn.Sequential(nn.Flatten(), nn.Linear(cin * h * w, int(hidden)), nn.ReLU(),
                                       nn.Linear(int(hidden), 4), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return self.regressor(self.features(x))


# --------------------------------------------------------------------------------------------
# Keras

class KerasDenseNet(KerasClassifier):
    """A Keras dense network behind the harness's torch face (see ``KerasClassifier``): per-pixel
    logits ``(N, 1, H, W)`` or boxes ``(N, 4)``, trained by Keras's ``fit`` on the task's loss."""

    def __init__(self, keras_model: Any, task: str, cam_layer: Optional[str] = None, batch_size: int = 256) -> None:
        super().__init__(keras_model, image=True, batch_size=batch_size)
        self.task = task
        self.cam_layer = cam_layer

    def __deepcopy__(self, memo: dict) -> "KerasDenseNet":
        keras = _keras()
        clone = keras.models.clone_model(self.keras_model)
        clone.set_weights(self.keras_model.get_weights())
        return KerasDenseNet(clone, self.task, self.cam_layer, self.batch_size).train(self.training)

    def with_output(self, output: str) -> Any:
        """The Keras network with a sigmoid on every pixel (``sigmoid``), with the sum of its four
        outputs (``sum``: a fixed Dense layer of ones, no bias, which the engine reads as a linear
        layer), or as it is (``logits``, ``identity``)."""
        keras = _keras()
        m = self.keras_model
        if output in ("logits", "identity"):
            return m
        if output == "sigmoid":
            return keras.Model(m.inputs, keras.layers.Activation("sigmoid", name="sigmoid_output")(m.outputs[0]))
        if output == "sum":
            total = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones", trainable=False, name="box_sum")
            return keras.Model(m.inputs, total(m.outputs[0]))
        raise ValueError(f"unknown output {output!r} for a Keras dense network; choose sigmoid, sum or identity")

    def fit_dense(self, x: Tensor, targets: Tensor, loss: str, epochs: int, batch_size: int, lr: float,
                  weight_decay: float, seed: int, threads: int = 1,
                  progress: Optional[Callable[[int, str, str], Any]] = None) -> "KerasDenseNet":
        """Adam (AdamW with ``weight_decay``) on the task's loss (``experiments.zoo.dense_training``),
        deterministic from ``seed`` on ``threads`` TensorFlow threads, as :meth:`KerasClassifier.fit`."""
        import tensorflow as tf

        from experiments.zoo.dense_training import keras_loss

        keras = _keras()
        tensorflow_threads(threads, required=True)
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        opt = keras.optimizers.Adam(learning_rate=lr) if not weight_decay else \
            keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay)
        self.keras_model.compile(optimizer=opt, loss=keras_loss(self.task, loss))
        y = self.to_keras(targets) if self.task == "binary-segmentation" else targets.numpy()
        steps = epochs * -(-len(x) // batch_size)
        self.keras_model.fit(self.to_keras(x), y, epochs=epochs, batch_size=batch_size, shuffle=True,
                             verbose=0, callbacks=[] if progress is None else
                             [_progress_callback(keras, progress, steps, self.keras_model.name, epochs)])
        return self


def _keras_conv_block(L: Any, x: Any, cout: int, batchnorm: bool, name: str) -> Any:
    for k in (1, 2):
        x = L.Conv2D(cout, 3, padding="same", use_bias=not batchnorm, name=f"{name}_conv{k}")(x)
        if batchnorm:
            x = L.BatchNormalization(name=f"{name}_bn{k}")(x)
        x = L.ReLU(name=f"{name}_relu{k}" if k == 1 else f"{name}_out")(x)
    return x


def keras_unet(in_channels: int, input_size: Sequence[int] = (32, 32), widths: Sequence[int] = (8, 16, 32),
               upsampling: str = "transpose", batchnorm: bool = True) -> KerasDenseNet:
    """``UNet`` in Keras: Conv2D, BatchNormalization, ReLU, MaxPooling2D, Conv2DTranspose (2x2,
    stride 2) and Concatenate; one logit per pixel. Only transposed-convolution upsampling (the
    engine's Keras front end has no UpSampling2D)."""
    widths = _widths("keras_unet", widths, 2)
    if upsampling != "transpose":
        raise ConfigError(f"keras_unet upsampling={upsampling!r} is invalid; choose transpose (the engine's Keras "
                          f"front end has no UpSampling2D)")
    _check_size("keras_unet", input_size, len(widths) - 1)
    keras = _keras()
    keras.utils.set_random_seed(_init_seed())
    L = keras.layers
    h, w = (int(s) for s in input_size)
    inputs = keras.Input((h, w, int(in_channels)))
    x, skips = inputs, []
    for i, c in enumerate(widths):
        x = _keras_conv_block(L, x, c, batchnorm, f"enc{i}")
        if i < len(widths) - 1:
            skips.append(x)
            x = L.MaxPooling2D(2, name=f"pool{i}")(x)
    name = ""
    for j, (c, skip) in enumerate(zip(reversed(widths[:-1]), reversed(skips))):
        x = L.Conv2DTranspose(c, 2, strides=2, name=f"up{j}")(x)
        x = L.Concatenate(name=f"skip{j}")([x, skip])
        name = f"dec{j}"
        x = _keras_conv_block(L, x, c, batchnorm, name)
    outputs = L.Conv2D(1, 1, name="logits")(x)
    return KerasDenseNet(keras.Model(inputs, outputs, name="keras_unet"), "binary-segmentation", f"{name}_out")


def keras_bbox(in_channels: int, input_size: Sequence[int] = (32, 32), channels: Sequence[int] = (16, 32, 64),
               hidden: int = 64) -> KerasDenseNet:
    """``BoxCNN`` in Keras: Conv2D (no bias), BatchNormalization, ReLU, MaxPooling2D blocks, then
    Flatten, Dense + ReLU, Dense(4) with a sigmoid."""
    channels = _widths("keras_bbox", channels, 1)
    _check_size("keras_bbox", input_size, len(channels))
    keras = _keras()
    keras.utils.set_random_seed(_init_seed())
    L = keras.layers
    h, w = (int(s) for s in input_size)
    layers: list[Any] = [keras.Input((h, w, int(in_channels)))]
    for i, c in enumerate(channels):
        layers += [L.Conv2D(c, 3, padding="same", use_bias=False, name=f"conv{i}"), L.BatchNormalization(name=f"bn{i}"),
                   L.ReLU(name=f"relu{i}"), L.MaxPooling2D(2, name=f"pool{i}")]
    layers += [L.Flatten(name="flatten"), L.Dense(int(hidden), activation="relu", name="hidden"),
               L.Dense(4, activation="sigmoid", name="box")]
    return KerasDenseNet(keras.Sequential(layers, name="keras_bbox"), "bbox-regression")


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters of a torch network, or of a wrapped Keras one."""
    keras_model = getattr(model, "keras_model", None)
    if keras_model is not None:
        return int(sum(np.prod(w.shape) for w in keras_model.trainable_weights))
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))
