"""SHAP baselines, computed by the shap package: KernelSHAP (tabular), PartitionSHAP (images with
a blur masker; tabular with a correlation-clustered Partition masker), GradientSHAP (expected
gradients) and DeepSHAP (DeepLIFT multipliers over a background).

Every background comes from the training inputs in ``context.x_train``, drawn with the run
seed. shap explains all outputs or the top-ranked ones; here each sample's attribution is for its
own target class: the model-agnostic explainers are asked for that output, the torch explainers
see the model restricted to it (:class:`~baselines.base.SelectOutput`). All are signed.

The model-agnostic ones explain the softmax by default (what a user of a black-box classifier
sees), the torch ones the logits; ``output`` in the config chooses.
"""
from __future__ import annotations

import warnings
from typing import Any, Optional, Union

import numpy as np
import shap
import torch
from torch import Tensor, nn

from .text_inputs import TEXT_MASKS, feature_mask, hide_tokens, unpadded
from .base import (
    ExplainContext,
    Explainer,
    SelectOutput,
    group_by_target,
    leaf_calls,
    numpy_predictor,
)
from .vocabulary import check_choice, seeded

KERNEL_BACKGROUNDS = ("kmeans", "sample", "full")


def _train_inputs(context: ExplainContext, method: str) -> Tensor:
    if context.x_train is None:
        raise ValueError(f"method {method!r} needs training inputs for its background (context.x_train); none were given")
    return context.x_train.float().cpu()


def sample_background(context: ExplainContext, size: Optional[int], method: str) -> Tensor:
    """``size`` training inputs drawn without replacement with the run seed (all when ``None``
    or when the training set is smaller)."""
    x = _train_inputs(context, method)
    if size is None or size >= len(x):
        return x
    gen = torch.Generator().manual_seed(context.seed)
    return x[torch.randperm(len(x), generator=gen)[: int(size)]]


def _single_output(values: Union[np.ndarray, list], shape: tuple[int, ...]) -> np.ndarray:
    """shap's torch explainers return (N, ..., 1) or a one-element list for a one-output model."""
    arr = np.asarray(values[0] if isinstance(values, list) else values)
    return arr.reshape(shape)


class ShapKernelMethod(Explainer):
    """KernelSHAP over a background of the training set summarised by k-means (``kmeans``),
    a seeded sample (``sample``) or all of it (``full``); ``nsamples`` model evaluations per
    sample (capped by shap at 2^F - 2, where it enumerates every coalition and is exact).

    ``l1_reg`` is off: shap's default keeps only the 10 strongest features, and the benchmark
    scores every feature."""

    name = "shap_kernel"
    budget_params = ("nsamples",)
    absent_params = ("background", "background_size")
    modalities = ("tabular",)
    deterministic = False

    def __init__(self, model: nn.Module, context: ExplainContext, nsamples: int = 200,
                 background: str = "kmeans", background_size: int = 10,
                 l1_reg: Union[bool, str, float] = False, output: str = "softmax") -> None:
        super().__init__(model, context, nsamples=nsamples, background=background,
                         background_size=background_size, l1_reg=l1_reg, output=output)
        check_choice("shap_kernel background", background, KERNEL_BACKGROUNDS)
        x = _train_inputs(context, self.name).numpy().astype(np.float64)
        if background == "kmeans":
            data = shap.kmeans(x, min(int(background_size), len(x)))
        elif background == "sample":
            data = sample_background(context, background_size, self.name).numpy().astype(np.float64)
        else:
            data = x
        predict = numpy_predictor(self.forward_fn(output), context.device, lambda a: torch.from_numpy(a).float())
        self.nsamples = int(nsamples)
        self.l1_reg = l1_reg
        self.explainer = shap.KernelExplainer(predict, data, link="identity")

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        x = inputs.detach().cpu().numpy().astype(np.float64)
        # KernelExplainer samples coalitions from numpy's global generator: seed it for this call.
        with seeded(self.next_seed()):
            values = self.explainer.shap_values(x, nsamples=self.nsamples, l1_reg=self.l1_reg, silent=True)
        values = np.asarray(values)  # (N, F, n_outputs)
        picked = values[np.arange(len(x)), :, targets.cpu().numpy()]
        return torch.from_numpy(picked).to(inputs.dtype).to(inputs.device)


class FeatureTokens:
    """The tokenizer shap's Text masker is given: it "tokenizes" a string of token ids (the
    feature tokens of one sample, space-separated) back into those ids, and names them with the
    benchmark's WordPiece tokenizer.

    shap's Text masker re-tokenizes the *text* it is given and masks that tokenization; the ids a
    dataset holds need not survive a decode and re-encode (truncation, [UNK], normalisation), and
    [CLS], [SEP] and padding must never be masked. So the masker sees the sample's feature tokens
    themselves: its masks line up with our ids one to one, and its own hierarchy (word pieces
    joined into words, words into phrases at punctuation) is built from their names. No offsets
    are given, so shap names each token by ``convert_ids_to_tokens``, which asks the run's own
    tokenizer (the explain context's ``extras["tokenizer"]``)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, s: str, return_offsets_mapping: bool = False, **_: Any) -> dict[str, list[int]]:
        if return_offsets_mapping:
            raise NotImplementedError  # shap falls back to convert_ids_to_tokens
        return {"input_ids": [int(v) for v in s.split()]}

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens([int(i) for i in ids])


class ShapPartitionMethod(Explainer):
    """PartitionSHAP (Owen values over a feature hierarchy), ``max_evals`` model evaluations per
    sample. Images: pixels are hidden by ``masker`` (``blur(kx,ky)``, ``inpaint_telea``,
    ``inpaint_ns`` or a constant) over shap's pixel hierarchy. Tabular: features are hidden by
    ``background_size`` seeded training rows, grouped by correlation clustering. Text: shap's
    Text masker over the feature tokens (its hierarchy joins word pieces into words and words into
    phrases); a hidden token is replaced by [MASK] (``mask: mask_token``) or removed (``remove``).
    Deterministic."""

    name = "shap_partition"
    budget_params = ("max_evals",)
    modalities = ("tabular", "image", "text")

    def declared(self) -> dict[str, dict[str, Any]]:
        """Images are hidden by the masker; rows take the values of background training rows;
        text tokens are masked or removed."""
        out = super().declared()
        key = {"image": "masker", "text": "mask"}.get(self.context.modality, "background_size")
        out["absent"] = {key: self.params.get(key)}
        return out

    def __init__(self, model: nn.Module, context: ExplainContext, max_evals: int = 500,
                 masker: Union[str, float] = "blur(8,8)", background_size: int = 100,
                 batch_size: int = 100, output: str = "softmax", mask: str = "mask_token") -> None:
        super().__init__(model, context, max_evals=max_evals, masker=masker,
                         background_size=background_size, batch_size=batch_size, output=output, mask=mask)
        check_choice("shap_partition mask", mask, TEXT_MASKS)
        self.max_evals = int(max_evals)
        self.batch_size = int(batch_size)
        self.mask_value = masker
        fwd = self.forward_fn(output)
        if context.modality == "text":
            self.mask = mask
            self.tokenizer = context.extras.get("tokenizer")
            if self.tokenizer is None:
                raise ValueError("shap_partition on text needs the run's tokenizer in its explain context "
                                 "(context.extras['tokenizer']), to name the tokens it groups into words")
            self.predict = numpy_predictor(fwd, context.device, torch.from_numpy, self.batch_size)
            self.tabular_explainer = None
        elif context.modality == "image":
            # shap's image masker wants channels-last arrays
            self.predict = numpy_predictor(fwd, context.device, lambda a: torch.from_numpy(a).float().permute(0, 3, 1, 2))
            self.tabular_explainer = None
        else:
            bg = sample_background(context, background_size, self.name).numpy().astype(np.float64)
            self.predict = numpy_predictor(fwd, context.device, lambda a: torch.from_numpy(a).float())
            masker_obj = shap.maskers.Partition(bg, max_samples=len(bg), clustering="correlation")
            self.tabular_explainer = shap.PartitionExplainer(self.predict, masker_obj)

    def _explain_text(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """One Text masker per sample over its feature tokens (see :class:`FeatureTokens`); the
        masked token ids it returns are put back into the full row, with [CLS], [SEP] and
        padding where they were, before the model is called."""
        model = self.model
        ids = inputs.detach().cpu()
        features = feature_mask(model, ids)
        out = torch.zeros(ids.shape, dtype=torch.float64)
        for i, t in enumerate(targets.tolist()):
            positions = torch.nonzero(features[i]).flatten()
            if len(positions) == 0:
                continue  # nothing to explain: no feature tokens
            row = unpadded(model, ids[i])

            def predict(masked: np.ndarray, row: Tensor = row, positions: Tensor = positions) -> np.ndarray:
                masked = torch.from_numpy(np.asarray(masked, dtype=np.int64)).reshape(-1, len(positions))
                keep = torch.ones((len(masked), len(row)), dtype=torch.bool)
                keep[:, positions] = masked.ne(model.mask_token_id)
                return self.predict(hide_tokens(row.expand(len(masked), -1), keep, self.mask, model.mask_token_id,
                                                model.pad_token_id).numpy())

            masker = shap.maskers.Text(FeatureTokens(self.tokenizer), mask_token=int(model.mask_token_id), output_type="token_ids")
            explainer = shap.PartitionExplainer(predict, masker)
            sentence = " ".join(str(int(v)) for v in row[positions])
            exp = explainer([sentence], max_evals=self.max_evals, batch_size=self.batch_size, outputs=[t], silent=True)
            out[i, positions] = torch.from_numpy(np.asarray(exp.values[0], dtype=np.float64).reshape(len(positions)))
        return out.to(torch.float32).to(inputs.device)

    def _image_explainer(self, shape: tuple[int, int, int]) -> shap.PartitionExplainer:
        value = self.mask_value if isinstance(self.mask_value, str) else float(self.mask_value)
        return shap.PartitionExplainer(self.predict, shap.maskers.Image(value, shape))

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        if self.context.modality == "text":
            return self._explain_text(inputs, targets)
        out = torch.zeros_like(inputs)
        x = inputs.detach().cpu().numpy().astype(np.float64)
        if self.context.modality == "image":
            x = x.transpose(0, 2, 3, 1)
        for i, t in enumerate(targets.tolist()):
            if self.tabular_explainer is None:
                # A fresh masker per image: shap's blur masker caches the blurred image under
                # id() of a temporary view, which a later image's view can reuse.
                explainer = self._image_explainer(x.shape[1:])
            else:
                explainer = self.tabular_explainer
            exp = explainer(x[i : i + 1], max_evals=self.max_evals, batch_size=self.batch_size,
                            outputs=[t], silent=True)
            values = np.asarray(exp.values)[0, ..., 0]
            if self.context.modality == "image":
                values = values.transpose(2, 0, 1)
            out[i] = torch.from_numpy(values).to(out.dtype)
        return out


class ShapGradientMethod(Explainer):
    """GradientSHAP (expected gradients): ``nsamples`` gradients per sample at random points
    between the input and ``background_size`` seeded training inputs; optional Gaussian
    ``local_smoothing``. Stochastic, seeded from the run seed."""

    name = "shap_gradient"
    budget_params = ("nsamples",)
    absent_params = ("background_size",)
    modalities = ("tabular", "image")
    deterministic = False

    def __init__(self, model: nn.Module, context: ExplainContext, nsamples: int = 200,
                 background_size: int = 100, local_smoothing: float = 0.0, batch_size: int = 50,
                 output: str = "logits") -> None:
        super().__init__(model, context, nsamples=nsamples, background_size=background_size,
                         local_smoothing=local_smoothing, batch_size=batch_size, output=output)
        self.background = sample_background(context, background_size, self.name).to(context.device)
        self.fwd = self.forward_fn(output)
        self.nsamples = int(nsamples)
        self.local_smoothing = float(local_smoothing)
        self.batch_size = int(batch_size)

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        out = torch.zeros_like(inputs)
        seed = self.next_seed()
        for cls, idx in group_by_target(targets):
            explainer = shap.GradientExplainer(SelectOutput(self.fwd, cls), self.background,
                                               batch_size=self.batch_size, local_smoothing=self.local_smoothing)
            x = inputs[idx].detach()
            # rseed seeds numpy's global generator (and local smoothing draws from torch's):
            # keep both private to this call.
            with seeded(seed):
                values = explainer.shap_values(x, nsamples=self.nsamples, rseed=seed)
            out[idx] = torch.from_numpy(_single_output(values, tuple(x.shape))).to(out.dtype).to(out.device)
        return out


# Nonlinear activations shap's DeepExplainer has a rule for; any other activation module would
# silently get the plain gradient (shap only warns), so such models are refused.
def _unsupported_activations(model: nn.Module) -> list[str]:
    from shap.explainers._deep.deep_pytorch import op_handler

    return sorted({
        type(m).__name__ for m in model.modules()
        if type(m).__module__ == "torch.nn.modules.activation" and type(m).__name__ not in op_handler
    })


def _reused_leaves(model: nn.Module, example: Tensor) -> list[str]:
    """Leaf modules called more than once in a forward pass: DeepExplainer keeps one input per
    module, so a reused module (one ReLU object applied twice) gets the wrong multipliers."""
    calls: dict[str, int] = {}
    for name, _module, _out in leaf_calls(model, example):
        calls[name] = calls.get(name, 0) + 1
    return sorted(n for n, c in calls.items() if c > 1)


class ShapDeepMethod(Explainer):
    """DeepSHAP: DeepLIFT's rescale rule averaged over ``background_size`` seeded training
    inputs; the attributions of a sample sum to f(x) - E[f(background)] (checked by shap when
    ``check_additivity``). Deterministic for a given background.

    shap's torch implementation is used as is, wrapped narrowly around three of its defects:
    it treats a softmax as an elementwise nonlinearity (so only logits are explained), it keeps
    one stored input per module (so models that call one module twice are refused, as are
    activations it has no rule for), and it leaves its stored tensors registered as parameters
    of modules nested in custom blocks (removed after each call)."""

    name = "shap_deep"
    outputs = ("logits",)
    output_note = "shap's DeepExplainer has no correct softmax rule"
    absent_params = ("background_size",)
    modalities = ("tabular", "image")
    model_kinds = ("mlp", "conv")
    frameworks = ("torch",)   # DeepLIFT's rules hook torch layers; a Keras model is opaque to them
    dense = False             # its rules see the segmentation head's threshold as one more nonlinearity

    def __init__(self, model: nn.Module, context: ExplainContext, background_size: int = 50,
                 check_additivity: bool = True, output: str = "logits") -> None:
        super().__init__(model, context, background_size=background_size,
                         check_additivity=check_additivity, output=output)
        unsupported = _unsupported_activations(model)
        if unsupported:
            raise ValueError(f"shap_deep has no DeepLIFT rule for {', '.join(unsupported)}; use shap_gradient instead")
        self.background = sample_background(context, background_size, self.name).to(context.device)
        self.check_additivity = bool(check_additivity)
        self._checked = False

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        if not self._checked:
            reused = _reused_leaves(self.model, inputs[:1])
            if reused:
                raise ValueError(f"shap_deep cannot explain a model that calls a module twice: {', '.join(reused)}")
            self._checked = True
        out = torch.zeros_like(inputs)
        before = {id(m): set(m._parameters) for m in self.model.modules()}
        try:
            for cls, idx in group_by_target(targets):
                explainer = shap.DeepExplainer(SelectOutput(self.model, cls), self.background)
                x = inputs[idx].detach()
                with warnings.catch_warnings():
                    # shap warns for every module type it has no entry for (empty Sequential
                    # shortcuts, custom linear layers); nonlinear ones were refused above, and
                    # the gradient it passes through is right for the rest.
                    warnings.filterwarnings("ignore", message="unrecognized nn.Module")
                    values = explainer.shap_values(x, check_additivity=self.check_additivity)
                out[idx] = torch.from_numpy(_single_output(values, tuple(x.shape))).to(out.dtype).to(out.device)
        finally:
            for m in self.model.modules():
                for key in set(m._parameters) - before.get(id(m), set()):
                    del m._parameters[key]
        return out
