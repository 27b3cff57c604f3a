"""Speed and memory of our DLBacktrace against the reference and against one Saliency pass.

Run as ``.venv/bin/python benchmarks/backtrace_speed.py``. It prints, measured in this one run
on this machine:

1. the reference (dl-backtrace 0.0.25, PyTorch, explains one sample per call) per-sample time
   and ours at batch 64 on the same 3x32x32 two-conv CNN, and the ratio (target >= 300x);
2. our explanation time over one captum Saliency (forward + backward) pass on a CIFAR-style
   ResNet-8 at batch 64 (target <= 2x);
3. peak memory of each of those four jobs.

Times are medians of several repeats after one warm-up. Memory is measured in a fresh
subprocess per job: it builds the model and input, notes its resident set size (VmRSS),
resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), runs the job once and reports
the new peak (VmHWM) minus the RSS before. That is the extra physical memory the job needed at
its peak on top of model and data (numpy arrays, Python objects and torch's CPU buffers alike;
``tracemalloc`` would miss torch tensors). Where clear_refs is not writable, a thread samples
VmRSS every millisecond instead (may miss short spikes). No assertions: this is a report.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

os.environ.setdefault("TQDM_DISABLE", "1")   # the reference prints a progress bar per call
warnings.filterwarnings("ignore", message="The use of `x.T`")   # the reference transposes 4-D tensors
warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")   # captum

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

BATCH = 64
REF_REPEATS = 3
OUR_REPEATS = 5


class ReferenceStyleCNN(nn.Module):
    """A two-conv CNN written the way the reference requires: a leading ``nn.Identity`` named
    ``identity``, activations as child modules, biases everywhere, children in execution order,
    a trailing softmax."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.identity = nn.Identity()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=(1, 1))
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=1, padding=(1, 1))
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32 * 8 * 8, num_classes)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        return x


def _cnn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return ReferenceStyleCNN().eval(), torch.randn(BATCH, 3, 32, 32)


def _resnet() -> tuple[nn.Module, torch.Tensor]:
    from experiments.models import ResNet

    torch.manual_seed(0)
    return ResNet(in_channels=3, num_classes=10, depth=8).eval(), torch.randn(BATCH, 3, 32, 32)


# --------------------------------------------------------------------------- the four jobs

def job_reference_cnn(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """One sample through the reference: predict, then eval (default mode)."""
    from dl_backtrace.pytorch_backtrace.backtrace import Backtrace as RefBacktrace

    ref = RefBacktrace(model=model)
    sample = x[:1]

    def run() -> object:
        with torch.no_grad():
            outs = ref.predict(sample)
        return ref.eval(outs, mode="default", multiplier=100.0, task="multi-class classification")

    return run


def job_ours(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """The whole batch through our public one-call API (tracing included)."""
    from backtrace import explain

    return lambda: explain(model, x, mode="default")


def job_ours_traced(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """The whole batch through an already traced :class:`Backtrace` (predict + eval)."""
    from backtrace import Backtrace

    bt = Backtrace(model)
    return lambda: bt.eval(bt.predict(x), mode="default")


def job_saliency(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """captum Saliency: one forward and one backward pass for the predicted class."""
    from captum.attr import Saliency

    with torch.no_grad():
        target = model(x).argmax(dim=1)
    sal = Saliency(model)
    return lambda: sal.attribute(x, target=target, abs=True)


JOBS = {
    "reference_cnn": (_cnn, job_reference_cnn),
    "ours_cnn": (_cnn, job_ours),
    "ours_resnet": (_resnet, job_ours),
    "ours_resnet_traced": (_resnet, job_ours_traced),
    "saliency_resnet": (_resnet, job_saliency),
}


def median_time(run: Callable[[], object], repeats: int) -> float:
    run()                                             # warm-up (first-call allocations, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0        # kB
    raise RuntimeError(f"{key} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")                                   # 5: reset the peak RSS (VmHWM)
        return True
    except OSError:
        return False


def measure_memory_here(name: str) -> float:
    """In this (fresh) process: peak RSS during one run of job ``name`` minus RSS before, MiB."""
    make, job = JOBS[name]
    model, x = make()
    run = job(model, x)
    gc.collect()
    before = _status_mib("VmRSS")
    if _reset_peak_rss():
        run()
        return _status_mib("VmHWM") - before
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _status_mib("VmRSS"))
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    run()
    done.set()
    sampler.join()
    return max(peak[0], _status_mib("VmRSS")) - before


def measure_memory(name: str) -> float:
    out = subprocess.run([sys.executable, __file__, "--memory-of", name], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={**os.environ, "TQDM_DISABLE": "1"})
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_growth_mib"])


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, "
          f"medians of {REF_REPEATS} (reference) / {OUR_REPEATS} (others) runs after a warm-up")

    model, x = _cnn()
    ref_s = median_time(job_reference_cnn(model, x), REF_REPEATS)
    ours_cnn_s = median_time(job_ours(model, x), OUR_REPEATS)
    ours_cnn_per = ours_cnn_s / BATCH
    print("\n(1) two-conv 3x32x32 CNN, default mode")
    print(f"  reference dl-backtrace 0.0.25 : {ref_s * 1e3:10.2f} ms per sample (one sample per call)")
    print(f"  ours, explain() at batch {BATCH}  : {ours_cnn_per * 1e3:10.3f} ms per sample "
          f"({ours_cnn_s * 1e3:.1f} ms per batch)")
    print(f"  speed-up (per sample)         : {ref_s / ours_cnn_per:10.1f}x   (target >= 300x)")

    model, x = _resnet()
    sal_s = median_time(job_saliency(model, x), OUR_REPEATS)
    ours_res_s = median_time(job_ours(model, x), OUR_REPEATS)
    ours_traced_s = median_time(job_ours_traced(model, x), OUR_REPEATS)
    print(f"\n(2) CIFAR ResNet-8, batch {BATCH}")
    print(f"  captum Saliency (fwd + bwd)   : {sal_s * 1e3:10.1f} ms")
    print(f"  ours, explain() (with tracing): {ours_res_s * 1e3:10.1f} ms   ratio {ours_res_s / sal_s:5.2f}x")
    print(f"  ours, traced predict + eval   : {ours_traced_s * 1e3:10.1f} ms   ratio {ours_traced_s / sal_s:5.2f}x"
          f"   (target <= 2x)")

    print("\n(3) peak memory of one run: peak RSS minus RSS before, fresh subprocess per job")
    mem = {name: measure_memory(name) for name in
           ("reference_cnn", "ours_cnn", "saliency_resnet", "ours_resnet")}
    print(f"  CNN    reference, 1 sample    : {mem['reference_cnn']:8.1f} MiB")
    print(f"  CNN    ours, batch {BATCH}         : {mem['ours_cnn']:8.1f} MiB "
          f"({mem['ours_cnn'] / BATCH:.2f} MiB per sample)")
    print(f"  ResNet Saliency, batch {BATCH}     : {mem['saliency_resnet']:8.1f} MiB")
    print(f"  ResNet ours, batch {BATCH}         : {mem['ours_resnet']:8.1f} MiB   "
          f"ratio {mem['ours_resnet'] / max(mem['saliency_resnet'], 1e-9):5.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-of", choices=sorted(JOBS), help="internal: measure one job's memory and exit")
    args = parser.parse_args()
    if args.memory_of:
        print(json.dumps({"peak_rss_growth_mib": measure_memory_here(args.memory_of)}))
    else:
        main()
