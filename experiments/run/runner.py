"""One benchmark cell: config -> dataset -> model -> explainer -> attributions -> metrics -> record."""
from __future__ import annotations

import datetime as dt
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from baselines.base import (ExplainContext, IncompatibleMethodError, NonFiniteInputError, check_finite_inputs,
                            for_scoring, reduce_channels, sign_profile, with_output)
from experiments.data.tokenizer import load_tokenizer
from experiments.errors import ConfigError, DataError, missing_extra, needs_extra, quiet_lookup, unimportable
from experiments.run.config import check_output_dirs, model_task, name_method_config, validate
from experiments.run.dense_cells import DenseSamples, dense_samples
from experiments.run.launchers import run_threads
from experiments.run.pipeline import Prepared, build_explainer, prepare
from experiments.run.progress import bar
from experiments.run.records import (config_hash, load_record, package_versions, record_path, record_problem,
                                     recover, write_record)
from experiments.run.sweep_index import record_cell
from experiments.zoo.training import predict
from metrics.statistics import significant


class NonFiniteResultError(RuntimeError):
    """A method returned NaN or infinite attributions: no record is written for them."""


@dataclass
class RunResult:
    path: Path
    record: Optional[dict[str, Any]]
    skipped: bool


def forward_backward_seconds(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, batch_size: int,
                             device: torch.device) -> float:
    """Time of one forward+backward pass over the samples: the unit the runtime column uses.

    Token ids have no gradient: for a text model the backward pass reaches its token embeddings
    (``embedding_layer()``), as the gradient methods' does."""
    total = 0.0
    hook = None
    if not x.is_floating_point():
        hook = model.embedding_layer().register_forward_hook(lambda _m, _i, out: out.detach().requires_grad_(True))
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device)
            if xb.is_floating_point():
                xb.requires_grad_(True)
            tb = targets[i:i + batch_size].to(device)
            start = time.perf_counter()
            out = model(xb)
            out.gather(1, tb[:, None]).sum().backward()
            total += time.perf_counter() - start
    finally:
        if hook is not None:
            hook.remove()
    return total


def check_method(cfg: DictConfig) -> type:
    """The explainer class, refused here when it cannot explain this model or data."""
    try:
        with quiet_lookup():
            cls = get_class(cfg.method._target_)
    except Exception as exc:  # a config pointing at a missing class is a config error
        extra = missing_extra(exc)
        if extra is not None:
            raise needs_extra("method", cfg.get("method_config") or cfg.method._target_, extra) from None
        raise unimportable("method", cfg.method._target_, exc) from None
    try:
        cls.check_compatible(cfg.model.modality, cfg.model.kind, cfg.get("output"), cfg.model.get("framework", "torch"))
    except IncompatibleMethodError as exc:
        raise ConfigError(f"{exc} (model {cfg.model.name!r})") from exc
    task = model_task(cfg.model)
    if task != "classification" and not getattr(cls, "dense", True):
        raise ConfigError(f"method {getattr(cls, 'name', cfg.method._target_)!r} does not support the dense task "
                          f"{task!r} (model {cfg.model.name!r})")
    return cls


def build_metrics(cfg: DictConfig) -> dict[str, Any]:
    """Every metric of the run, reading the run's ``output`` (the function the methods explain)
    and reducing re-run explanations' channels as the run does."""
    metrics_cfg = cfg.get("metrics") or {}
    metrics = {name: instantiate(mcfg, channel_reduction=cfg.channel_reduction, output=cfg.output)
               for name, mcfg in metrics_cfg.items()}
    if cfg.model.modality == "text":
        check_text_metrics(metrics)
    return metrics


def check_text_metrics(metrics: dict[str, Any]) -> None:
    """Refuse, before any work, a metric that cannot read token ids: Quantus's and the tabular
    metrics treat an (N, L) id tensor as rows of numbers and would perturb ids arithmetically.
    A metric declares what it reads in ``modalities``; one that declares nothing is taken at its word."""
    for name, metric in metrics.items():
        supported = getattr(metric, "modalities", None)
        if supported is not None and "text" not in supported:
            raise ConfigError(f"metric {name!r} does not support text data; it supports: {', '.join(supported)} "
                              f"(for text choose metrics=text or metrics=none)")


# A target probability this close to 1 is saturated in float32: its gradient is 0 and removing a
# feature does not move it, so gradient maps and drop-one scores of that sample are undefined.
SATURATION = 1e-6


@torch.no_grad()
def target_probabilities(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, batch_size: int,
                         device: torch.device) -> torch.Tensor:
    fn = with_output(model, "softmax")
    out = [fn(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).gather(1, targets[:, None]).flatten()


def evaluated_count(metric: Any, n: int) -> int:
    """How many of the ``n`` explained samples a metric scores: the first ``max_samples`` of them
    when the metric declares that (expensive robustness and randomisation metrics), else all."""
    k = metric.params.get("max_samples")
    if k is None:
        return n
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ConfigError(f"metric {metric.info.name!r}: max_samples must be a positive integer or null, got {k!r}")
    return min(k, n)


def run(cfg: DictConfig, checked: bool = False) -> RunResult:
    """Run one cell, or skip it when a valid record of it exists (``force=true`` reruns).

    The run settings and output folders are checked before anything else, so a run that could
    not save its result fails before loading data or training: here, unless ``checked`` says the
    config comes from :func:`experiments.run.config.load_config` or ``run.py``'s check of its
    command line, which did that already. An invalid record is reported and recomputed.
    """
    if not checked:
        validate(cfg)
        check_output_dirs(cfg)
    name_method_config(cfg)   # the record and the console name the method config as chosen
    chash = config_hash(cfg)
    recover(cfg.results_dir)  # what killed writers left behind: restore or remove
    path = record_path(cfg.results_dir, chash)
    problem = record_problem(path)
    if problem is None and not cfg.force:
        record, _ = load_record(path)
        print_summary(record, path, stored=True)
        print(f"record exists, skipping: {path} (force=true reruns)")
        return RunResult(path, record, True)
    if problem is not None and path.exists():
        print(f"record {path} is invalid ({problem}); recomputing it")
    method_cls = check_method(cfg)
    metrics = build_metrics(cfg)
    threads = run_threads(cfg.get("threads"))  # in a parallel sweep: cores / workers unless set
    if threads:
        torch.set_num_threads(threads)

    wall = time.perf_counter()
    prep = prepare(cfg)
    seconds = dict(prep.seconds)
    ds, model, device = prep.dataset, prep.model, prep.device
    # n_samples is capped at what the test split holds (imagenet_samples has five images); the
    # record keeps both the number asked for and the number explained
    requested = int(cfg.n_samples)
    n = min(requested, len(ds.x_test))
    if n < requested:
        print(f"note: n_samples={requested} but the test split of {ds.name} holds {n} samples; explaining all {n}")
    idx = ds.test_indices(n, int(cfg.seed) if cfg.sample_selection == "random" else None)
    x, labels = ds.x_test[idx], ds.y_test[idx]
    check_finite_inputs(x, idx, what=f"test inputs of {ds.name}")
    dense: Optional[DenseSamples] = None
    saturated: Optional[int] = None
    if prep.task != "classification":
        # every method explains the head's value: its one output, or the configured box coordinate
        dense = dense_samples(model, ds, idx, x, prep.head, int(cfg.batch_size), device)
        targets, use_pred = dense.targets, torch.zeros(len(x), dtype=torch.bool)
        n_outputs = int(model.n_outputs)
        columns = {"sample": idx.numpy(), "label": labels.numpy(), **dense.columns, "target": targets.numpy()}
    else:
        preds = predict(model, x, int(cfg.batch_size))
        use_pred = (labels < 0) if cfg.target == "label" else torch.ones_like(labels, dtype=torch.bool)
        targets = torch.where(use_pred, preds, labels)
        p_target = target_probabilities(model, x, targets, int(cfg.batch_size), device)
        saturated = int(((p_target >= 1 - SATURATION) | (p_target <= SATURATION)).sum())
        if saturated > 0.05 * len(x):
            print(f"warning: {saturated} of {len(x)} samples have a saturated target probability (within "
                  f"{SATURATION:g} of 0 or 1): their gradients and drop-one scores are undefined", file=sys.stderr)
        n_outputs = ds.n_classes
        columns = {"sample": idx.numpy(), "label": labels.numpy(), "prediction": preds.numpy(),
                   "target": targets.numpy()}

    torch.manual_seed(int(cfg.seed))
    np.random.seed(int(cfg.seed))
    context = ExplainContext(
        modality=ds.modality, model_kind=prep.model_kind, n_classes=n_outputs, x_train=ds.x_train,
        seed=int(cfg.seed), device=device, feature_names=ds.feature_names,
        extras={"tokenizer": load_tokenizer(ds.info["tokenizer"]["tokenizer"])} if ds.modality == "text" else {},
    )
    gt = ds.ground_truth[idx] if ds.ground_truth is not None else None
    scores = pd.DataFrame(columns)
    cell = explain_and_score(cfg, model, x, targets, context, metrics, scores, gt, idx, seconds)
    return _record_cell(cfg, chash, prep, method_cls, cell, idx, x, targets, use_pred, requested, saturated, wall,
                        dense)


def _explain(explainer: Any, x: torch.Tensor, targets: torch.Tensor, bs: int, device: torch.device, label: str,
             seconds: dict[str, float]) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]], float]:
    """``x`` explained in batches: (attributions, extras per batch, seconds spent explaining)."""
    explainer.memo = {}  # identical re-explanations inside the metrics are computed once (explain_adapter)
    # One untimed call first, so one-off costs (tracing, compilation, caches) stay out of the
    # runtime column for every method alike.
    start = time.perf_counter()
    explainer(x[:1].to(device), targets[:1].to(device))
    seconds["warmup"] = time.perf_counter() - start
    parts, extras, explain_s = [], {}, 0.0
    with bar(-(-len(x) // bs), f"explaining ({label})", "batch") as progress:
        for i in range(0, len(x), bs):
            att = explainer(x[i:i + bs].to(device), targets[i:i + bs].to(device))
            explain_s += att.seconds
            parts.append(att.values.float().cpu())
            for k, v in att.extras.items():
                extras.setdefault(k, []).append(v.float().cpu())
            progress.update(1)
    return torch.cat(parts), extras, explain_s


@dataclass
class ScoredCell:
    """One method's attributions for a set of samples and every metric's scores of them: what a
    run record is made of, and what :func:`experiments.api.evaluate` returns per method."""

    explainer: Any
    attributions: torch.Tensor          # as every metric received them (channels reduced; magnitudes if unsigned)
    returned: dict[str, float]          # the sign the raw maps actually had (baselines.base.sign_profile)
    extras: dict[str, list[torch.Tensor]]
    scores: pd.DataFrame                # one row per sample, one column per metric
    summary: dict[str, Any]             # per metric: its description, mean, n, n_nan
    seconds: dict[str, float]
    explain_seconds: float
    forward_backward_seconds: float


def explain_and_score(cfg: DictConfig, model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor,
                      context: ExplainContext, metrics: dict[str, Any], scores: pd.DataFrame,
                      gt: Optional[torch.Tensor] = None, idx: Optional[torch.Tensor] = None,
                      seconds: Optional[dict[str, float]] = None, *, explainer: Any = None,
                      given: Optional[torch.Tensor] = None) -> ScoredCell:
    """Build the method of ``cfg.method`` for ``model``, explain ``x`` for ``targets`` in batches of
    ``cfg.batch_size``, and score the attributions with every metric: the part of a run that needs
    no dataset or model config (``idx``: the samples' own indices, for error messages).

    ``explainer``: a method built by the caller instead (a function of one's own,
    :class:`baselines.function_method.FunctionMethod`). ``given``: attributions computed
    elsewhere, shaped like ``x`` and checked by the caller: nothing is explained, they are scored
    as signed, with no explainer for the metrics (so none that explains again may be among them)."""
    seconds = {} if seconds is None else seconds
    idx = torch.arange(len(x)) if idx is None else idx
    device = context.device
    bs = int(cfg.batch_size)
    if given is not None:
        raw, extras, explain_s, signed = given.float().cpu(), {}, float("nan"), True
    else:
        if explainer is None:
            start = time.perf_counter()
            try:
                explainer = build_explainer(cfg.method, model, context)
            except (InstantiationException, ModuleNotFoundError) as exc:
                extra = missing_extra(exc)
                if extra is None:
                    raise
                raise needs_extra("method", cfg.get("method_config") or cfg.method._target_, extra) from None
            seconds["build_explainer"] = time.perf_counter() - start
            label = cfg.get("method_config") or getattr(explainer, "name", type(explainer).__name__)
        else:
            label = getattr(explainer, "name", type(explainer).__name__)
        raw, extras, explain_s = _explain(explainer, x, targets, bs, device, label, seconds)
        signed = bool(explainer.signed)
        bad = ~torch.isfinite(raw.reshape(len(raw), -1)).all(1)
        if bool(bad.any()):
            raise NonFiniteResultError(
                f"method {label} returned non-finite attributions for sample "
                f"{int(idx[bad][0])} ({int(bad.sum())} of {len(raw)}); no record written")
    seconds["explain"] = explain_s
    returned = sign_profile(reduce_channels(raw, cfg.channel_reduction))
    attributions = for_scoring(raw, signed, cfg.channel_reduction)
    fb = forward_backward_seconds(model, x, targets, bs, device) if given is None else float("nan")
    seconds["forward_backward"] = fb

    summary: dict[str, Any] = {}
    with bar(len(metrics), "metrics", "metric") as progress:
        for name, metric in metrics.items():
            progress.set_postfix_str(name, refresh=True)
            k = evaluated_count(metric, len(x))
            start = time.perf_counter()
            part = np.asarray(metric(model, x[:k], targets[:k], attributions[:k], explainer=explainer,
                                     ground_truth=None if gt is None else gt[:k]), dtype=float)
            seconds[f"metric/{name}"] = time.perf_counter() - start
            if part.shape != (k,):
                raise RuntimeError(f"metric {name!r} returned shape {part.shape}, expected ({k},)")
            values = np.full(len(x), np.nan)
            values[:k] = np.where(np.isfinite(part), part, np.nan)
            scores[name] = values
            finite = part[np.isfinite(part)]
            summary[name] = {
                **metric.describe(),
                "mean": float(finite.mean()) if finite.size else float("nan"),
                "n": int(k),                      # samples scored: the first n rows of scores.csv
                "n_nan": int(k - finite.size),    # of those, scores that are undefined
            }
            progress.update(1)
    if explainer is not None:
        explainer.memo = {}
    return ScoredCell(explainer, attributions, returned, extras, scores, summary, seconds, explain_s, fb)


def _record_cell(cfg: DictConfig, chash: str, prep: Prepared, method_cls: type, cell: ScoredCell, idx: torch.Tensor,
                 x: torch.Tensor, targets: torch.Tensor, use_pred: torch.Tensor, requested: int,
                 saturated: Optional[int], wall: float, dense: Optional[DenseSamples] = None) -> RunResult:
    """Write the run record of a scored cell (record.json, scores.csv, arrays.npz); a dense
    model's record also says what was explained and holds the predicted and true masks or boxes."""
    ds, seconds, scores, summary, extras = prep.dataset, cell.seconds, cell.scores, cell.summary, cell.extras
    explainer, returned, attributions, explain_s, fb = (cell.explainer, cell.returned, cell.attributions,
                                                        cell.explain_seconds, cell.forward_backward_seconds)
    seconds["total"] = time.perf_counter() - wall

    n = len(x)
    record = {
        "config_hash": chash,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "model": {"name": cfg.model.name, "kind": prep.model_kind,
                  "test_accuracy": prep.trained.accuracy if dense is None else None,
                  "test_score": prep.trained.accuracy, "test_score_name": prep.trained.score_name,
                  "cache_key": prep.trained.cache_key, "from_cache": prep.trained.from_cache,
                  "train_seconds": prep.trained.train_seconds,
                  "weights_sha256": prep.trained.weights_sha256},   # what reproduce --check compares first
        "dataset": {"name": ds.name, "modality": ds.modality, "n_test": int(len(ds.x_test)),
                    "n_classes": ds.n_classes, "class_names": ds.class_names,
                    "ground_truth": ds.ground_truth is not None,    # figures need not rebuild the data
                    **({"tokenizer": ds.info["tokenizer"]["tokenizer"]} if ds.modality == "text" else {})},
        "method": {"name": getattr(method_cls, "name", cfg.method._target_),
                   "config": cfg.get("method_config"),      # the config chosen (method=...); None if unknown
                   "signed": bool(explainer.signed),
                   "reads_output": bool(getattr(explainer, "reads_output", True)),
                   "returns": returned, **explainer.declared(),
                   "params": OmegaConf.to_container(cfg.method, resolve=True)},
        "output": cfg.output,
        "n_samples": n,                      # explained (what scores.csv and arrays.npz hold)
        "n_samples_requested": requested,    # asked for (config.n_samples); larger when capped
        "saturated_samples": saturated,      # classifiers only: a dense head has no probability to saturate
        "targets_from_prediction": int(use_pred.sum()),
        "seconds": seconds,
        "runtime": {"seconds_per_sample": explain_s / n, "forward_backward_units": explain_s / fb if fb > 0 else None,
                    "threads": torch.get_num_threads()},
        "metrics": summary,
        "diagnostics": {},   # per-sample numbers a method reports about itself (scores.csv columns)
    }
    arrays = {"attributions": attributions.numpy(), "targets": targets.numpy(), "sample": idx.numpy()}
    if ds.modality in ("image", "text"):
        arrays["inputs"] = x.numpy()          # text: the token ids (N, L)
    if ds.ground_truth is not None:  # figures outline it; text: the rationale per token (N, L)
        arrays["ground_truth"] = ds.ground_truth[idx].numpy()
    if dense is not None:   # what was explained, and the masks or boxes the figures outline
        record["dense"] = dense.record
        arrays.update(dense.arrays)
    for key, v in extras.items():
        values = torch.cat(v)
        if values.ndim == 1:  # one number per sample (e.g. backtrace's conservation): a scores column
            scores[key] = values.double().numpy()
            record["diagnostics"][key] = {"mean": float(values.double().mean()), "min": float(values.min()),
                                          "max": float(values.max())}
        else:
            arrays[f"extra_{key}"] = reduce_channels(values, cfg.channel_reduction).numpy()
    path = write_record(cfg.results_dir, chash, record, scores, arrays)
    print_summary(record, path)
    return RunResult(path, record, False)


def print_summary(record: dict[str, Any], path: Path, stored: bool = False) -> None:
    """The cell's scores per metric (``stored``: read back from an existing record, said in the title)."""
    method = record["method"].get("config") or record["method"]["name"]
    title = (f"{record['model']['name']} on {record['dataset']['name']}, method {method}, {record['n_samples']} samples"
             + (f" (stored {record.get('created', '')})" if stored else ""))
    # three significant digits: a mean of 7e-4 must not print as 0.0000
    rows = [(name, "higher" if m["direction"] == "higher" else "lower", significant(m["mean"]), str(m["n"]),
             str(m["n_nan"]))
            for name, m in record["metrics"].items()]
    acc = record["model"].get("test_score", record["model"]["test_accuracy"])
    score_name = record["model"].get("test_score_name", "test accuracy")
    footer = (f"model {score_name} {acc:.4f}; " if acc is not None else "") + \
        f"explain {significant(record['runtime']['seconds_per_sample'])} s/sample; record: {path}"
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for col in ("metric", "better", "mean", "n", "n_nan"):
            table.add_column(col)
        for r in rows:
            table.add_row(*r)
        console = Console()
        console.print(table)
        console.print(footer)
    except ImportError:
        print(title)
        for r in rows:
            print("  ".join(r))
        print(footer)


USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, IncompatibleMethodError, FileNotFoundError, DataError,
                                                 NonFiniteInputError, NonFiniteResultError)


def run_cli(cfg: DictConfig, checked: bool = False) -> Optional[RunResult]:
    """``run.py``'s job: user errors become one line on stderr and exit code 2. In a multirun
    each cell also adds its line (status, record, wall time) to the sweep index. ``checked``: as
    for :func:`run`."""
    start = time.perf_counter()
    status, path, message = "error", None, ""
    try:
        try:
            result = run(cfg, checked)
        except InstantiationException as exc:  # hydra wraps what a constructor raised: show that
            if isinstance(exc.__cause__, USER_ERRORS + _engine_errors()):
                raise exc.__cause__ from None
            raise
        except ModuleNotFoundError as exc:     # an optional extra a method imports as it explains
            extra = missing_extra(exc)
            if extra is None:
                raise
            raise needs_extra("method", cfg.get("method_config") or cfg.method._target_, extra) from None
        status, path = ("skipped" if result.skipped else "ok"), result.path
        return result
    except USER_ERRORS + _engine_errors() as exc:
        message = str(exc)
        if os.environ.get("BACKTRACE_BENCH_DEBUG") == "1":
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except BaseException as exc:
        message = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        record_cell(status, path, time.perf_counter() - start, message)


def _engine_errors() -> tuple[type[BaseException], ...]:
    try:
        from backtrace.errors import UnsupportedOperation
        return (UnsupportedOperation,)
    except ImportError:
        return ()
