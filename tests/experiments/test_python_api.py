"""The Python API: a configured cell and a sweep from Python, and a model of one's own scored
without any config, through the runner's own classes (the same numbers as a run's record)."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from baselines.base import IncompatibleMethodError, NonFiniteInputError
from experiments.api import evaluate, model_kind, record_frame, run_cell, summary_table, sweep
from experiments.errors import ConfigError
from experiments.run.config import ROOT, compose
from experiments.run.pipeline import prepare

TINY = ["model=mlp", "model.train.epochs=2", "metrics=quick", "n_samples=6", "batch_size=4"]


def _net(in_features: int = 5, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(in_features, 8), nn.ReLU(), nn.Linear(8, 3))


def test_sweep_and_evaluate_give_the_numbers_of_the_run_records(run_dirs, one_thread):
    """evaluate() on the runner's own trained model and test samples scores exactly what the
    run records hold: it is the runner's explain-and-score step, not a second harness."""
    frame = sweep([["method=saliency"], ["method=gradxinput"]], common=[*TINY, *run_dirs])
    assert list(frame["overrides"].unique()) == ["method=saliency", "method=gradxinput"]
    assert list(frame["method"].unique()) == ["saliency", "gradxinput"] and len(frame) == 12
    assert set(frame.attrs["summary"]["method=saliency"]) == {"faithfulness_correlation", "sparseness"}

    cell = run_cell([*TINY, *run_dirs, "method=saliency"])           # the record exists: read, not rerun
    pd.testing.assert_frame_equal(cell, frame[frame["method"] == "saliency"].drop(columns="overrides")
                                  .reset_index(drop=True))
    assert cell.attrs["record"]["n_samples"] == 6
    assert cell.attrs["summary"]["sparseness"]["mean"] == pytest.approx(cell["sparseness"].mean())

    prep = prepare(compose([*TINY, *run_dirs]))
    ds = prep.dataset
    mine = evaluate(prep.model, ds.x_test[:6], ds.y_test[:6], methods=["saliency", "gradxinput"], metrics="quick",
                    modality="tabular", x_train=ds.x_train, batch_size=4)
    for method in ("saliency", "gradxinput"):
        ours = mine[mine["method"] == method].reset_index(drop=True)
        theirs = frame[frame["method"] == method].reset_index(drop=True)
        for col in ("sample", "label", "prediction", "target", "faithfulness_correlation", "sparseness"):
            np.testing.assert_allclose(ours[col].to_numpy(float), theirs[col].to_numpy(float), rtol=1e-6,
                                       err_msg=f"{method} {col}")
    assert list(summary_table(mine).index) == ["saliency", "gradxinput"]


def test_evaluate_an_own_model_with_an_own_method_and_metric(tmp_path, monkeypatch):
    """A user's nn.Module and tensors, the example extension's method and metric from its config
    folder: its method (gradient x (input - 0)) matches the project's gradient x input, and its
    metric's value is checked by hand for one sample."""
    user = tmp_path / "mine"
    shutil.copytree(ROOT / "examples" / "extend", user, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.syspath_prepend(str(user))
    model = _net()
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    frame = evaluate(model, x, y, methods=["my_method", "gradxinput"], metrics=["top_feature_drop", "sparseness"],
                     config_dirs=[user / "conf"], output="logits")
    assert list(frame.columns) == ["method", "sample", "label", "prediction", "target", "top_feature_drop", "sparseness"]
    mine, theirs = frame.attrs["attributions"]["my_method"], frame.attrs["attributions"]["gradxinput"]
    np.testing.assert_allclose(mine, theirs, atol=1e-6)
    x0 = x[0].clone()
    top = int(np.abs(mine[0]).argmax())
    x0[top] = 0.0
    with torch.no_grad():
        drop = float(model(x[:1])[0, 0] - model(x0[None])[0, 0])
    assert frame.loc[0, "top_feature_drop"] == pytest.approx(drop, abs=1e-6)
    assert frame.attrs["summary"]["my_method"]["top_feature_drop"]["direction"] == "higher"
    assert all(p.requires_grad and p.grad is None for p in model.parameters())   # the caller's model untouched


def test_evaluate_explains_predictions_and_reports_backtrace_conservation():
    model = _net()
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(2))
    frame = evaluate(model, x, methods=["backtrace"], metrics=["sparseness"], target="prediction")
    with torch.no_grad():
        assert frame["target"].tolist() == model(x).argmax(1).tolist()
    assert (frame["label"] == -1).all() and frame["conservation"].notna().all()


@pytest.mark.parametrize("kwargs,error,message", [
    ({"methods": ["nope"]}, ConfigError, r"^unknown method 'nope'; valid choices: attention_last, attention_rollout, attnlrp, backtrace, "),
    ({"methods": ["gradcam"]}, IncompatibleMethodError,
     r"^method 'gradcam' does not support 'tabular' data; it supports: image$"),
    ({"metrics": ["nope"]}, ConfigError, r"^unknown metric 'nope'; valid choices: attribution_localisation, "),
    ({"metrics": "nope"}, ConfigError, r"^unknown metrics 'nope'; valid choices: bbox, generation, image, "),
    ({"modality": "audio"}, ConfigError, r"^unknown modality 'audio'; valid choices: tabular, image, text$"),
    ({"output": "probs"}, ConfigError, r"^unknown output 'probs'; valid choices: softmax, logits, identity$"),
    ({"y": None}, ConfigError, r"^target='label' needs the labels y; pass y, or target='prediction'$"),
    ({"method_params": {"ig": {"n_steps": 4}}}, ConfigError,
     r"^method_params names 'ig', which is not among the methods saliency$"),
    ({"x": torch.tensor([[0.0, float("nan"), 0, 0, 0]])}, NonFiniteInputError,
     r"^the inputs x hold a non-finite value \(nan\) in sample 0 \(1 sample"),
])
def test_evaluate_refuses_bad_input_with_one_line(kwargs, error, message):
    args = {"x": torch.zeros(2, 5), "y": torch.zeros(2, dtype=torch.long), "methods": ["saliency"],
            "metrics": ["sparseness"], **kwargs}
    with pytest.raises(error) as err:
        evaluate(_net(), **args)
    assert re.search(message, str(err.value)) and "\n" not in str(err.value)


def test_method_params_reach_the_method():
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(3))
    frame = evaluate(_net(), x, torch.tensor([0, 1, 2]), methods=["ig"], metrics=["sparseness"],
                     method_params={"ig": {"n_steps": 3, "baseline": "mean"}})
    assert len(frame) == 3
    with pytest.raises(ConfigError, match=r"^unknown setting 'method.n_step'; valid keys under method: n_steps"):
        evaluate(_net(), x, torch.tensor([0, 1, 2]), methods=["ig"], metrics=["sparseness"],
                 method_params={"ig": {"n_step": 3}})


def test_model_kind_is_read_off_the_layers():
    assert model_kind(_net()) == "mlp"
    assert model_kind(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())) == "conv"
    assert model_kind(nn.LSTM(3, 4)) == "recurrent"
    assert model_kind(nn.TransformerEncoderLayer(8, 2)) == "transformer"


def test_record_frame_of_a_cut_record_names_the_fault(tmp_path):
    from experiments.run.records import InvalidRecord

    (tmp_path / "cell").mkdir()
    with pytest.raises(InvalidRecord, match="^missing record.json, scores.csv, arrays.npz$"):
        record_frame(tmp_path / "cell")


def python_api_page_examples() -> list[str]:
    """The Python blocks of the Python API page, in order (the second continues the first)."""
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "python-api.md").read_text(), flags=re.S)


@pytest.mark.slow
def test_readme_python_api_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    first, own = python_api_page_examples()
    namespace: dict = {}
    exec(compile(first, "docs/python-api.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "backtrace" in out and "faithfulness_correlation" in out
    exec(compile(own, "docs/python-api.md", "exec"), namespace)
    out = capsys.readouterr().out
    table = namespace["table"]
    assert list(table.index) == ["backtrace", "ig", "occlusion", "occlusion_array"]
    assert {"ci_low", "ci_high", "test", "p_holm"} <= set(table["faithfulness_correlation"].columns)
    # the function and the array it computed score the same
    assert table.loc["occlusion", ("sparseness", "mean")] == pytest.approx(
        table.loc["occlusion_array", ("sparseness", "mean")])
    assert "occlusion_array" in out and "ci_low" in out


def test_the_api_is_reexported_from_the_package():
    import experiments

    assert experiments.evaluate is evaluate and experiments.sweep is sweep and experiments.run_cell is run_cell
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        experiments.nope  # noqa: B018
