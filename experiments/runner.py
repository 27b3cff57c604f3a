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

from baselines.base import ExplainContext, IncompatibleMethodError, reduce_channels
from experiments.config import ConfigError, validate
from experiments.pipeline import Prepared, prepare
from experiments.training import predict
from experiments.records import config_hash, package_versions, record_exists, record_path, write_record


@dataclass
class RunResult:
    path: Path
    record: Optional[dict[str, Any]]
    skipped: bool


def forward_backward_seconds(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, batch_size: int,
                             device: torch.device) -> float:
    """Time of one forward+backward pass over the samples: the unit the runtime column uses."""
    total = 0.0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device).requires_grad_(True)
        tb = targets[i:i + batch_size].to(device)
        start = time.perf_counter()
        out = model(xb)
        out.gather(1, tb[:, None]).sum().backward()
        total += time.perf_counter() - start
    return total


def check_method(cfg: DictConfig) -> type:
    """The explainer class, refused here when it cannot explain this model or data."""
    try:
        cls = get_class(cfg.method._target_)
    except Exception as exc:  # a config pointing at a missing class is a config error
        raise ConfigError(f"method config names an unknown class {cfg.method._target_!r}") from exc
    try:
        cls.check_compatible(cfg.model.modality, cfg.model.kind, cfg.model.get("framework", "torch"))
    except IncompatibleMethodError as exc:
        raise ConfigError(f"{exc} (model {cfg.model.name!r})") from exc
    return cls


def build_metrics(cfg: DictConfig) -> dict[str, Any]:
    metrics_cfg = cfg.get("metrics") or {}
    return {name: instantiate(mcfg, channel_reduction=cfg.channel_reduction) for name, mcfg in metrics_cfg.items()}


def run(cfg: DictConfig) -> RunResult:
    """Run one cell, or skip it when its record exists (``force=true`` reruns)."""
    validate(cfg)
    chash = config_hash(cfg)
    if record_exists(cfg.results_dir, chash) and not cfg.force:
        path = record_path(cfg.results_dir, chash)
        print(f"record exists, skipping: {path} (force=true reruns)")
        return RunResult(path, None, True)
    method_cls = check_method(cfg)
    metrics = build_metrics(cfg)

    wall = time.perf_counter()
    prep = prepare(cfg)
    seconds = dict(prep.seconds)
    ds, model, device = prep.dataset, prep.model, prep.device
    # n_samples is capped at what the test split holds (imagenet_samples has five images)
    n = min(int(cfg.n_samples), len(ds.x_test))
    idx = ds.test_indices(n, int(cfg.seed) if cfg.sample_selection == "random" else None)
    x, labels = ds.x_test[idx], ds.y_test[idx]
    preds = predict(model, x, int(cfg.batch_size))
    use_pred = (labels < 0) if cfg.target == "label" else torch.ones_like(labels, dtype=torch.bool)
    targets = torch.where(use_pred, preds, labels)

    torch.manual_seed(int(cfg.seed))
    np.random.seed(int(cfg.seed))
    context = ExplainContext(
        modality=ds.modality, model_kind=prep.model_kind, n_classes=ds.n_classes, x_train=ds.x_train,
        seed=int(cfg.seed), device=device, feature_names=ds.feature_names,
    )
    start = time.perf_counter()
    explainer = instantiate(cfg.method, model=model, context=context)
    seconds["build_explainer"] = time.perf_counter() - start
    # One untimed call first, so one-off costs (tracing, compilation, caches) stay out of the
    # runtime column for every method alike.
    start = time.perf_counter()
    explainer(x[:1].to(device), targets[:1].to(device))
    seconds["warmup"] = time.perf_counter() - start
    parts, extras, explain_s = [], {}, 0.0
    bs = int(cfg.batch_size)
    for i in range(0, len(x), bs):
        att = explainer(x[i:i + bs].to(device), targets[i:i + bs].to(device))
        explain_s += att.seconds
        parts.append(att.values.float().cpu())
        for k, v in att.extras.items():
            extras.setdefault(k, []).append(v.float().cpu())
    raw = torch.cat(parts)
    seconds["explain"] = explain_s
    attributions = reduce_channels(raw, cfg.channel_reduction)
    fb = forward_backward_seconds(model, x, targets, bs, device)
    seconds["forward_backward"] = fb

    gt = ds.ground_truth[idx] if ds.ground_truth is not None else None
    scores = pd.DataFrame({"sample": idx.numpy(), "label": labels.numpy(), "prediction": preds.numpy(),
                           "target": targets.numpy()})
    summary: dict[str, Any] = {}
    for name, metric in metrics.items():
        start = time.perf_counter()
        values = np.asarray(metric(model, x, targets, attributions, explainer=explainer, ground_truth=gt), dtype=float)
        seconds[f"metric/{name}"] = time.perf_counter() - start
        if values.shape != (len(x),):
            raise RuntimeError(f"metric {name!r} returned shape {values.shape}, expected ({len(x)},)")
        values[~np.isfinite(values)] = np.nan
        scores[name] = values
        finite = values[~np.isnan(values)]
        summary[name] = {
            **metric.describe(),
            "mean": float(finite.mean()) if finite.size else float("nan"),
            "n": int(values.size),
            "n_nan": int(np.isnan(values).sum()),
        }
    seconds["total"] = time.perf_counter() - wall

    n = len(x)
    record = {
        "config_hash": chash,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "model": {"name": cfg.model.name, "kind": prep.model_kind, "test_accuracy": prep.trained.accuracy,
                  "cache_key": prep.trained.cache_key, "from_cache": prep.trained.from_cache,
                  "train_seconds": prep.trained.train_seconds},
        "dataset": {"name": ds.name, "modality": ds.modality, "n_test": int(len(ds.x_test)),
                    "n_classes": ds.n_classes},
        "method": {"name": getattr(method_cls, "name", cfg.method._target_), "signed": bool(method_cls.signed),
                   "params": OmegaConf.to_container(cfg.method, resolve=True)},
        "n_samples": n,
        "targets_from_prediction": int(use_pred.sum()),
        "seconds": seconds,
        "runtime": {"seconds_per_sample": explain_s / n, "forward_backward_units": explain_s / fb if fb > 0 else None},
        "metrics": summary,
    }
    arrays = {"attributions": attributions.numpy(), "targets": targets.numpy(), "sample": idx.numpy()}
    if ds.modality == "image":
        arrays["inputs"] = x.numpy()
    for k, v in extras.items():
        arrays[f"extra_{k}"] = reduce_channels(torch.cat(v), cfg.channel_reduction).numpy()
    path = write_record(cfg.results_dir, chash, record, scores, arrays)
    print_summary(record, path)
    return RunResult(path, record, False)


def print_summary(record: dict[str, Any], path: Path) -> None:
    title = (f"{record['model']['name']} on {record['dataset']['name']}, method {record['method']['name']}, "
             f"{record['n_samples']} samples")
    rows = [(name, "higher" if m["direction"] == "higher" else "lower", f"{m['mean']:.4f}", str(m["n"]), str(m["n_nan"]))
            for name, m in record["metrics"].items()]
    acc = record["model"]["test_accuracy"]
    footer = (f"model test accuracy {acc:.4f}; " if acc is not None else "") + \
        f"explain {record['runtime']['seconds_per_sample']:.4f} s/sample; record: {path}"
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


USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, IncompatibleMethodError, FileNotFoundError)


def run_cli(cfg: DictConfig) -> Optional[RunResult]:
    """``run.py``'s job: user errors become one line on stderr and exit code 2."""
    try:
        try:
            return run(cfg)
        except InstantiationException as exc:  # hydra wraps what a constructor raised: show that
            if isinstance(exc.__cause__, USER_ERRORS + _engine_errors()):
                raise exc.__cause__ from None
            raise
    except USER_ERRORS + _engine_errors() as exc:
        if os.environ.get("BACKTRACE_BENCH_DEBUG") == "1":
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def _engine_errors() -> tuple[type[BaseException], ...]:
    try:
        from backtrace.errors import UnsupportedOperation
        return (UnsupportedOperation,)
    except ImportError:
        return ()
