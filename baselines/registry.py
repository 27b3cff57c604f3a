"""Every attribution method by name (``METHODS``), with the interface they share: what
``from baselines import ...`` gives."""
from .attention_methods import AttentionLastMethod, AttentionRolloutMethod
from .backtrace_method import BacktraceContrastiveMethod, BacktraceMethod
from .base import (
    Attribution,
    ExplainContext,
    Explainer,
    IncompatibleMethodError,
    reduce_channels,
)
from .captum_methods import GradientXInputMethod, IntegratedGradientsMethod, SaliencyMethod, SmoothGradMethod
from .controls import RandomMethod, RarityMethod, SobelMethod
from .gradcam import GradCAMMethod
from .lime_methods import LimeMethod
from .lrp_methods import AttnLRPMethod, LRPMethod
from .shap_methods import ShapDeepMethod, ShapGradientMethod, ShapKernelMethod, ShapPartitionMethod

METHODS: dict[str, type[Explainer]] = {
    cls.name: cls
    for cls in (
        BacktraceMethod, BacktraceContrastiveMethod, SaliencyMethod, GradientXInputMethod,
        IntegratedGradientsMethod, SmoothGradMethod, GradCAMMethod, ShapKernelMethod,
        ShapPartitionMethod, ShapGradientMethod, ShapDeepMethod, LimeMethod, RandomMethod, SobelMethod, RarityMethod,
        AttentionRolloutMethod, AttentionLastMethod, LRPMethod, AttnLRPMethod,
    )
}

__all__ = [
    "Attribution", "ExplainContext", "Explainer", "IncompatibleMethodError", "METHODS", "reduce_channels",
    *(cls.__name__ for cls in METHODS.values()),
]
