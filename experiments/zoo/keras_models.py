"""Keras versions of the zoo's MLP and small CNN, seen by the harness as torch modules.

The harness (datasets, methods, metrics) speaks torch: NCHW image tensors, ``model(x) ->
logits``, autograd. :class:`KerasClassifier` gives a Keras model that face: its forward pass
runs Keras (channels-last, batched), and its backward pass is the vector-Jacobian product by
``tf.GradientTape``, so the gradient methods (captum's Saliency, Gradient x Input, Integrated
Gradients, SmoothGrad), shap's and lime's model-agnostic paths and the Quantus metrics run on
the Keras model unchanged, with Keras computing every value and gradient. DLBacktrace and
GradCAM use the Keras model itself (``keras_model``). Training is Keras's own ``fit``,
deterministic from the seed; the weights travel through ``state_dict`` so the training cache
stores them like a torch model's.

Keras (TensorFlow) is imported only when one of these models is built.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn


def _keras() -> Any:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def tensorflow_threads(threads: int, required: bool) -> None:
    """Give TensorFlow's intra- and inter-op pools ``threads`` threads each.

    TensorFlow's CPU kernels split their sums over the intra-op pool (whose default size is the
    machine's core count, whatever torch's threads), so Keras training is made independent of the
    machine and launcher the same way torch training is: a fixed count, ``model.train.threads``.
    TensorFlow takes the count only before it starts (its first op) and keeps it for the whole
    process, so the training cache gives it the training count before it builds a Keras model;
    Keras inference in that process then runs on the same count. ``required``: a count TensorFlow
    can no longer take is an error (a model is about to train) rather than ignored (a model is
    only loaded)."""
    import tensorflow as tf

    from experiments.errors import ConfigError

    pools = tf.config.threading
    if (pools.get_intra_op_parallelism_threads(), pools.get_inter_op_parallelism_threads()) == (threads, threads):
        return
    try:
        pools.set_intra_op_parallelism_threads(threads)
        pools.set_inter_op_parallelism_threads(threads)
    except RuntimeError:   # TensorFlow has started: its pools are fixed for this process
        # only the intra-op count changes results (the inter-op pool runs whole ops, deterministic ones)
        running = _intra_op_threads(pools.get_intra_op_parallelism_threads())
        if running != threads and required:
            raise ConfigError(f"TensorFlow already runs on {running} thread{'s' * (running != 1)} in this process and "
                              f"a Keras model trains with model.train.threads={threads}, which TensorFlow takes only before it "
                              f"starts; train it in a new process (run.py does), or set "
                              f"TF_NUM_INTRAOP_THREADS={threads} before TensorFlow starts") from None


def _intra_op_threads(configured: int) -> int:
    """The intra-op pool TensorFlow started with: the configured size, else ``TF_NUM_INTRAOP_THREADS``,
    else the cores this process may run on (TensorFlow's own order of choice)."""
    import os

    if configured > 0:
        return configured
    env = os.environ.get("TF_NUM_INTRAOP_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class _KerasForward(torch.autograd.Function):
    """Logits from Keras; the input gradient from the tape kept from the same forward pass."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, owner: "KerasClassifier") -> Tensor:
        import tensorflow as tf

        xk = tf.constant(owner.to_keras(x))
        if ctx.needs_input_grad[0]:
            with tf.GradientTape() as tape:
                tape.watch(xk)
                y = owner.keras_model(xk, training=False)
            ctx.tape, ctx.xk, ctx.y, ctx.owner = tape, xk, y, owner
        else:
            y = owner.call_batched(xk)
        return torch.from_numpy(np.array(y, dtype=np.float32)).to(x.device)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        import tensorflow as tf

        g = ctx.tape.gradient(ctx.y, ctx.xk, output_gradients=tf.constant(grad.detach().cpu().numpy()))
        del ctx.tape, ctx.y, ctx.xk
        return ctx.owner.from_keras(np.asarray(g)).to(grad.device), None


class _LayerWeights(nn.Module):
    """One Keras layer's trainable weights as a child module, so that what walks a torch model's
    layers (Quantus's MPRT re-initialises them one by one with ``reset_parameters``) walks the
    Keras model's layers too."""

    def __init__(self, layer: Any) -> None:
        super().__init__()
        self.__dict__["layer"] = layer          # not a submodule: a plain reference

    def reset_parameters(self) -> None:
        """torch's default initialisation (uniform in +-1/sqrt(fan in)), drawn from torch's
        generator so a seeded caller gets the same weights every time."""
        kernels = [w for w in self.layer.trainable_weights if len(w.shape) > 1]
        fan_in = int(np.prod(kernels[0].shape[:-1])) if kernels else 1
        bound = 1.0 / float(np.sqrt(max(fan_in, 1)))
        for w in self.layer.trainable_weights:
            w.assign(((torch.rand(tuple(w.shape)) * 2 - 1) * bound).numpy())


class KerasClassifier(nn.Module):
    """A Keras classifier (logits out) behind torch's module interface; inputs in the harness's
    layout ((N, F) rows or (N, C, H, W) images, moved to Keras's channels-last here)."""

    framework = "keras"

    def __init__(self, keras_model: Any, image: bool, batch_size: int = 256) -> None:
        super().__init__()
        self.keras_model = keras_model
        self.image = image
        self.batch_size = batch_size
        # a parameter-free module has no device; the harness reads it from the first parameter
        self.register_parameter("device_anchor", nn.Parameter(torch.zeros(0), requires_grad=False))
        self.layers = nn.ModuleList(_LayerWeights(layer) for layer in keras_model.layers if layer.trainable_weights)

    def __deepcopy__(self, memo: dict) -> "KerasClassifier":
        """A copy with its own Keras model (same architecture and weights)."""
        keras = _keras()
        clone = keras.models.clone_model(self.keras_model)
        clone.set_weights(self.keras_model.get_weights())
        return KerasClassifier(clone, self.image, self.batch_size).train(self.training)

    # layouts ---------------------------------------------------------------------------------
    def to_keras(self, x: Tensor) -> np.ndarray:
        a = x.detach().cpu().float().numpy()
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1) if self.image and a.ndim == 4 else a)

    def from_keras(self, a: np.ndarray) -> Tensor:
        a = np.asarray(a, dtype=np.float32)
        return torch.from_numpy(np.array(a.transpose(0, 3, 1, 2) if self.image and a.ndim == 4 else a))

    # forward ---------------------------------------------------------------------------------
    def call_batched(self, xk: Any) -> np.ndarray:
        n = int(xk.shape[0])
        if n == 0:
            return np.zeros((0,) + tuple(self.keras_model.output.shape[1:]), dtype=np.float32)
        return np.concatenate([np.asarray(self.keras_model(xk[i:i + self.batch_size], training=False))
                               for i in range(0, n, self.batch_size)])

    def forward(self, x: Tensor) -> Tensor:
        return _KerasForward.apply(x, self)

    def with_output(self, output: str) -> Any:
        """The Keras model itself (``"logits"``) or followed by a softmax (``"softmax"``)."""
        keras = _keras()
        if output == "logits":
            return self.keras_model
        m = self.keras_model
        return keras.Model(m.inputs, keras.layers.Softmax(name="softmax_output")(m.outputs[0]))

    # weights: the training cache stores them as a torch state dict ---------------------------
    def state_dict(self, *args: Any, **kwargs: Any) -> "OrderedDict[str, Tensor]":  # type: ignore[override]
        return OrderedDict((f"{i}:{w.path}", torch.from_numpy(np.array(w.numpy())))
                           for i, w in enumerate(self.keras_model.weights))

    def load_state_dict(self, state: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        weights = self.keras_model.weights
        if len(state) != len(weights):
            raise ValueError(f"expected {len(weights)} Keras weights, got {len(state)}")
        for w, (name, value) in zip(weights, state.items()):
            if tuple(value.shape) != tuple(w.shape):
                raise ValueError(f"weight {name} has shape {tuple(value.shape)}, expected {tuple(w.shape)}")
            w.assign(value.numpy())
        return None

    # training ----------------------------------------------------------------------------------
    def fit(self, x: Tensor, y: Tensor, epochs: int, batch_size: int, lr: float, weight_decay: float,
            seed: int, threads: int = 1, label_smoothing: float = 0.0,
            progress: Optional[Callable[[int, str, str], Any]] = None) -> "KerasClassifier":
        """Adam on the cross-entropy of the logits (with ``label_smoothing`` as in the torch
        training), deterministic from ``seed`` (Keras's seeded initialisation and shuffling,
        TensorFlow's deterministic ops) on ``threads`` TensorFlow threads
        (:func:`tensorflow_threads`). Progress is a bar from ``progress`` (the training cache's
        ``ProgressBar``; none when not given), never Keras's per-epoch lines."""
        import tensorflow as tf

        keras = _keras()
        tensorflow_threads(threads, required=True)
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        opt = keras.optimizers.Adam(learning_rate=lr) if not weight_decay else \
            keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay)
        labels = y.numpy()
        if label_smoothing:   # Keras smooths only one-hot targets (CategoricalCrossentropy)
            classes = int(self.keras_model(self.to_keras(x[:1]), training=False).shape[-1])
            labels = np.eye(classes, dtype=np.float32)[labels]
            loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)
        else:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.keras_model.compile(optimizer=opt, loss=loss)
        steps = epochs * -(-len(x) // batch_size)
        self.keras_model.fit(self.to_keras(x), labels, epochs=epochs, batch_size=batch_size, shuffle=True,
                             verbose=0, callbacks=[] if progress is None else
                             [_progress_callback(keras, progress, steps, self.keras_model.name, epochs)])
        return self


def _progress_callback(keras: Any, bar: Callable[[int, str, str], Any], steps: int, name: str, epochs: int) -> Any:
    """A Keras callback that moves a training bar made by ``bar``."""

    class TrainingBar(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            self.bar = bar(steps, f"training {name}", "step")

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.bar.update(1)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if not self.bar.disable and logs and "loss" in logs:
                self.bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{float(logs['loss']):.3f}", refresh=False)

        def on_train_end(self, logs: Any = None) -> None:
            self.bar.close()

    return TrainingBar()


def _init_seed() -> int:
    """The seed the harness set for building the network (``load_or_train`` seeds torch first)."""
    return int(torch.initial_seed() % (2**31 - 1))


def keras_mlp(in_features: int, num_classes: int, hidden: Sequence[int] = (64, 32),
              activation: str = "relu") -> KerasClassifier:
    """The zoo's MLP (``experiments.zoo.models.MLP``) in Keras: Dense layers, logits out."""
    keras = _keras()
    keras.utils.set_random_seed(_init_seed())
    L = keras.layers
    layers = [keras.Input((int(in_features),))]
    layers += [L.Dense(int(h), activation=activation) for h in hidden]
    layers.append(L.Dense(int(num_classes)))
    return KerasClassifier(keras.Sequential(layers, name="keras_mlp"), image=False)


def keras_cnn(in_channels: int, num_classes: int, input_size: Sequence[int] = (28, 28),
              channels: Sequence[int] = (16, 32), hidden: int = 64) -> KerasClassifier:
    """The zoo's small CNN (``experiments.zoo.models.SmallCNN``) in Keras, channels-last."""
    keras = _keras()
    keras.utils.set_random_seed(_init_seed())
    L = keras.layers
    c1, c2 = (int(c) for c in channels)
    h, w = (int(s) for s in input_size)
    model = keras.Sequential([
        keras.Input((h, w, int(in_channels))),
        L.Conv2D(c1, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(c2, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(int(hidden), activation="relu"), L.Dense(int(num_classes)),
    ], name="keras_cnn")
    return KerasClassifier(model, image=True)


def torch_copy(net: KerasClassifier) -> nn.Module:
    """The zoo's torch network (``MLP`` or ``SmallCNN``) carrying this Keras model's weights: the
    torch version of one trained network, so that the two frameworks can be compared on it.

    Keras kernels are (in, out) and (kh, kw, in, out), torch's (out, in) and (out, in, kh, kw);
    Keras flattens an image channels-last (HWC), torch channels-first (CHW), so the first dense
    layer's rows are reordered."""
    from experiments.zoo.models import MLP, SmallCNN

    weighted = [layer for layer in net.keras_model.layers if layer.weights]
    kinds = [type(layer).__name__ for layer in weighted]
    def t(v: Any) -> Tensor:
        return torch.from_numpy(np.array(v.numpy(), dtype=np.float32))
    if net.image:
        if kinds != ["Conv2D", "Conv2D", "Dense", "Dense"]:
            raise ValueError(f"no torch copy for a Keras image model with layers {kinds}; expected keras_cnn's")
        c1, c2, d1, d2 = weighted
        _, h, w, cin = net.keras_model.input_shape
        tm: nn.Module = SmallCNN(int(cin), int(d2.units), (int(h), int(w)), (c1.filters, c2.filters), int(d1.units))
        hh, ww = int(h) // 4, int(w) // 4
        rows = torch.arange(hh * ww * c2.filters).reshape(hh, ww, c2.filters).permute(2, 0, 1).reshape(-1)
        with torch.no_grad():
            for conv, k in ((tm.features[0], c1), (tm.features[3], c2)):
                conv.weight.copy_(t(k.kernel).permute(3, 2, 0, 1))
                conv.bias.copy_(t(k.bias))
            tm.classifier[1].weight.copy_(t(d1.kernel)[rows].T)
            tm.classifier[1].bias.copy_(t(d1.bias))
            tm.classifier[3].weight.copy_(t(d2.kernel).T)
            tm.classifier[3].bias.copy_(t(d2.bias))
        return tm.eval()
    if set(kinds) != {"Dense"}:
        raise ValueError(f"no torch copy for a Keras tabular model with layers {kinds}; expected keras_mlp's")
    activation = weighted[0].activation.__name__
    tm = MLP(int(weighted[0].kernel.shape[0]), int(weighted[-1].units), [int(d.units) for d in weighted[:-1]],
             activation=activation)
    linears = [m for m in tm.net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin, d in zip(linears, weighted):
            lin.weight.copy_(t(d.kernel).T)
            lin.bias.copy_(t(d.bias))
    return tm.eval()
