"""The Keras front end against its oracle: the same network written in torch.

Each case builds a Keras model and the torch network a torch user would write for it
(channels-first, explicit padding, its own flattening order), with the Keras weights copied
over. Checks: the front end's torch mirror computes Keras's own output; the torch network
computes it too (so the copy is right); and ``explain`` on the Keras model gives the torch
network's relevance (moved to channels-last) to 1e-5, in both modes. Then the refusals.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow", reason="tensorflow is not installed (make test installs the 'tf' extra)")
keras = pytest.importorskip("keras", reason="keras is not installed (make test installs the 'tf' extra)")

from backtrace import Backtrace, UnsupportedOperation, explain  # noqa: E402
from backtrace.frontends.keras import to_torch  # noqa: E402
from tests.backtrace.conftest import rel_err  # noqa: E402

L = keras.layers
TOL = 1e-5
MODES = ("default", "contrastive")


# --- copying Keras weights into torch modules ---------------------------------------------------

def _t(v) -> torch.Tensor:
    return torch.from_numpy(np.array(keras.ops.convert_to_numpy(v), dtype=np.float32))


def linear(layer, rows=None) -> nn.Linear:
    """A Dense layer as nn.Linear; ``rows`` reorders the kernel's input rows (flatten order)."""
    k = _t(layer.kernel)
    if rows is not None:
        k = k[rows]
    mod = nn.Linear(k.shape[0], k.shape[1], bias=layer.use_bias)
    with torch.no_grad():
        mod.weight.copy_(k.T)
        if layer.use_bias:
            mod.bias.copy_(_t(layer.bias))
    return mod


def conv(layer, **kw) -> nn.Module:
    k = _t(layer.kernel)                                     # (*k, in / groups, out)
    dims = k.dim() - 2
    groups = kw.pop("groups", 1)
    cls = nn.Conv1d if dims == 1 else nn.Conv2d
    mod = cls(k.shape[-2] * groups, k.shape[-1], tuple(k.shape[:dims]), groups=groups, bias=layer.use_bias, **kw)
    with torch.no_grad():
        mod.weight.copy_(k.permute(dims + 1, dims, *range(dims)))
        if layer.use_bias:
            mod.bias.copy_(_t(layer.bias))
    return mod


def conv_t(layer, **kw) -> nn.Module:
    k = _t(layer.kernel)                                     # (*k, out, in)
    dims = k.dim() - 2
    cls = nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d
    mod = cls(k.shape[-1], k.shape[-2], tuple(k.shape[:dims]), bias=layer.use_bias, **kw)
    with torch.no_grad():
        mod.weight.copy_(k.permute(dims + 1, dims, *range(dims)))
        if layer.use_bias:
            mod.bias.copy_(_t(layer.bias))
    return mod


def batch_norm(layer, dims: int) -> nn.Module:
    mod = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(layer.moving_mean.shape[0], eps=layer.epsilon)
    with torch.no_grad():
        mod.running_mean.copy_(_t(layer.moving_mean))
        mod.running_var.copy_(_t(layer.moving_variance))
        mod.weight.copy_(_t(layer.gamma))
        mod.bias.copy_(_t(layer.beta))
    return mod.eval()


def flatten_rows(spatial: tuple[int, ...], channels: int) -> torch.Tensor:
    """Row order that makes a Dense kernel (Keras flattens (*spatial, C)) read torch's (C, *spatial)."""
    idx = torch.arange(int(np.prod(spatial)) * channels).reshape(*spatial, channels)
    return idx.permute(-1, *range(len(spatial))).reshape(-1)


def randomise_batch_norms(model) -> None:
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(size=n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=n).astype("float32"))
            layer.gamma.assign(rng.normal(1.0, 0.3, size=n).astype("float32"))
            layer.beta.assign(rng.normal(size=n).astype("float32"))


# --- the oracle -------------------------------------------------------------------------------

def _channels_first(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x)
    return t.permute(0, t.dim() - 1, *range(1, t.dim() - 1)).contiguous() if t.dim() > 2 else t


def _channels_last(r: torch.Tensor) -> np.ndarray:
    return (r.permute(0, *range(2, r.dim()), 1) if r.dim() > 2 else r).numpy()


def check(kmodel, tmodel: nn.Module, x: np.ndarray, layout: str = "channels_last", **options) -> float:
    """Worst relative error of the Keras model's relevance against the torch network's."""
    expected = keras.ops.convert_to_numpy(kmodel(x))
    mirror = to_torch(kmodel)
    torch_in = torch.from_numpy(x).float() if x.dtype.kind == "f" else torch.from_numpy(x).long()
    with torch.no_grad():
        np.testing.assert_allclose(mirror(torch_in).numpy(), expected, rtol=1e-4, atol=1e-5)
    xt = _channels_first(x) if layout == "channels_last" else torch_in
    tmodel = tmodel.eval()
    with torch.no_grad():
        out_t = tmodel(xt)
    out_t = _channels_last(out_t) if layout == "channels_last" and out_t.dim() > 2 else out_t.numpy()
    np.testing.assert_allclose(out_t, expected, rtol=1e-4, atol=1e-5)
    worst = 0.0
    for mode in MODES:
        rk = explain(kmodel, x, mode=mode, **options)
        rt = explain(tmodel, xt, mode=mode, **options)
        pairs = zip(rk, rt) if mode == "contrastive" else [(rk, rt)]
        for a, b in pairs:
            assert isinstance(a, np.ndarray) and a.shape == x.shape
            b = _channels_last(b) if layout == "channels_last" else b.numpy()
            assert np.abs(b).max() > 0
            worst = max(worst, rel_err(torch.from_numpy(a), torch.from_numpy(b)))
    assert worst < TOL, worst
    return worst


@pytest.fixture(autouse=True)
def _keras_seed():
    keras.utils.set_random_seed(0)


def _x(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


# --- cases ------------------------------------------------------------------------------------

def test_mlp_sequential_with_activations_dropout_and_unfolded_batchnorm():
    km = keras.Sequential([keras.Input((11,)), L.Dense(7, activation="relu"), L.Dropout(0.3),
                           L.Dense(6, activation="tanh"), L.BatchNormalization(), L.Dense(5), L.Activation("sigmoid"),
                           L.Dense(4), L.LeakyReLU(0.1), L.Dense(4), L.ELU(), L.Dense(4, activation="gelu"),
                           L.Dense(3), L.Softmax()])
    randomise_batch_norms(km)
    d = [layer for layer in km.layers if isinstance(layer, L.Dense)]
    bn = [layer for layer in km.layers if isinstance(layer, L.BatchNormalization)][0]
    tm = nn.Sequential(linear(d[0]), nn.ReLU(), nn.Dropout(), linear(d[1]), nn.Tanh(), batch_norm(bn, 1),
                       linear(d[2]), nn.Sigmoid(), linear(d[3]), nn.LeakyReLU(0.1), linear(d[4]), nn.ELU(),
                       linear(d[5]), nn.GELU(), linear(d[6]), nn.Softmax(-1))
    check(km, tm, _x(6, 11), layout="features")


class _Cnn(nn.Module):
    def __init__(self, km) -> None:
        super().__init__()
        c1, c2, bn, dense = (km.get_layer(n) for n in ("c1", "c2", "bn", "dense"))
        self.pad = nn.ZeroPad2d((0, 1, 1, 1))               # 'same', stride (2, 1), kernel (3, 2)
        self.c1 = conv(c1, stride=(2, 1))
        self.c2 = conv(c2, dilation=2, groups=2)
        self.bn = batch_norm(bn, 2)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)        # 'same' on 3 x 7
        self.avg = nn.AvgPool2d((1, 2), stride=1)
        self.fc = linear(dense, rows=flatten_rows((2, 3), 6))

    def forward(self, x):
        x = F.relu(self.c1(self.pad(x)))
        x = F.relu(self.bn(self.c2(x)))
        x = self.avg(self.pool(x))
        return torch.softmax(self.fc(torch.flatten(x, 1)), dim=-1)


def test_cnn_strides_same_padding_dilation_groups_folded_batchnorm_and_flatten_order():
    inp = keras.Input((13, 11, 3))
    x = L.Conv2D(4, (3, 2), strides=(2, 1), padding="same", activation="relu", name="c1")(inp)
    x = L.Conv2D(6, 3, dilation_rate=2, groups=2, name="c2")(x)
    x = L.ReLU()(L.BatchNormalization(name="bn")(x))
    x = L.AveragePooling2D((1, 2), strides=1)(L.MaxPooling2D(2, padding="same")(x))
    km = keras.Model(inp, L.Dense(5, activation="softmax", name="dense")(L.Flatten()(x)))
    randomise_batch_norms(km)
    check(km, _Cnn(km), _x(4, 13, 11, 3))
    assert "bn" not in [n.name for n in Backtrace(km).graph.nodes]          # folded into c2


class _Residual(nn.Module):
    def __init__(self, km) -> None:
        super().__init__()
        self.a = conv(km.get_layer("a"), padding=1)
        self.b = conv(km.get_layer("b"))
        self.pad = nn.ZeroPad2d((0, 2, 1, 0))
        self.pool = nn.AvgPool2d(3, stride=2, padding=(1, 0), ceil_mode=True, count_include_pad=False)
        self.gap, self.gmp = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)
        self.fc = linear(km.get_layer("dense"))

    def forward(self, x):
        a = F.relu(self.a(x))
        s = a + self.b(x)
        c = torch.cat([s, a], dim=1)
        m = c * torch.sigmoid(c)
        p = self.pool(self.pad(m))
        h = torch.cat([self.gap(p).flatten(1), self.gmp(p).flatten(1)], dim=1)
        return torch.softmax(self.fc(h), dim=-1)


def test_functional_residual_add_concatenate_multiply_padding_and_global_pools():
    inp = keras.Input((8, 10, 3))
    a = L.ReLU()(L.Conv2D(4, 3, padding="same", name="a")(inp))
    s = L.Add()([a, L.Conv2D(4, 1, name="b")(inp)])
    c = L.Concatenate()([s, a])
    m = L.Multiply()([c, L.Activation("sigmoid")(c)])
    p = L.AveragePooling2D(3, strides=2, padding="same")(L.ZeroPadding2D(((1, 0), (0, 2)))(m))
    h = L.Concatenate()([L.GlobalAveragePooling2D()(p), L.GlobalMaxPooling2D()(p)])
    km = keras.Model(inp, L.Dense(4, activation="softmax", name="dense")(h))
    check(km, _Residual(km), _x(3, 8, 10, 3))


class _Conv1d(nn.Module):
    def __init__(self, km) -> None:
        super().__init__()
        self.c1 = conv(km.get_layer("c1"), stride=2)
        self.c2 = conv(km.get_layer("c2"), dilation=2)
        ln = km.get_layer("ln")
        self.ln = nn.LayerNorm(5, eps=ln.epsilon)
        with torch.no_grad():
            self.ln.weight.copy_(_t(ln.gamma))
            self.ln.bias.copy_(_t(ln.beta))
        self.pool = nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True)
        self.avg = nn.AvgPool1d(2)
        self.fc = linear(km.get_layer("dense"))

    def forward(self, x):
        x = F.gelu(self.c1(F.pad(x, (1, 2))))                 # 'same', stride 2, kernel 4 on 15
        x = torch.tanh(self.c2(F.pad(x, (4, 0))))              # causal, dilation 2
        x = self.avg(self.pool(F.pad(x, (2, 1))))
        x = self.ln(x.permute(0, 2, 1)).permute(0, 2, 1)
        h = torch.cat([x.mean(dim=2), F.adaptive_max_pool1d(x, 1).flatten(1)], dim=1)
        return torch.softmax(self.fc(h), dim=-1)


def test_conv1d_same_causal_pools_zero_padding_and_layer_norm():
    inp = keras.Input((15, 3))
    x = L.Conv1D(5, 4, strides=2, padding="same", activation="gelu", name="c1")(inp)
    x = L.Conv1D(5, 3, padding="causal", dilation_rate=2, activation="tanh", name="c2")(x)
    x = L.AveragePooling1D(2)(L.MaxPooling1D(3, strides=2, padding="same")(L.ZeroPadding1D((2, 1))(x)))
    x = L.LayerNormalization(name="ln")(x)
    h = L.Concatenate()([L.GlobalAveragePooling1D()(x), L.GlobalMaxPooling1D()(x)])
    km = keras.Model(inp, L.Dense(3, activation="softmax", name="dense")(h))
    for w in km.get_layer("ln").weights:                       # not the identity
        w.assign(np.random.default_rng(2).normal(size=w.shape).astype("float32"))
    check(km, _Conv1d(km), _x(4, 15, 3))


class _Decoder(nn.Module):
    def __init__(self, km) -> None:
        super().__init__()
        self.t1 = conv_t(km.get_layer("t1"), stride=2)
        self.t2 = conv_t(km.get_layer("t2"), padding=1)
        self.t3 = conv_t(km.get_layer("t3"), stride=3, output_padding=1)

    def forward(self, x):
        x = F.relu(self.t1(x)[:, :, :-1, :])                     # 'same': the odd crop falls after
        x = self.t2(x)[:, :, :-1, :-1]
        return torch.sigmoid(self.t3(x))


def test_conv2d_transpose_same_and_valid_for_binary_segmentation():
    inp = keras.Input((6, 5, 2))
    x = L.Conv2DTranspose(3, (3, 2), strides=2, padding="same", activation="relu", name="t1")(inp)
    x = L.Conv2DTranspose(2, 4, padding="same", name="t2")(x)
    km = keras.Model(inp, L.Conv2DTranspose(1, 2, strides=3, activation="sigmoid", name="t3")(x))
    check(km, _Decoder(km), _x(3, 6, 5, 2), task="binary-segmentation")


class _Conv1dT(nn.Module):
    def __init__(self, km) -> None:
        super().__init__()
        self.t = conv_t(km.get_layer("t"), stride=2)
        self.fc = linear(km.get_layer("dense"), rows=flatten_rows((15,), 4))

    def forward(self, x):
        return torch.sigmoid(self.fc(torch.flatten(F.relu(self.t(x)), 1)))


def test_conv1d_transpose_for_binary_classification():
    inp = keras.Input((7, 3))
    x = L.Conv1DTranspose(4, 3, strides=2, activation="relu", name="t")(inp)
    km = keras.Model(inp, L.Dense(1, activation="sigmoid", name="dense")(L.Flatten()(x)))
    check(km, _Conv1dT(km), _x(5, 7, 3), task="binary-classification")


def _lstm(layer) -> nn.LSTM:
    cell = layer.cell
    k, r, b = _t(cell.kernel), _t(cell.recurrent_kernel), _t(cell.bias)
    mod = nn.LSTM(k.shape[0], r.shape[0], batch_first=True)
    with torch.no_grad():
        mod.weight_ih_l0.copy_(k.T)
        mod.weight_hh_l0.copy_(r.T)
        mod.bias_ih_l0.copy_(b)
        mod.bias_hh_l0.zero_()
    return mod


class _Text(nn.Module):
    def __init__(self, km) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 5)
        with torch.no_grad():
            self.emb.weight.copy_(_t(km.get_layer("emb").embeddings))
        self.l1, self.l2 = _lstm(km.get_layer("l1")), _lstm(km.get_layer("l2"))
        self.fc = linear(km.get_layer("dense"))

    def forward(self, x):
        h = self.l1(self.emb(x))[0]
        h = self.l2(h)[0][:, -1]
        return torch.softmax(self.fc(h), dim=-1)


def test_embedding_and_stacked_lstm():
    inp = keras.Input((6,), dtype="int32")
    x = L.LSTM(4, return_sequences=True, name="l1")(L.Embedding(20, 5, name="emb")(inp))
    km = keras.Model(inp, L.Dense(2, activation="softmax", name="dense")(L.LSTM(3, name="l2")(x)))
    tokens = np.random.default_rng(3).integers(0, 20, size=(4, 6)).astype("int32")
    check(km, _Text(km), tokens, layout="tokens")


class _Shapes(nn.Module):
    def __init__(self, km) -> None:
        super().__init__()
        self.d1, self.d2 = linear(km.get_layer("d1")), linear(km.get_layer("d2"))

    def forward(self, x):
        x = x.reshape(-1, 3, 8).permute(0, 2, 1)
        return self.d2(torch.flatten(F.relu(self.d1(x)), 1))


def test_reshape_permute_and_dense_on_the_last_axis_for_bbox_regression():
    inp = keras.Input((4, 6))
    x = L.Permute((2, 1))(L.Reshape((3, 8))(inp))
    x = L.Flatten()(L.Dense(5, activation="relu", name="d1")(x))
    km = keras.Model(inp, L.Dense(4, name="d2")(x))
    check(km, _Shapes(km), _x(3, 4, 6), layout="features", task="bbox-regression")


class _Nested(nn.Module):
    def __init__(self, km) -> None:
        super().__init__()
        block = km.get_layer("block")
        self.b1, self.b2 = linear(block.layers[0]), linear(block.layers[1])
        self.shared, self.out = linear(km.get_layer("shared")), linear(km.get_layer("out"))

    def forward(self, x):
        x = self.b2(F.relu(self.b1(x)))
        x = self.shared(torch.tanh(self.shared(x)))
        return torch.softmax(self.out(torch.tanh(x)), dim=-1)


def test_nested_sequential_and_a_shared_layer():
    block = keras.Sequential([keras.Input((10,)), L.Dense(8, activation="relu"), L.Dense(10)], name="block")
    shared = L.Dense(10, activation="tanh", name="shared")
    inp = keras.Input((10,))
    km = keras.Model(inp, L.Dense(3, activation="softmax", name="out")(shared(shared(block(inp)))))
    check(km, _Nested(km), _x(5, 10), layout="features")


# --- the API on Keras models ---------------------------------------------------------------------

def _small_cnn():
    return keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(3, 3, activation="relu"), L.Flatten(),
                             L.Dense(4, activation="softmax")])


def test_tf_tensors_give_the_numpy_result_and_weight_changes_are_seen():
    km, x = _small_cnn(), _x(2, 6, 6, 2)
    r = explain(km, x)
    np.testing.assert_array_equal(explain(km, tf.constant(x)), r)
    rp, rn = explain(km, tf.constant(x), mode="contrastive", target=1)
    assert rp.shape == rn.shape == x.shape
    km.layers[-1].kernel.assign(km.layers[-1].kernel * 2.0)
    assert not np.allclose(explain(km, x), r)                    # the cached trace was rebuilt


def test_keras_front_end_is_chosen_by_model_type_and_keeps_the_engine_options():
    km, x = _small_cnn(), _x(3, 6, 6, 2)
    bt = Backtrace(km)
    assert bt.frontend == "keras" and Backtrace(km, frontend="keras").frontend == "keras"
    r, ratio = explain(km, x, return_conservation=True)
    assert isinstance(r, np.ndarray) and isinstance(ratio, np.ndarray) and ratio.shape == (3,)
    total = explain(km, x, multiplier=1.0).reshape(3, -1).sum(1)
    out = km(x, training=False).numpy()
    np.testing.assert_allclose(ratio, total / out.max(1), rtol=1e-4)     # kept over the seed
    every = explain(km, x, return_all=True)
    assert list(every) == [n.name for n in bt.graph.nodes if n.kind == "input"]
    np.testing.assert_array_equal(next(iter(every.values())), r)
    with pytest.raises(ValueError, match=r"frontend 'fx' is for PyTorch models.*auto, keras"):
        Backtrace(km, frontend="fx")
    with pytest.raises(ValueError, match=r"frontend 'keras' is for Keras models, not Sequential"):
        Backtrace(nn.Sequential(nn.Linear(3, 2)), frontend="keras")


def test_unsupported_layers_and_arguments_are_named():
    inp = keras.Input((8, 8, 2))
    km = keras.Model(inp, L.Flatten()(L.UpSampling2D(name="up")(inp)))
    with pytest.raises(UnsupportedOperation, match=r"'up'.*UpSampling2D.*no mapping"):
        Backtrace(km)
    km = keras.Sequential([keras.Input((4,)), L.Dense(3, activation="selu", name="d")])
    with pytest.raises(UnsupportedOperation, match=r"'d'.*activation 'selu'"):
        explain(km, _x(1, 4))
    km = keras.Sequential([keras.Input((5,), dtype="int32"), L.Embedding(9, 3, mask_zero=True, name="e"),
                           L.LSTM(2)])
    with pytest.raises(UnsupportedOperation, match=r"'e'.*mask_zero"):
        Backtrace(km)
    km = keras.Sequential([keras.Input((5, 3)), L.LSTM(2, go_backwards=True, name="rnn")])
    with pytest.raises(UnsupportedOperation, match=r"'rnn'.*go_backwards"):
        Backtrace(km)
    inp = keras.Input((4,))
    km = keras.Model(inp, [L.Dense(2)(inp), L.Dense(3)(inp)])
    with pytest.raises(UnsupportedOperation, match="one output; it has 2"):
        Backtrace(km)

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)
    sub = Sub()
    sub(np.zeros((1, 3), "float32"))
    with pytest.raises(UnsupportedOperation, match="subclassed"):
        Backtrace(sub)


def test_importing_backtrace_for_torch_does_not_import_tensorflow():
    code = ("import sys, torch; from backtrace import explain; "
            "explain(torch.nn.Sequential(torch.nn.Linear(3, 2)), torch.randn(2, 3)); "
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
            "assert not bad, bad")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=120)


_TORCH_ACTIVATIONS = {"relu6": nn.ReLU6(), "softplus": nn.Softplus(), "mish": nn.Mish(), "silu": nn.SiLU(),
                      "swish": nn.SiLU(), "hard_sigmoid": nn.Hardsigmoid(), "hard_silu": nn.Hardswish(),
                      "leaky_relu": nn.LeakyReLU(0.2), "elu": nn.ELU(), "sigmoid": nn.Sigmoid()}


class _Merge(nn.Module):
    def __init__(self, km, act: nn.Module) -> None:
        super().__init__()
        self.a, self.b, self.out = (linear(km.get_layer(n)) for n in ("a", "b", "out"))
        self.act, self.drop = act, nn.Dropout()

    def forward(self, x):
        d = self.act(self.a(x)) - F.relu6(self.b(x))
        return torch.softmax(self.out(self.drop(d)), dim=-1)


@pytest.mark.parametrize("name", sorted(_TORCH_ACTIVATIONS))
def test_activation_arguments_subtract_relu6_and_noise_layers(name):
    inp = keras.Input((9,))
    a = L.Dense(6, activation=name, name="a")(inp)
    b = L.ReLU(max_value=6.0)(L.Dense(6, name="b")(inp))
    d = L.GaussianNoise(0.5)(L.SpatialDropout1D(0.5)(L.Reshape((1, 6))(L.Subtract()([a, b]))))
    d = L.GaussianDropout(0.3)(L.Flatten()(d))
    km = keras.Model(inp, L.Dense(3, activation="softmax", name="out")(d))
    check(km, _Merge(km, _TORCH_ACTIVATIONS[name]), _x(4, 9) * 3, layout="features")
