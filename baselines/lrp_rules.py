"""DLBacktrace's default rule written as an LRP rule (a Zennit hook), and one-rule composites, so
backtrace and LRP can be compared rule for rule (``benchmarks/backtrace_vs_lrp.py``,
``docs/backtrace-vs-lrp.md``).

Backtrace's default rule for a dense or convolutional layer without a saturation bound (ReLU or no
activation after it; ``docs`` of the engine: ``backtrace/rules/linear.py``) gives input ``i`` of
output unit ``j`` the share ``|w_ji x_i| / (sum_i |w_ji x_i| + |b_j|)`` of ``R_j``. In LRP's
notation that is a rule with absolute contributions, which no Zennit composite uses: written here
as a Zennit ``BasicHook`` (:class:`AbsoluteZ`) whose modified layer has ``|w|`` and ``|b|`` and
sees ``|x|``; its modified output is exactly backtrace's denominator. On the same footing,
:class:`AbsoluteNorm` is backtrace's rule for residual adds and average pooling (shares
``|a_k| / sum |a_k|``), where Zennit's ``Norm`` uses the signed values.
"""
from __future__ import annotations

from typing import Any

import torch

from .lrp_packages import zennit_modules

# uniform composites for the comparison: one rule on every dense and convolutional layer
UNIFORM_RULES = ("abs_z", "z_plus", "epsilon", "alpha2_beta1")


def _hooks() -> Any:
    zennit = zennit_modules()
    core = zennit.core

    class AbsoluteZ(core.BasicHook):
        """``R_i = |x_i| sum_j |w_ji| R_j / (sum_i |w_ji x_i| + |b_j|)``: backtrace's default
        dense/conv rule (no saturation bound). ``stabilizer`` guards a zero denominator."""

        def __init__(self, stabilizer: float = 1e-12) -> None:
            stabilize = core.Stabilizer.ensure(stabilizer)
            super().__init__(
                input_modifiers=[torch.abs],
                param_modifiers=[core.ParamMod(lambda param, _name: param.abs())],
                output_modifiers=[lambda output: output],
                gradient_mapper=lambda out_grad, outputs: out_grad / stabilize(outputs[0]),
                reducer=lambda inputs, gradients: inputs[0] * gradients[0],
            )

    class AbsoluteNorm(core.BasicHook):
        """Zennit's ``Norm`` on absolute values: a sum or an average pool shares relevance in
        proportion to ``|a_k|`` (backtrace's add and average-pool rules)."""

        def __init__(self, stabilizer: float = 1e-12) -> None:
            stabilize = core.Stabilizer.ensure(stabilizer)
            super().__init__(
                input_modifiers=[torch.abs],
                param_modifiers=[core.ParamMod(lambda param, _name: param, param_keys=[])],
                output_modifiers=[lambda output: output],
                gradient_mapper=lambda out_grad, outputs: out_grad / stabilize(outputs[0]),
                reducer=lambda inputs, gradients: inputs[0] * gradients[0],
            )

    return AbsoluteZ, AbsoluteNorm


def absolute_z(stabilizer: float = 1e-12) -> Any:
    """A new :class:`AbsoluteZ` hook (the class is built on first use, once zennit is entered)."""
    return _hooks()[0](stabilizer)


def absolute_norm(stabilizer: float = 1e-12) -> Any:
    return _hooks()[1](stabilizer)


def uniform_composite(rule: str, epsilon: float = 1e-12, canonizers: list[Any] | None = None,
                      absolute_sums: bool | None = None) -> Any:
    """A Zennit composite with ``rule`` on every dense and convolutional layer (no special first
    layer), ReLU passed, BatchNorm passed (merge it with a canonizer), and sums/average pools
    split by ``Norm`` (signed values) or, with ``absolute_sums`` (default: for ``abs_z``), by
    :class:`AbsoluteNorm`."""
    zennit = zennit_modules()
    rules, types = zennit.rules, zennit.types
    if rule not in UNIFORM_RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of: {', '.join(UNIFORM_RULES)}")
    layer = {"abs_z": lambda: absolute_z(epsilon), "z_plus": lambda: rules.ZPlus(stabilizer=epsilon),
             "epsilon": lambda: rules.Epsilon(epsilon=epsilon),
             "alpha2_beta1": lambda: rules.AlphaBeta(alpha=2, beta=1, stabilizer=epsilon)}[rule]()
    if absolute_sums is None:
        absolute_sums = rule == "abs_z"
    sums = absolute_norm(epsilon) if absolute_sums else rules.Norm(stabilizer=epsilon)
    layer_map = [(types.Activation, rules.Pass()), (zennit.layer.Sum, sums), (types.AvgPool, sums),
                 (types.BatchNorm, rules.Pass()), (types.Linear, layer)]
    return zennit.composites.LayerMapComposite(layer_map=layer_map, canonizers=canonizers)
