"""The methods as tables and figures show them: their order (the reference method first, the
controls last) and their written-out names."""
from __future__ import annotations

REFERENCE = "backtrace"
CONTROLS = ("random", "rarity", "sobel")
# How figures and the report page write each method out.
METHOD_TITLES = {
    "backtrace": "DLBacktrace",
    "backtrace_contrastive": "DLBacktrace (contrastive)",
    "ig": "Integrated Gradients",
    "smoothgrad": "SmoothGrad",
    "saliency": "Saliency",
    "gradxinput": "Gradient × Input",
    "gradcam": "Grad-CAM",
    "lime": "LIME",
    "shap_kernel": "KernelSHAP",
    "shap_partition": "PartitionSHAP",
    "shap_gradient": "GradientSHAP",
    "shap_deep": "DeepSHAP",
    "attention_rollout": "Attention rollout",
    "attention_last": "Last-layer attention",
    "lrp": "LRP",
    "attnlrp": "AttnLRP",
    "random": "Random (control)",
    "sobel": "Sobel edges (control)",
    "rarity": "Token rarity (control)",
}


def method_order(methods: list[str]) -> list[str]:
    """backtrace variants first, then the other methods alphabetically, the controls last."""
    def key(m: str) -> tuple[int, str]:
        base = m.split(" ", 1)[0]
        return (0 if base.startswith(REFERENCE) else 2 if base in CONTROLS else 1, m)
    return sorted(methods, key=key)


def method_title(variant: str) -> str:
    """``ig (n_steps=4)`` -> ``Integrated Gradients (n_steps=4)``; unknown names stay as they are."""
    base, _, rest = variant.partition(" ")
    title = METHOD_TITLES.get(base, base)
    return f"{title} {rest}" if rest else title
