"""Layer-wise Relevance Propagation (Bach et al. 2015) for dense and convolutional networks, by
Zennit's composites (``lrp``).

A composite assigns one LRP rule per layer type; Zennit registers them as backward hooks, so one
forward pass and one modified backward pass give the relevance of every input. The default,
``auto``, is Zennit's ``epsilon_plus_flat`` (the flat rule on the first layer, z+ on the other
convolutions, epsilon on dense layers) for convolutional models, and ``epsilon_plus`` (epsilon on
every dense layer) for MLPs: on a dense first layer the flat rule gives every input feature the
same relevance (it replaces the weights and inputs by ones), whatever the sample, so it is no
explanation of tabular data.

Canonizers (Zennit's, applied while the hooks are registered and undone after): BatchNorm that
follows a convolution or dense layer is merged into it (``SequentialMergeBatchNorm``, corrected to
leave an exact identity behind: :func:`merge_batchnorm_canonizer`), and the
residual add of a ResNet block is routed through Zennit's ``Sum`` layer, whose rule (``Norm``)
splits relevance over the summands in proportion to their values, as Zennit's own ResNet
canonizer does for torchvision's blocks (that one imports torchvision, so the block canonizer is
written here for the zoo's block layout).

Which output is explained (the run's ``output``, the same for every method):

- ``logits``: relevance starts at the target logit with its value, ``R = z_t``.
- ``softmax``: the target probability ``p_t = softmax(z)_t``. Relevance at the logits is the
  softmax's input times its gradient, ``R_i = z_i * dp_t/dz_i = z_i p_t (1[i = t] - p_i)``: the
  rule AttnLRP derives for a softmax (Achtibat et al. 2024, used for attention there; ``attnlrp``
  applies it to the output softmax too). So both LRP methods explain the function every other
  method explains, with its competition between classes: a feature that raises every logit alike
  leaves ``p_t`` unchanged and gets no net relevance, as it gets no gradient. The map is
  ``p_t (R_t - sum_i p_i R_i)``, with ``R_i`` the LRP map of logit ``i``; it sums to
  ``p_t (z_t - sum_i p_i z_i)`` where the rules conserve relevance (no biases), not to ``p_t``.

A dense task's head (``baselines.dense_heads``, output ``identity``): relevance starts at the
outputs of the network the head reads (the per-pixel probabilities of a segmentation network, the
four coordinates of a box regressor), as the parts its value is the sum of: ``p [p > thresholding]``
per pixel, or the explained coordinate (the four, for their sum). The head's own arithmetic (the
threshold, the sum) has no layer and no rule, so it is applied here, where it starts.

Signed: the epsilon rule passes negative contributions on with their sign.

``attnlrp`` (:class:`AttnLRPMethod`): AttnLRP (Achtibat et al. 2024) for the text transformers, by
LXT's efficient rules (gradient x input with the backward pass of layer norms, activations,
attention and the bilinear products changed; the adapter to transformers 5.x is
:mod:`baselines.attnlrp`). Per token, like gradient x input on text: the token embedding times its
(rule-modified) gradient, summed over the hidden units. The output softmax is explained with the
same softmax rule as above (in gradient x input form it is the softmax's own gradient).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor, nn

from captum.attr import LayerGradientXActivation

from .attnlrp import attnlrp_rules, family_of
from .base import ExplainContext, Explainer, IncompatibleMethodError, check_choice
from .captum_methods import _TextGradients
from .lrp_packages import lxt_efficient, zennit_modules
from .text_inputs import embedding_layer, reduce_hidden, text_model_check

COMPOSITES = ("auto", "epsilon_plus_flat", "epsilon_plus", "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat")
# The zoo's residual block (experiments.zoo.models.BasicBlock): its forward is
# relu2(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x)); recognised by these children.
RESIDUAL_BLOCK_CHILDREN = ("conv1", "bn1", "relu1", "conv2", "bn2", "shortcut", "relu2")


def start_relevance(logits: Tensor, targets: Tensor, output: str) -> Tensor:
    """The relevance put on the logits, ``(N, C)``: the target logit's value for ``logits``; the
    softmax rule's ``z_i p_t (1[i = t] - p_i)`` for ``softmax`` (see the module docstring)."""
    logits = logits.detach()
    onehot = torch.nn.functional.one_hot(targets, logits.shape[1]).to(logits.dtype)
    if output == "logits":
        return logits * onehot
    p = logits.softmax(dim=1)
    p_t = p.gather(1, targets[:, None])
    return logits * p_t * (onehot - p)


def _residual_forward(self: nn.Module, x: Tensor) -> Tensor:
    """The zoo block's forward with its residual add routed through Zennit's ``Sum`` layer, so
    the add gets a rule (Zennit's ``ResNetBasicBlockCanonizer`` does this for torchvision's)."""
    out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
    out = self.canonizer_sum(torch.stack([self.shortcut(x), out], dim=-1))
    return self.relu2(out)


def merge_batchnorm_canonizer() -> Any:
    """Zennit's ``SequentialMergeBatchNorm``, with the merged BatchNorm made an exact identity.

    Zennit 0.5.1 merges a BatchNorm into the layer before it and then sets the BatchNorm's running
    variance to 1, keeping its ``eps``: the BatchNorm then divides by ``sqrt(1 + eps)`` instead of
    passing its input on, so while the rules are registered the network's output is off by that
    factor per BatchNorm (about 3e-5 relative on ResNet-8) and the explained output is not the
    model's. Setting the running variance to ``1 - eps`` makes it the identity; the original
    statistics are restored on removal as before."""
    zennit = zennit_modules()

    class ExactMergeBatchNorm(zennit.canonizers.SequentialMergeBatchNorm):
        @staticmethod
        def merge_batch_norm(modules: list[nn.Module], batch_norm: nn.Module) -> None:
            zennit.canonizers.SequentialMergeBatchNorm.merge_batch_norm(modules, batch_norm)
            batch_norm.running_var.data.fill_(1.0 - batch_norm.eps)

    return ExactMergeBatchNorm()


def residual_block_canonizer() -> Any:
    """A Zennit ``AttributeCanonizer`` for the zoo's residual blocks (by their children's names,
    since baselines do not import the model zoo)."""
    zennit = zennit_modules()

    def attribute_map(name: str, module: nn.Module) -> Optional[dict[str, Any]]:
        children = dict(module.named_children())
        if all(c in children for c in RESIDUAL_BLOCK_CHILDREN):
            return {"forward": _residual_forward.__get__(module), "canonizer_sum": zennit.layer.Sum()}
        return None

    return zennit.canonizers.AttributeCanonizer(attribute_map)


def _passive_layers() -> tuple[type, ...]:
    """Layers with no rule whose backward pass is already right for LRP (reshaping, padding,
    identities; dropout is the identity in eval mode)."""
    return (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.ZeroPad2d,
            nn.ConstantPad1d, nn.ConstantPad2d)


# Calls that only route values (their gradient hands each input its own part, which is LRP's rule
# for them): reshaping, stacking and concatenation (a U-Net's skip connections).
_SHAPE_CALLS = ("flatten", "view", "reshape", "size", "contiguous", "squeeze", "unsqueeze", "stack", "cat", "getitem",
                "getattr", "dim")


def unsupported_part(model: nn.Module) -> Optional[str]:
    """The first part of ``model``'s forward that Zennit's rules do not cover, or None.

    Zennit attaches rules to layers (modules); anything the forward computes outside a module it
    has a rule for (a functional residual add, a product, an LSTM, a layer norm) would propagate
    the plain gradient, or duplicate relevance, without a word. The model (with the canonizers
    applied) is traced with torch.fx, Zennit's layer types kept as leaves, and every other
    operation named here."""
    zennit = zennit_modules()
    ztypes = zennit.types
    covered = (ztypes.Linear, ztypes.BatchNorm, ztypes.Activation, ztypes.AvgPool, ztypes.MaxPool, zennit.layer.Sum)

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            if isinstance(m, covered) or isinstance(m, _passive_layers()):
                return True
            return super().is_leaf_module(m, qualname)

    try:
        graph = Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means the forward cannot be checked
        return f"its forward cannot be traced by torch.fx ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    modules = dict(model.named_modules())
    for node in graph.nodes:
        if node.op == "call_module":
            m = modules[node.target]
            if not (isinstance(m, covered) or isinstance(m, _passive_layers())):
                return f"layer {node.target!r} ({type(m).__name__}) has no LRP rule in Zennit's composites"
        elif node.op in ("call_function", "call_method"):
            name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
            if name not in _SHAPE_CALLS:
                return f"its forward computes {name!r} outside a layer ({node.name}), which no LRP rule covers"
    return None


class LRPMethod(Explainer):
    """LRP by a Zennit composite on MLPs and CNNs, ResNets included. ``epsilon``: the epsilon
    rule's term added to each denominator (with its sign; larger values absorb weak or
    contradictory contributions); ``stabilizer``: the same guard for the other rules (z+, flat,
    alpha-beta, the sums), only against division by zero. Both leak relevance: a unit keeps the
    share ``eps / (|z_j| + eps)`` of what reaches it, so conservation holds up to that."""

    name = "lrp"
    modalities = ("tabular", "image")
    model_kinds = ("mlp", "conv")
    frameworks = ("torch",)

    @classmethod
    def check_compatible(cls, modality: str, model_kind: str, output: Optional[str] = None,
                         framework: str = "torch") -> None:
        super().check_compatible(modality, model_kind, output, framework)
        zennit_modules()   # refused before any work where zennit is not installed

    def __init__(self, model: nn.Module, context: ExplainContext, composite: str = "auto",
                 epsilon: float = 1e-6, stabilizer: float = 1e-6, output: str = "logits") -> None:
        super().__init__(model, context, composite=composite, epsilon=epsilon, stabilizer=stabilizer, output=output)
        check_choice("lrp composite", composite, COMPOSITES)
        from .dense_heads import DenseHead

        # a dense head: Zennit runs on the network it reads, from the parts of its value
        self.head = model if isinstance(model, DenseHead) else None
        if self.head is not None:
            self.model = self.head.output_view()
        for key, value in (("epsilon", epsilon), ("stabilizer", stabilizer)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"lrp {key} must be a positive number; got {value!r}")
        self.zennit = zennit_modules()
        self.composite_name = composite if composite != "auto" else (
            "epsilon_plus" if context.model_kind == "mlp" else "epsilon_plus_flat")
        self.epsilon = float(epsilon)
        self.stabilizer = float(stabilizer)
        self.output = output
        with self._canonized() as canonized:
            problem = unsupported_part(canonized)
        if problem is not None:
            what = type(model.net if self.head is not None else model).__name__
            raise IncompatibleMethodError(f"method 'lrp' cannot explain {what}: {problem}")

    def declared(self) -> dict[str, dict[str, Any]]:
        out = super().declared()
        out["rules"] = {"composite": self.composite_name, "epsilon": self.epsilon, "stabilizer": self.stabilizer}
        return out

    def canonizers(self) -> list[Any]:
        return [merge_batchnorm_canonizer(), residual_block_canonizer()]

    def composite(self) -> Any:
        cls = self.zennit.composites.COMPOSITES[self.composite_name]
        return cls(epsilon=self.epsilon, stabilizer=self.stabilizer, canonizers=self.canonizers())

    @contextmanager
    def _canonized(self) -> Iterator[nn.Module]:
        """The model with the canonizers applied (for the graph check), undone after."""
        instances = [i for c in self.canonizers() for i in c.apply(self.model)]
        try:
            yield self.model
        finally:
            for instance in reversed(instances):
                instance.remove()

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        if self.head is not None:
            attr_output: Callable[[Tensor], Tensor] = lambda out: self.head.value_parts(out.detach(), targets)
        else:
            attr_output = lambda logits: start_relevance(logits, targets, self.output)
        x = inputs.detach().clone().requires_grad_(True)
        with self.zennit.attribution.Gradient(model=self.model, composite=self.composite()) as attributor:
            _, relevance = attributor(x, attr_output)
        return relevance.detach()


class AttnLRPMethod(_TextGradients, Explainer):
    """AttnLRP on a text transformer (BERT family): per-token relevance at the token embeddings."""

    name = "attnlrp"
    modalities = ("text",)
    model_kinds = ("transformer",)
    frameworks = ("torch",)

    @classmethod
    def check_compatible(cls, modality: str, model_kind: str, output: Optional[str] = None,
                         framework: str = "torch") -> None:
        super().check_compatible(modality, model_kind, output, framework)
        lxt_efficient()   # refused before any work where lxt is not installed

    def __init__(self, model: nn.Module, context: ExplainContext, output: str = "logits") -> None:
        super().__init__(model, context, output=output)
        text_model_check(model)
        family = family_of(model)
        if family is None:
            raise IncompatibleMethodError(
                f"method 'attnlrp' cannot explain {type(model).__name__}: AttnLRP's rules here cover BERT, Llama "
                f"and GPT-2 attention, and the model has none of them")
        self.family = family
        self.method = LayerGradientXActivation(self.forward_fn(output), embedding_layer(model))

    def declared(self) -> dict[str, dict[str, Any]]:
        out = super().declared()
        out["rules"] = {"family": self.family}
        return out

    def explain(self, inputs: Tensor, targets: Tensor) -> Tensor:
        with attnlrp_rules(self.model, self.family):
            return reduce_hidden(self.method.attribute(inputs, target=targets))
