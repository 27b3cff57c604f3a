"""evaluate() scores attributions one brings: an array shaped like x, or a function
(inputs, targets) -> attributions, by the same metrics and checks as the project's methods;
summary_table() gives them the table writer's intervals and paired tests."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from experiments.api import evaluate, summary_table, sweep
from experiments.errors import ConfigError, TableError

METRICS = ["faithfulness_correlation", "sparseness"]
SMALL = ["metrics.faithfulness_correlation.subset_size=2"]     # 2 of the 5 features per perturbation


def _data(n: int = 12, features: int = 5):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(features, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(n, features, generator=torch.Generator().manual_seed(1))
    y = torch.arange(n) % 3
    return model, x, y


def _grad_x_input(model: nn.Module):
    """Gradient x input of the logits, written by hand: what the project's gradxinput computes."""
    def fn(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = inputs.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(model(x).gather(1, targets[:, None]).sum(), x)
        return grad * inputs
    return fn


def test_own_array_and_function_score_exactly_as_the_method_they_reproduce():
    model, x, y = _data()
    theirs = evaluate(model, x, y, methods=["gradxinput"], metrics=[*METRICS, "tabular_sensitivity"], output="logits", overrides=SMALL)
    reference = theirs.attrs["attributions"]["gradxinput"]
    ours = evaluate(model, x, y, methods=["gradxinput", {"fn": _grad_x_input(model)}],
                    metrics=[*METRICS, "tabular_sensitivity"], output="logits", overrides=SMALL)
    assert list(ours["method"].unique()) == ["gradxinput", "fn"]
    np.testing.assert_allclose(ours.attrs["attributions"]["fn"], reference, rtol=1e-5, atol=1e-7)
    a, b = (ours[ours["method"] == m].reset_index(drop=True) for m in ("gradxinput", "fn"))
    for metric in (*METRICS, "tabular_sensitivity"):       # the robustness metric re-explains through fn
        np.testing.assert_allclose(b[metric].to_numpy(float), a[metric].to_numpy(float), rtol=1e-5, err_msg=metric)
    fixed = evaluate(model, x, y, methods={"mine": reference}, metrics=METRICS, output="logits", overrides=SMALL)
    for metric in METRICS:
        np.testing.assert_allclose(fixed[metric].to_numpy(float), a[metric].to_numpy(float), rtol=1e-6, err_msg=metric)
    assert np.isnan(fixed.attrs["summary"]["mine"]["runtime"]["seconds_per_sample"])   # nothing was explained
    assert fixed.attrs["summary"]["mine"]["sparseness"]["direction"] == "higher"


def test_an_array_is_refused_for_metrics_that_explain_again_in_one_line():
    model, x, y = _data()
    with pytest.raises(ConfigError) as err:
        evaluate(model, x, y, methods=["saliency", {"mine": np.ones((12, 5))}],
                 metrics=["sparseness", "tabular_sensitivity"])
    assert str(err.value) == ("metric(s) tabular_sensitivity (robustness) explain again, which the fixed attributions "
                              "'mine' cannot; give a function (inputs, targets) -> attributions instead, or leave "
                              "those metrics out")


@pytest.mark.parametrize("methods,message", [
    ({"mine": np.ones((12, 4))}, "attributions 'mine' have shape (12, 4); expected the shape of x (12, 5)"),
    ({"mine": np.where(np.eye(12, 5) > 0, np.nan, 1.0)},
     "attributions 'mine' hold a non-finite value (nan) in sample 0 (5 sample(s) affected); non-finite attributions "
     "are refused"),
    ({"mine": "ig"}, "methods['mine'] is the string 'ig'; list config names as plain names, and map names only to "
                     "your attributions (an array shaped like x) or a function"),
    ([3], "methods holds 3 (int); give method config names, or a mapping name -> attributions (an array shaped like x) "
          "or name -> function (inputs, targets) -> attributions"),
    (["ig", {"ig": np.ones((12, 5))}], "method name 'ig' is given twice; give each method one name"),
    ({"mine": np.array([["a"] * 5] * 12)}, "attributions 'mine' must be numbers, got dtype"),
    ({}, "methods is empty; give a list of method names"),
])
def test_bad_own_attributions_are_one_line(methods, message):
    model, x, y = _data()
    with pytest.raises((ConfigError, TypeError)) as err:
        evaluate(model, x, y, methods=methods, metrics=["sparseness"])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("fn,message", [
    (lambda inputs, targets: torch.ones(len(inputs), 4),
     "method 'fn' returned attributions of shape (1, 4); expected the shape of the inputs (1, 5)"),
    (lambda inputs, targets: torch.full(inputs.shape, float("inf")),
     "method 'fn' returned non-finite attributions for 1 of 1 samples (the first: sample 0 of the batch); "
     "non-finite attributions are refused"),
    (lambda inputs, targets: "nope", "method 'fn' returned str; return a tensor or an array shaped like the inputs"),
])
def test_a_function_returning_bad_attributions_is_one_line(fn, message):
    model, x, y = _data()
    with pytest.raises((ValueError, TypeError)) as err:
        evaluate(model, x, y, methods={"fn": fn}, metrics=["sparseness"])
    assert str(err.value) == message


def test_a_function_may_return_numpy_and_images_may_be_one_map_per_pixel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    x = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    pixel = np.abs(np.random.default_rng(0).normal(size=(4, 1, 6, 6)))
    frame = evaluate(model, x, torch.tensor([0, 1, 0, 1]), modality="image", metrics=["sparseness"],
                     methods={"map": pixel, "fn": lambda inputs, targets: inputs.sum(1, keepdim=True).numpy()})
    assert frame.groupby("method")["sparseness"].count().to_dict() == {"fn": 4, "map": 4}
    np.testing.assert_allclose(frame.attrs["attributions"]["map"], pixel, rtol=1e-6)    # one channel: kept as given
    np.testing.assert_allclose(frame.attrs["attributions"]["fn"], x.sum(1, keepdim=True).numpy(), rtol=1e-6)


def test_summary_table_has_intervals_and_the_paired_tests():
    model, x, y = _data(n=16)
    frame = evaluate(model, x, y, methods=["saliency", {"same": _grad_x_input(model)}, "gradxinput"],
                     metrics=METRICS, output="logits", overrides=SMALL)
    table = summary_table(frame, reference="gradxinput")
    assert list(table.index) == ["saliency", "same", "gradxinput"]
    assert table.attrs["reference"] == "gradxinput"
    for metric in METRICS:
        part = table[metric]
        assert list(part.columns) == ["mean", "ci_low", "ci_high", "n", "n_nan", "rank", "test", "p_holm", "r"]
        assert ((part["ci_low"] <= part["mean"]) & (part["mean"] <= part["ci_high"])).all()
        assert part.loc["saliency", "mean"] == pytest.approx(frame.loc[frame["method"] == "saliency", metric].mean())
        assert (part["n"] == 16).all()
        # the same attributions as the reference: identical scores, no difference, p = 1
        assert part.loc["same", "test"] == "=" and part.loc["same", "p_holm"] == 1.0
        assert pd.isna(part.loc["gradxinput", "test"])             # the reference is not tested against itself
    assert table["mean_rank"].notna().all()
    no_ref = summary_table(frame)                                  # no backtrace here: no tests
    assert "test" not in no_ref["sparseness"].columns and no_ref.attrs["reference"] is None
    with pytest.raises(TableError, match=re.escape("unknown reference method 'nope' for this frame; valid choices: ")):
        summary_table(frame, reference="nope")


def test_summary_table_and_the_table_writer_give_the_same_numbers(run_dirs, one_thread, tmp_path):
    """One function for both: a sweep's frame and the table written from its records agree."""
    from experiments.report.paper_tables import build, collect

    tiny = ["model=mlp", "model.train.epochs=2", "metrics=quick", "n_samples=8", "batch_size=8", *run_dirs]
    frame = sweep([["method=saliency"], ["method=gradxinput"]], common=tiny)
    mine = summary_table(frame, reference="method=saliency")
    (data,) = collect(run_dirs[0].split("=", 1)[1])
    wide = build(data, reference="saliency")["wide"].set_index("method")
    for method, row in (("saliency", "method=saliency"), ("gradxinput", "method=gradxinput")):
        for metric in ("faithfulness_correlation", "sparseness"):
            for field in ("ci_low", "ci_high", "n", "rank"):
                assert mine.loc[row, (metric, field)] == pytest.approx(wide.loc[method, f"{metric}_{field}"])
            assert mine.loc[row, (metric, "mean")] == pytest.approx(wide.loc[method, metric])
    for metric in ("faithfulness_correlation", "sparseness"):
        assert mine.loc["method=gradxinput", (metric, "p_holm")] == pytest.approx(
            wide.loc["gradxinput", f"{metric}_p_holm"])
        assert mine.loc["method=gradxinput", (metric, "test")] == wide.loc["gradxinput", f"{metric}_test"]
