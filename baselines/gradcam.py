"""GradCAM (Selvaraju et al.) by captum's LayerGradCam, upsampled to the input.

The explained layer is the last convolutional feature map: found automatically as the output of
the last module, in execution order, that yields an (N, C, H, W) map with H*W > 1 after the
last convolution ran (for a ResNet the output of its last residual block, torchvision's
``layer4``; for a plain CNN the last conv/ReLU/pool stage), or named in the config as ``layer``
(a dotted module name, as ``model.named_modules()`` lists it).

The map is one value per pixel, returned as (N, 1, H, W) (``pixel_map``): the class score's
channel-pooled gradient weighs the feature maps; it has no per-input-channel meaning, so any
channel reduction leaves it unchanged. With the ReLU of the paper it is non-negative: unsigned
(``relu_attributions: false`` gives the signed map, and the instance then says ``signed``).

A Keras model (``experiments.zoo.keras_models.KerasClassifier``) gets the same map from its Keras
layers, with the gradient taken by ``tf.GradientTape`` (``layer`` names a Keras layer).

A dense task's head (``baselines.dense_heads``) is Seg-Grad-CAM (Vinogradova et al., 2020): the
gradient of the head's value (for segmentation the summed probabilities of the pixels predicted
foreground, the value every method explains) weighs the feature maps of the layer the network
names as ``cam_layer`` (the U-Net's last decoder block: the network's own last conv map is its
one-channel logit map, which has nothing to weigh), or of ``layer``.
"""
from __future__ import annotations

from typing import Optional

import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import Tensor, nn

from .base import ExplainContext, Explainer, framework_of, leaf_calls
from .vocabulary import check_choice

INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area")


def find_last_conv_map(model: nn.Module, example: Tensor) -> str:
    """The name of the module whose output is the model's last spatial feature map (see module
    docstring), found by one forward pass on ``example``."""
    order = [
        (name, isinstance(module, nn.Conv2d),
         isinstance(out, Tensor) and out.ndim == 4 and out.shape[-1] * out.shape[-2] > 1)
        for name, module, out in leaf_calls(model, example)
    ]  # (name, is conv, is a spatial map)
    last_conv = max((i for i, (_, conv, _) in enumerate(order) if conv), default=None)
    if last_conv is None:
        raise ValueError("gradcam needs a model with a Conv2d layer; this model has none")
    spatial_after = [name for name, _, spatial in order[last_conv:] if spatial]
    return spatial_after[-1] if spatial_after else order[last_conv][0]


def find_last_keras_conv_map(keras_model: object) -> str:
    """The Keras counterpart of :func:`find_last_conv_map`, in the model's layer order."""
    import keras

    layers = list(keras_model.layers)
    convs = [i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.Conv2D)]
    if not convs:
        raise ValueError("gradcam needs a model with a Conv2D layer; this model has none")
    spatial = [layer.name for layer in layers[convs[-1]:]
               if len(layer.output.shape) == 4 and (layer.output.shape[1] or 2) * (layer.output.shape[2] or 2) > 1]
    return spatial[-1] if spatial else layers[convs[-1]].name


def keras_gradcam(model: nn.Module, layer: str, inputs: Tensor, targets: Tensor, output: str,
                  relu: bool) -> Tensor:
    """GradCAM of a wrapped Keras model at its layer ``layer``: (N, 1, h, w) at the layer's size."""
    import keras
    import tensorflow as tf

    dense = getattr(model, "keras_value", None)     # a dense head computes its own value
    explained = model.keras_model if dense is not None else model.with_output(output)
    probe = keras.Model(explained.inputs, [explained.get_layer(layer).output, explained.outputs[0]])
    x = tf.constant(model.to_keras(inputs))
    idx = tf.constant(targets.cpu().numpy()[:, None])
    with tf.GradientTape() as tape:
        acts, out = probe(x, training=False)
        score = dense(out, targets) if dense is not None else tf.gather(out, idx, batch_dims=1)
    grads = tape.gradient(score, acts)                                  # (N, h, w, C)
    cam = tf.reduce_sum(tf.reduce_mean(grads, axis=(1, 2), keepdims=True) * acts, axis=-1)
    cam = torch.from_numpy(cam.numpy()).unsqueeze(1)
    return cam.clamp(min=0) if relu else cam


class GradCAMMethod(Explainer):
    """LayerGradCam on the last conv feature map, with ``relu_attributions`` as in the paper."""

    name = "gradcam"
    signed = False
    modalities = ("image",)
    model_kinds = ("conv",)
    pixel_map = True

    def __init__(self, model: nn.Module, context: ExplainContext, layer: Optional[str] = None,
                 interpolate_mode: str = "bilinear", relu_attributions: bool = True,
                 output: str = "logits") -> None:
        super().__init__(model, context, layer=layer, interpolate_mode=interpolate_mode,
                         relu_attributions=relu_attributions, output=output)
        check_choice("interpolate_mode", interpolate_mode, INTERPOLATIONS)
        if layer is None:   # a network may name the layer GradCAM reads (a dense head passes it on)
            layer = getattr(model, "cam_layer", None)
        self.keras = framework_of(model) == "keras"
        modules = dict(model.named_modules()) if not self.keras else {}
        if self.keras and layer is not None:
            names = [lay.name for lay in model.keras_model.layers]
            if layer not in names:
                raise ValueError(f"gradcam layer {layer!r} is not a layer of the Keras model; layers: {', '.join(names)}")
        elif layer is not None and layer not in modules:
            convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
            raise ValueError(f"gradcam layer {layer!r} is not a module of the model; conv layers: {', '.join(convs)}")
        self.layer_name = layer
        self.interpolate_mode = interpolate_mode
        self.relu_attributions = bool(relu_attributions)
        self.signed = not self.relu_attributions  # without the ReLU the map keeps its sign
        self.output = output
        self._method: Optional[LayerGradCam] = None

    def _build(self, inputs: Tensor) -> LayerGradCam:
        if self._method is None:
            if self.layer_name is None:
                self.layer_name = find_last_conv_map(self.model, inputs[:1])
            layer = dict(self.model.named_modules())[self.layer_name]
            self._method = LayerGradCam(self.forward_fn(self.output), layer)
        return self._method

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        if self.keras:
            if self.layer_name is None:
                self.layer_name = find_last_keras_conv_map(self.model.keras_model)
            cam = keras_gradcam(self.model, self.layer_name, inputs, targets, self.output, self.relu_attributions)
            return LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]),
                                                interpolate_mode=self.interpolate_mode).to(inputs.device)
        cam = self._build(inputs).attribute(inputs.detach().requires_grad_(True), target=targets, relu_attributions=self.relu_attributions)
        return LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode=self.interpolate_mode)
