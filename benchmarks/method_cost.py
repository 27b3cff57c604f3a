"""Per-sample wall time of every attribution method on ``model=resnet``, in seconds and in units
of one forward+backward pass of the same model on the same samples, measured in the same run.

    python benchmarks/method_cost.py                  # the budgets in configs/method/*.yaml
    python benchmarks/method_cost.py --budget small   # reduced budgets, a quick look
    python benchmarks/method_cost.py --random-model   # untrained ResNet-8 on random 1x28x28 inputs
    python benchmarks/method_cost.py cache_dir=/path  # extra overrides for the run config

The forward+backward unit is measured before and after the methods (both printed; their mean is
the unit), so drift in the machine's load shows. ``--threads`` defaults to 1: on a small shared
machine one thread per process gives steadier timings than contended intra-op parallelism.

Each method first explains one sample untimed (library set-up and JIT compilation, e.g. shap's
numba kernels, are one-off costs; that warm-up time is printed separately), then the samples in
batches of ``--batch-size`` as the runner calls it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import OmegaConf
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from baselines import METHODS, ExplainContext  # noqa: E402
from experiments.run.config import method_config  # noqa: E402
from experiments.run.pipeline import build_explainer  # noqa: E402

METHOD_DIR = ROOT / "configs" / "method"
# What "small" changes, per method; every other parameter keeps its config value.
SMALL_BUDGETS: dict[str, dict[str, Any]] = {
    "ig": {"n_steps": 16},
    "smoothgrad": {"nt_samples": 8},
    "shap_kernel": {"nsamples": 50},
    "shap_partition": {"max_evals": 100},
    "shap_gradient": {"nsamples": 50, "background_size": 20},
    "shap_deep": {"background_size": 10},
    "lime": {"num_samples": 200},
}
BUDGET_KEYS = ("n_steps", "nt_samples", "stdevs", "nsamples", "max_evals", "num_samples", "background_size",
               "background", "masker", "segmentation", "layer", "output", "contrastive_output")


def load_setup(random_model: bool, n: int, overrides: list[str]
               ) -> tuple[nn.Module, ExplainContext, torch.Tensor, torch.Tensor, str]:
    """The trained ResNet of ``model=resnet`` with its test samples, or an untrained ResNet-8 on
    random inputs (the cost of every method here does not depend on the weights)."""
    if not random_model:
        from experiments.run.config import load_config
        from experiments.run.pipeline import prepare

        cfg = load_config(["model=resnet", *overrides])
        prep = prepare(cfg)
        ds = prep.dataset
        x = ds.x_test[:n].float()
        with torch.no_grad():
            targets = prep.model(x.to(prep.device)).argmax(1).cpu()
        ctx = ExplainContext(modality=ds.modality, model_kind=prep.model_kind, n_classes=ds.n_classes,
                             x_train=ds.x_train, seed=int(cfg.seed), device=prep.device,
                             feature_names=ds.feature_names)
        return prep.model.eval(), ctx, x, targets, f"model=resnet ({ds.name}, trained)"
    from experiments.zoo.models import ResNet

    torch.manual_seed(0)
    model = ResNet(in_channels=1, num_classes=10, depth=8).eval()
    g = torch.Generator().manual_seed(0)
    x_train, x = torch.rand(512, 1, 28, 28, generator=g), torch.rand(n, 1, 28, 28, generator=g)
    with torch.no_grad():
        targets = model(x).argmax(1)
    ctx = ExplainContext(modality="image", model_kind="conv", n_classes=10, x_train=x_train, seed=0)
    return model, ctx, x, targets, "ResNet-8, untrained, random 1x28x28 inputs"


def forward_backward_seconds(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, batch_size: int,
                             repeats: int = 3) -> float:
    """Median over ``repeats`` of one forward+backward pass (target score w.r.t. the input) over
    all samples, in the same batches as the methods."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].detach().requires_grad_(True)
            model(xb).gather(1, targets[i : i + batch_size, None]).sum().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def budgeted_config(name: str, budget: str) -> Any:
    cfg = method_config(name, "logits" if name == "shap_deep" else "softmax")
    if budget == "small":
        cfg = OmegaConf.merge(cfg, SMALL_BUDGETS.get(name, {}))
    return cfg


def describe(cfg: Any) -> str:
    return ", ".join(f"{k}={cfg[k]}" for k in BUDGET_KEYS if k in cfg and cfg[k] is not None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=("config", "small"), default="config")
    parser.add_argument("--n-samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--methods", nargs="*", default=None, help=f"subset of: {' '.join(METHODS)}")
    parser.add_argument("--random-model", action="store_true", help="untrained ResNet-8 on random inputs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("overrides", nargs="*", help="run-config overrides, e.g. cache_dir=...")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.methods or [p.stem for p in sorted(METHOD_DIR.glob("*.yaml"))]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        parser.error(f"unknown method {unknown[0]!r}; choose from: {', '.join(METHODS)}")

    model, ctx, x, targets, what = load_setup(args.random_model, args.n_samples, args.overrides)
    n = len(x)
    print(f"model: {what}; {n} samples of shape {tuple(x.shape[1:])}, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}, budget: {args.budget}")
    forward_backward_seconds(model, x[: args.batch_size], targets[: args.batch_size], args.batch_size, 1)
    fb_before = forward_backward_seconds(model, x, targets, args.batch_size) / n
    print(f"one forward+backward pass: {fb_before * 1e3:.3f} ms per sample\n")

    rows = []
    for name in names:
        cfg = budgeted_config(name, args.budget)
        cls = get_class(cfg._target_)
        try:
            cls.check_compatible(ctx.modality, ctx.model_kind)
        except ValueError as exc:
            rows.append({"method": name, "note": f"n/a: {exc}"})
            continue
        method = build_explainer(cfg, model, ctx)
        start = time.perf_counter()
        method(x[:1], targets[:1])
        warm = time.perf_counter() - start
        seconds = 0.0
        for i in range(0, n, args.batch_size):
            seconds += method(x[i : i + args.batch_size], targets[i : i + args.batch_size]).seconds
        per = seconds / n
        rows.append({"method": name, "signed": method.signed, "per": per, "warm": warm, "note": describe(cfg)})
        print(f"  {name}: {per * 1e3:.3g} ms/sample", flush=True)

    fb_after = forward_backward_seconds(model, x, targets, args.batch_size) / n
    fb = (fb_before + fb_after) / 2
    print(f"\none forward+backward pass: {fb_before * 1e3:.3f} ms per sample before the methods, "
          f"{fb_after * 1e3:.3f} after; unit = {fb * 1e3:.3f} ms")
    print()
    print_table(rows, fb)
    return 0


def print_table(rows: list[dict[str, Any]], unit: float) -> None:
    header = ("method", "signed", "ms/sample", "x fwd+bwd", "warm-up s", "budget")
    cells = [header]
    for r in rows:
        if "per" not in r:
            cells.append((r["method"], "-", "-", "-", "-", r["note"]))
        else:
            cells.append((r["method"], "yes" if r["signed"] else "no", f"{r['per'] * 1e3:.3g}",
                          f"{r['per'] / unit:.3g}", f"{r['warm']:.2f}", r["note"]))
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    cells.insert(1, tuple("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())


if __name__ == "__main__":
    raise SystemExit(main())
