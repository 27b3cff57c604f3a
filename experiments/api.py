"""The benchmark from Python (notebooks, scripts): a configured cell, a sweep, or a model of your own.

- :func:`run_cell` composes and checks the run config once (:func:`experiments.run.config.load_config`:
  the same overrides, config folders and checks as ``run.py``), runs it with the runner, and
  returns its record as a DataFrame.
- :func:`sweep` does that for a list of override sets and returns one DataFrame.
- :func:`evaluate` scores any ``nn.Module`` on tensors you hold with chosen methods and metrics,
  without a dataset or model config: each method and metric is built from its config (its YAML
  on the search path, your own folders included) and run by the runner's own
  :func:`experiments.run.runner.explain_and_score`; next to config names it takes your own
  attributions (an array, or a function the metrics can call again: :mod:`experiments.own_attributions`).
- :func:`summary_table` gives such a frame the paper tables' statistics (intervals, ranks, paired
  tests), through the table writer's own function.

Bad input raises :class:`experiments.errors.ConfigError` (or the error a method or metric raises)
with the same one-line message ``run.py`` prints.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from torch import nn

from baselines.vocabulary import MODALITIES, check_choice, device_of
from experiments.errors import ConfigError
from experiments.own_attributions import MethodsArg, check_given, check_scorable, method_entries
from experiments.run.config import CHOICES, ConfigDirs, group_options, load_config

# Columns of scores.csv that are not metric scores.
SAMPLE_COLUMNS = ("sample", "label", "prediction", "target", "iou", "explained_value")   # the last two: dense models
MetricsArg = Union[str, Sequence[str], None]


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """What a constructor raised, instead of Hydra's InstantiationException around it (as
    ``run.py`` shows it)."""
    from hydra.errors import InstantiationException

    try:
        yield
    except InstantiationException as exc:
        if exc.__cause__ is not None:
            raise exc.__cause__ from None
        raise


def record_frame(folder: Union[str, Path]) -> pd.DataFrame:
    """A run record as a DataFrame: one row per explained sample (``scores.csv``: index, label,
    prediction, target, one column per metric) with the cell's model, dataset and method;
    ``.attrs["summary"]`` holds each metric's mean, direction, n and n_nan and
    ``.attrs["record"]`` the whole ``record.json``."""
    from experiments.run.records import load_record

    record, scores = load_record(folder)
    frame = scores.copy()
    frame.insert(0, "method", record["method"].get("config") or record["method"]["name"])  # the config as chosen
    frame.insert(1, "model", record["model"]["name"])
    frame.insert(2, "dataset", record["dataset"]["name"])
    frame["config_hash"] = record["config_hash"]
    frame.attrs["summary"] = {name: {k: m.get(k) for k in ("mean", "direction", "n", "n_nan")}
                              for name, m in record["metrics"].items()}
    frame.attrs["record"] = record
    return frame


def run_cell(overrides: Sequence[str] = (), config_dirs: ConfigDirs = ()) -> pd.DataFrame:
    """Run one cell as ``run.py OVERRIDES`` would (``config_dirs``: as ``--config-dir``), or read
    its record when one exists (``force=true`` reruns), and return the record as a DataFrame
    (:func:`record_frame`)."""
    return _run_checked(load_config(overrides, config_dirs))


def _run_checked(cfg: Any) -> pd.DataFrame:
    """Run a config from :func:`load_config` (checked there, so not again) and read its record."""
    from experiments.run.config import announce_output_dirs
    from experiments.run.runner import run

    announce_output_dirs([cfg])    # one line where a first run puts its records and models
    with _user_errors():
        result = run(cfg, checked=True)
    return record_frame(result.path)


def sweep(override_sets: Sequence[Sequence[str]], config_dirs: ConfigDirs = (),
          common: Sequence[str] = ()) -> pd.DataFrame:
    """:func:`run_cell` for each override set (plus ``common``), one after another; the records
    stacked into one DataFrame with an ``overrides`` column. Every set is composed and checked
    before the first cell runs, so a bad one fails before any work is done."""
    configs = [load_config([*common, *overrides], config_dirs) for overrides in override_sets]
    frames = []
    for overrides, cfg in zip(override_sets, configs):
        frame = _run_checked(cfg)
        frame.insert(0, "overrides", " ".join(overrides))
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    out.attrs["summary"] = {" ".join(o): f.attrs["summary"] for o, f in zip(override_sets, frames)}
    return out


def model_kind(model: nn.Module) -> str:
    """The kind of model a method must support (``baselines.base.MODEL_KINDS``): the model's own
    ``kind`` attribute where it has one (the text classifiers), else read off its layers."""
    from baselines.base import MODEL_KINDS

    kind = getattr(model, "kind", None)
    if kind in MODEL_KINDS:
        return str(kind)
    layers = list(model.modules())
    if any(isinstance(m, (nn.MultiheadAttention, nn.TransformerEncoderLayer)) for m in layers):
        return "transformer"
    if any(isinstance(m, nn.RNNBase) for m in layers):
        return "recurrent"
    if any(isinstance(m, nn.modules.conv._ConvNd) for m in layers):
        return "conv"
    return "mlp"


def _metric_overrides(metrics: MetricsArg, config_dirs: ConfigDirs) -> list[str]:
    """``metrics`` as overrides: a named set (``"quick"``) or a list of metric names."""
    if metrics is None:
        return []
    if isinstance(metrics, str):
        return [f"metrics={metrics}"]
    names = list(metrics)
    if not names:
        raise ConfigError("metrics is empty; give a metric set name or a list of metric names")
    options = group_options("metric", config_dirs)
    for name in names:
        check_choice("metric", name, options)
    return ["~metrics", *(f"+metric@metrics.{name}={name}" for name in names)]


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Parameters without gradients while the model is explained (as the runner holds its
    models), restored afterwards: a forward+backward timing pass must not leave gradients in a
    caller's model."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _as_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a tensor or an array, got {type(value).__name__}") from exc


def evaluate(model: nn.Module, x: Any, y: Any = None, methods: MethodsArg = ("backtrace",),
             metrics: MetricsArg = "quick", modality: str = "tabular", output: str = "softmax",
             target: str = "label", *, x_train: Any = None, ground_truth: Any = None,
             feature_names: Optional[list[str]] = None, method_params: Optional[Mapping[str, Mapping[str, Any]]] = None,
             overrides: Sequence[str] = (), config_dirs: ConfigDirs = (), seed: int = 0, batch_size: int = 16,
             channel_reduction: str = "sum", device: Optional[Union[str, torch.device]] = None) -> pd.DataFrame:
    """Explain ``model`` on ``x`` with each of ``methods`` and score every explanation with
    ``metrics``; no dataset or model config needed.

    ``model`` returns logits (N, classes); ``x`` holds the samples (tabular (N, F), images
    (N, C, H, W), text token ids (N, L)) and ``y`` their labels (needed for ``target="label"``).
    ``methods`` are method config names (``configs/method/``, or your ``config_dirs``) and your
    own attributions, as a mapping name -> an array shaped like ``x`` (images: or (N, 1, H, W)),
    or name -> a function ``(inputs, targets) -> attributions`` (it is called like a method, also
    by the metrics that explain again), e.g. ``["ig", {"mine": array, "occlusion": fn}]``; yours
    are scored as signed, on the same ``output`` the others explain. Metrics that explain again
    (robustness, randomisation) need a function: an array is refused for them.
    ``method_params`` overrides a config's settings (``{"ig": {"n_steps": 16}}``). ``metrics`` is a
    metric set (``configs/metrics/``) or a list of metric names (``configs/metric/``);
    ``overrides`` are further config overrides (``metrics.faithfulness_correlation.nr_runs=10``).
    ``output`` is the function every method explains and every metric reads (``softmax`` or
    ``logits``). ``x_train`` is what methods draw backgrounds from (SHAP, LIME; default ``x``);
    ``ground_truth`` (shaped like the reduced attributions) is for localisation metrics.

    Returns one row per (method, sample): ``method``, ``sample``, ``label``, ``prediction``,
    ``target`` and one column per metric (NaN where a score is undefined). ``.attrs`` holds
    ``summary`` (method -> metric -> mean, direction, n, n_nan, plus the runtime) and
    ``attributions`` (method -> array, as the metrics scored them); :func:`summary_table` turns
    it into a table with intervals and paired tests.
    """
    from baselines.base import ExplainContext, check_finite_inputs
    from baselines.function_method import FunctionMethod
    from experiments.data.tokenizer import load_tokenizer
    from experiments.run.runner import build_metrics, explain_and_score
    from experiments.zoo.training import predict

    check_choice("modality", modality, MODALITIES)
    check_choice("target", target, CHOICES["target"])
    entries = method_entries(methods)
    x = _as_tensor("x", x)
    if x.dtype.is_floating_point:
        x = x.float()
    if x.ndim < 2 or len(x) == 0:
        raise ConfigError(f"x must hold a batch of samples (N, ...), got shape {tuple(x.shape)}")
    check_finite_inputs(x, torch.arange(len(x)), what="the inputs x")
    for entry in entries:
        if entry.given is not None:
            check_given(entry, x, modality)
    method_params = dict(method_params or {})
    configured = [e.name for e in entries if e.config]
    unknown = sorted(set(method_params) - set(configured))
    if unknown:
        raise ConfigError(f"method_params names {', '.join(map(repr, unknown))}, which is not among the "
                          f"methods {', '.join(configured) or '(none: method_params sets method configs)'}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev).eval()
    with torch.no_grad():
        n_classes = int(model(x[:1].to(dev)).shape[-1])
    preds = predict(model, x, batch_size)
    if target == "label":
        if y is None:
            raise ConfigError("target='label' needs the labels y; pass y, or target='prediction'")
        labels = _as_tensor("y", y).long().reshape(-1)
        if labels.shape != (len(x),):
            raise ConfigError(f"y must hold one label per sample ({len(x)}), got shape {tuple(labels.shape)}")
        targets = labels
    else:
        labels = _as_tensor("y", y).long().reshape(-1) if y is not None else torch.full((len(x),), -1)
        targets = preds
    gt = _as_tensor("ground_truth", ground_truth) if ground_truth is not None else None
    train = _as_tensor("x_train", x_train).to(x.dtype) if x_train is not None else x
    context = ExplainContext(modality=modality, model_kind=model_kind(model), n_classes=n_classes, x_train=train,
                             seed=int(seed), device=dev, feature_names=feature_names,
                             extras={"tokenizer": load_tokenizer()} if modality == "text" else {})
    settings = [f"output={output}", f"seed={seed}", f"batch_size={batch_size}",
                f"channel_reduction={channel_reduction}", *_metric_overrides(metrics, config_dirs), *overrides]
    # the settings of your own methods (which have no config), checked before any work
    own_cfg = load_config(settings, config_dirs) if any(not e.config for e in entries) else None
    if own_cfg is not None:
        check_scorable(entries, build_metrics(own_cfg))

    frames, summary, attributions = [], {}, {}
    with _frozen(model):
        for entry in entries:
            name = entry.name
            if entry.config:
                params = [f"method.{k}={_override_value(v)}" for k, v in method_params.get(name, {}).items()]
                cfg = load_config([f"method={name}", *settings, *params], config_dirs)
            else:
                cfg = own_cfg
            torch.manual_seed(int(seed))
            np.random.seed(int(seed))
            scores = pd.DataFrame({"sample": np.arange(len(x)), "label": labels.numpy(),
                                   "prediction": preds.numpy(), "target": targets.numpy()})
            own = FunctionMethod(model, context, fn=entry.fn, name=name, output=output) if entry.fn else None
            given = _features_only(model, x, entry.given) if entry.given is not None and modality == "text" \
                else entry.given
            with _user_errors():
                cell = explain_and_score(cfg, model, x, targets, context, build_metrics(cfg), scores, gt,
                                         explainer=own, given=given)
            frame = cell.scores
            frame.insert(0, "method", name)
            for key, parts in cell.extras.items():  # one number per sample (backtrace's conservation)
                values = torch.cat(parts)
                if values.ndim == 1:
                    frame[key] = values.double().numpy()
            frames.append(frame)
            n = len(x)
            summary[name] = {
                **{m: {k: s[k] for k in ("mean", "direction", "n", "n_nan")} for m, s in cell.summary.items()},
                "runtime": {"seconds_per_sample": cell.explain_seconds / n,
                            "forward_backward_units": (cell.explain_seconds / cell.forward_backward_seconds
                                                       if cell.forward_backward_seconds > 0 else None)},
            }
            attributions[name] = cell.attributions.numpy()
    out = pd.concat(frames, ignore_index=True)
    out.attrs["summary"] = summary
    out.attrs["attributions"] = attributions
    return out


def _features_only(model: nn.Module, x: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    """Text attributions of one's own, exactly zero on the tokens that are not features ([CLS],
    [SEP], padding), as every method's are (``baselines.base.Explainer``)."""
    from baselines.text_inputs import feature_mask

    keep = feature_mask(model, x.to(device_of(model))).cpu()
    return torch.where(keep, given, torch.zeros((), dtype=given.dtype))


def _override_value(value: Any) -> str:
    """A Python value as a Hydra override value (lists and strings quoted as Hydra parses them)."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def summary_table(frame: pd.DataFrame, reference: Optional[str] = None) -> pd.DataFrame:
    """The table of an :func:`evaluate` or :func:`sweep` frame (or a :func:`run_cell` record), as
    the paper tables compute it (:func:`experiments.report.method_table.method_statistics`, one
    function for both): one row per method (per override set for a sweep), in the frame's order;
    per metric its mean over the samples every method scored with the bootstrap 95% interval
    (``ci_low``, ``ci_high``), ``n``, ``n_nan`` and ``rank``, and the paired Wilcoxon test of
    ``reference`` (default ``backtrace`` when present) against the method, Holm-corrected:
    ``test`` (``+``: the reference is better, ``-`` worse, ``=`` no difference, ``~`` ambiguous),
    ``p_holm`` and ``r`` (rank-biserial, positive: the reference better); then ``mean_rank`` and the
    runtime. Columns are (metric, field) pairs: ``table["sparseness"]`` is one metric's part."""
    from experiments.report.method_table import FIELDS, TEST_FIELDS, choose_reference, method_statistics

    key = "overrides" if "overrides" in frame.columns else "method"
    if key not in frame.columns or "sample" not in frame.columns:
        raise ConfigError("summary_table takes the frame evaluate(), sweep() or run_cell() returns "
                          "(columns method or overrides, sample, and one per metric)")
    directions = _directions(frame)
    metric_cols = [c for c in frame.columns if c in directions]
    if not metric_cols:
        raise ConfigError("summary_table found no metric columns with a direction in frame.attrs['summary']; "
                          "give it the frame evaluate(), sweep() or run_cell() returns")
    order = list(dict.fromkeys(frame[key].astype(str)))
    plain = pd.DataFrame({"method": frame[key].astype(str).to_numpy(), "sample": frame["sample"].to_numpy(),
                          **{m: frame[m].to_numpy(dtype=float) for m in metric_cols}})   # without the frame's attrs
    long = plain.melt(id_vars=["method", "sample"], var_name="metric", value_name="score")
    long["score"] = long["score"].astype(float)
    ref = choose_reference(order, reference, "this frame")
    runtime = {m: v.get("runtime") for m, v in (frame.attrs.get("summary") or {}).items()
               if isinstance(v, dict) and isinstance(v.get("runtime"), dict)}
    stats = method_statistics(long, {m: directions[m] for m in metric_cols}, ref, runtime, order)
    wide = stats["wide"].set_index("method")
    fields = ("mean", *FIELDS, *(TEST_FIELDS if ref is not None else ()))
    columns = [(m, f) for m in metric_cols for f in fields]
    out = pd.DataFrame({(m, f): wide.get(m if f == "mean" else f"{m}_{f}") for m, f in columns}, index=wide.index)
    for extra in ("mean_rank", "seconds_per_sample", "forward_backward_units"):
        out[(extra, "")] = wide[extra]
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    out.index.name = key
    out.attrs["reference"] = ref
    return out


def _directions(frame: pd.DataFrame) -> dict[str, str]:
    """Each metric's direction, from ``frame.attrs["summary"]`` (evaluate: method -> metric -> ...;
    sweep: overrides -> metric -> ...; run_cell: metric -> ...)."""
    found: dict[str, str] = {}

    def walk(node: Any) -> None:
        if not isinstance(node, dict):
            return
        for name, value in node.items():
            if isinstance(value, dict) and value.get("direction") in ("higher", "lower"):
                found.setdefault(str(name), value["direction"])
            else:
                walk(value)

    walk(frame.attrs.get("summary") or {})
    return found
