"""LIME (Ribeiro et al.) by the lime package: a weighted linear surrogate fitted to the model's
outputs on perturbed copies of each input.

Tabular: LimeTabularExplainer over the training inputs, with every feature in the surrogate
(lime's default keeps 10; feature selection is off, as all features are kept anyway). Images: LimeImageExplainer over superpixels from a configurable
scikit-image segmentation; the returned map gives each pixel its superpixel's weight, one map per
pixel, (N, 1, H, W). Text: LimeTextExplainer with the token positions as features (one
placeholder word per feature token, ``bow=False`` so that each position is its own feature); a
hidden token is replaced by [MASK] or removed (``mask``). All are signed and seeded from the run
seed.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Optional
from unittest import mock

import numpy as np
import torch
from lime import lime_image
from lime.lime_tabular import LimeTabularExplainer
from lime.lime_text import LimeTextExplainer
from lime.wrappers.scikit_image import SegmentationAlgorithm
from torch import Tensor, nn
from tqdm.auto import tqdm

from .base import ExplainContext, Explainer, numpy_predictor
from .vocabulary import check_choice, sample_seed
from .text_inputs import TEXT_MASKS, feature_mask, hide_tokens, unpadded

SEGMENTATIONS = ("quickshift", "slic", "felzenszwalb")
HIDDEN_WORD = "UNKWORDZ"  # lime's own default mask string, stated: text perturbations are parsed back by it
DISCRETIZERS = ("quartile", "decile", "entropy")
SEGMENTATION_DEFAULTS: dict[str, dict[str, Any]] = {  # quickshift: lime's own defaults
    "quickshift": {"kernel_size": 4, "max_dist": 200, "ratio": 0.2},
    "slic": {"n_segments": 50, "compactness": 10.0, "start_label": 0},
    "felzenszwalb": {"scale": 100.0, "sigma": 0.5, "min_size": 10},
}


def _rescaled(segment: SegmentationAlgorithm, image: np.ndarray) -> np.ndarray:
    """Segment a [0, 1]-rescaled copy: scikit-image's segmenters (quickshift's Lab conversion in
    particular) assume that range, while model inputs are often standardised."""
    lo, hi = float(image.min()), float(image.max())
    return segment((image - lo) / (hi - lo) if hi > lo else np.zeros_like(image))


class LimeMethod(Explainer):
    """LIME with ``num_samples`` perturbations per sample.

    Tabular: ``discretize`` (lime's default, quartile bins) explains bin membership; with
    ``discretize: false`` the surrogate is linear in the standardised features. Images:
    ``segmentation`` is quickshift, slic or felzenszwalb with ``segmentation_params``; hidden
    superpixels take ``hide_color``: a number (the configs use 0, the value the faithfulness metrics
remove pixels to on these [0, 1] images), or null for lime's default, each superpixel's own mean
colour, which on small grey images hides almost nothing and leaves the surrogate little to fit.
    Grayscale images are shown to lime as RGB copies and read back from one channel. Text: each
    feature token's position is a feature; a hidden token is replaced by [MASK] (``mask:
    mask_token``) or removed (``remove``); lime's text kernel width (25) unless ``kernel_width``."""

    name = "lime"
    modalities = ("tabular", "image", "text")
    deterministic = False
    pixel_map = True  # images only: one weight per superpixel, (N, 1, H, W)
    budget_params = ("num_samples",)

    def declared(self) -> dict[str, dict[str, Any]]:
        """Images: hidden superpixels take ``hide_color``; rows: lime resamples hidden features from
        the training data's distribution (binned by ``discretizer`` when ``discretize``)."""
        out = super().declared()
        if self.context.modality == "text":
            out["absent"] = {"mask": self.params["mask"]}
        elif self.context.modality == "image":
            out["absent"] = {"hide_color": "superpixel mean" if self.hide_color is None else self.hide_color}
        else:
            out["absent"] = {"training_distribution": self.params["discretizer"] if self.params["discretize"]
                             else "normal(mean, std)"}
        return out

    def __init__(self, model: nn.Module, context: ExplainContext, num_samples: int = 1000,
                 discretize: bool = True, discretizer: str = "quartile",
                 segmentation: str = "slic", segmentation_params: Optional[dict[str, Any]] = None,
                 hide_color: Optional[float] = None, batch_size: int = 100, kernel_width: Optional[float] = None,
                 output: str = "softmax", mask: str = "mask_token") -> None:
        super().__init__(model, context, num_samples=num_samples, discretize=discretize, discretizer=discretizer,
                         segmentation=segmentation, segmentation_params=segmentation_params,
                         hide_color=hide_color, batch_size=batch_size, kernel_width=kernel_width, output=output,
                         mask=mask)
        check_choice("lime mask", mask, TEXT_MASKS)
        check_choice("lime segmentation", segmentation, SEGMENTATIONS)
        check_choice("lime discretizer", discretizer, DISCRETIZERS)
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.hide_color = hide_color
        fwd = self.forward_fn(output)
        # lime draws every perturbation from this one generator (its explainers and discretizer hold
        # it). It is reseeded for each sample from the run seed and the sample (_reseed), so a
        # sample's map does not depend on what was explained before it: the same in a run of 16
        # samples as in one of 143, and in a metric's re-explanation of it as in the run's own.
        self.random_state = np.random.RandomState(context.seed % 2**32)
        if context.modality == "text":
            self.mask = mask
            self.predict_ids = numpy_predictor(fwd, context.device, torch.from_numpy, self.batch_size)
            self.text = LimeTextExplainer(kernel_width=kernel_width or 25, feature_selection="none", bow=False,
                                          split_expression=r"\s", mask_string=HIDDEN_WORD,
                                          random_state=self.random_state)
        elif context.modality == "tabular":
            if context.x_train is None:
                raise ValueError("lime on tabular data needs training inputs (context.x_train); none were given")
            x_train = context.x_train.float().cpu().numpy().astype(np.float64)
            self.predict = numpy_predictor(fwd, context.device, lambda a: torch.from_numpy(a).float())
            self.tabular = LimeTabularExplainer(
                x_train, mode="classification", feature_names=context.feature_names,
                discretize_continuous=bool(discretize), discretizer=discretizer,
                kernel_width=kernel_width, feature_selection="none", random_state=self.random_state,
            )
        else:
            params = {**SEGMENTATION_DEFAULTS[segmentation], **(self.params["segmentation_params"] or {})}
            self.segment = partial(_rescaled, SegmentationAlgorithm(segmentation, **params))
            self.image = lime_image.LimeImageExplainer(kernel_width=kernel_width or 0.25, feature_selection="none",
                                                       random_state=self.random_state)
            self.predict_images = numpy_predictor(fwd, context.device, self._to_model_layout, self.batch_size)

    def _to_model_layout(self, images: np.ndarray) -> Tensor:
        """lime's (n, H, W, 3) batches -> the model's (n, C, H, W)."""
        x = torch.from_numpy(images).float().permute(0, 3, 1, 2)
        return x[:, :1] if self._channels == 1 else x

    def _reseed(self, x: Any, target: int) -> None:
        self.random_state.seed(sample_seed(self.context.seed, x, np.int64(target)))

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        if self.context.modality == "text":
            return self._explain_text(inputs, targets)
        if self.context.modality == "tabular":
            return self._explain_tabular(inputs, targets)
        return self._explain_images(inputs, targets)

    def _explain_text(self, inputs: Tensor, targets: Tensor) -> Tensor:
        """lime sees a sentence of placeholder words ``t0 t1 ...``, one per feature token; its
        perturbed copies (hidden words replaced by :data:`HIDDEN_WORD`) are turned back into
        token ids with those features hidden, and the model is called on the ids."""
        ids = inputs.detach().cpu()
        features = feature_mask(self.model, ids)
        out = torch.zeros(ids.shape, dtype=torch.float64)
        for i, t in enumerate(targets.tolist()):
            positions = torch.nonzero(features[i]).flatten()
            if len(positions) == 0:
                continue  # nothing to explain: no feature tokens
            self._reseed(ids[i], t)
            sentence = " ".join(f"t{k}" for k in range(len(positions)))
            classify = partial(self._classify, unpadded(self.model, ids[i]), positions)
            exp = self.text.explain_instance(sentence, classify, labels=(t,), num_features=len(positions),
                                             num_samples=self.num_samples)
            for feature, weight in exp.local_exp[t]:
                out[i, positions[feature]] = weight
        return out.to(torch.float32).to(inputs.device)

    def _classify(self, row: Tensor, positions: Tensor, sentences: list[str]) -> np.ndarray:
        kept = torch.tensor([[word != HIDDEN_WORD for word in s.split(" ")] for s in sentences], dtype=torch.bool)
        if kept.shape[1] != len(positions):
            raise RuntimeError(f"lime returned sentences of {kept.shape[1]} words for {len(positions)} features")
        keep = torch.ones((len(sentences), len(row)), dtype=torch.bool)
        keep[:, positions] = kept
        model = self.model
        rows = hide_tokens(row.expand(len(sentences), -1), keep, self.mask, model.mask_token_id, model.pad_token_id)
        return self.predict_ids(rows.numpy())

    def _explain_tabular(self, inputs: Tensor, targets: Tensor) -> Tensor:
        x = inputs.detach().cpu().numpy().astype(np.float64)
        n_features = x.shape[1]
        out = np.zeros_like(x)
        for i, t in enumerate(targets.tolist()):
            self._reseed(x[i], t)
            exp = self.tabular.explain_instance(x[i], self.predict, labels=(t,), num_features=n_features,
                                                num_samples=self.num_samples)
            for feature, weight in exp.local_exp[t]:
                out[i, feature] = weight
        return torch.from_numpy(out).to(inputs.dtype).to(inputs.device)

    def _explain_images(self, inputs: Tensor, targets: Tensor) -> Tensor:
        n, c, h, w = inputs.shape
        if c not in (1, 3):
            raise ValueError(f"lime explains images with 1 or 3 channels; got {c}")
        self._channels = c
        x = inputs.detach().cpu().numpy().astype(np.float64).transpose(0, 2, 3, 1)
        out = np.zeros((n, 1, h, w))
        for i, t in enumerate(targets.tolist()):
            self._reseed(x[i], t)
            image = np.repeat(x[i], 3, axis=2) if c == 1 else x[i]
            # lime prints a progress bar per image and has no switch for it
            with mock.patch.object(lime_image, "tqdm", partial(tqdm, disable=True)):
                exp = self.image.explain_instance(
                    image, self.predict_images, labels=(t,), top_labels=None, hide_color=self.hide_color,
                    num_features=10**6, num_samples=self.num_samples, batch_size=self.batch_size,
                    segmentation_fn=self.segment, random_seed=int(self.random_state.randint(2**31 - 1)),
                )
            weights = np.zeros(int(exp.segments.max()) + 1)
            for segment, weight in exp.local_exp[t]:
                weights[segment] = weight
            out[i, 0] = weights[exp.segments]
        return torch.from_numpy(out).to(inputs.dtype).to(inputs.device)
