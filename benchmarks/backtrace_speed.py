"""Speed and memory of our DLBacktrace against the reference and against one Saliency pass.

Run as ``.venv/bin/python benchmarks/backtrace_speed.py [--repeats N] [--threads T]``. It prints,
measured in this one run on this machine, then repeated in a summary block with the targets:

1. the reference (dl-backtrace 0.0.25, PyTorch, explains one sample per call) per-sample time
   and ours at batch 64 on the same 3x32x32 two-conv CNN, and the ratio (target >= 300x);
2. our explanation time over one captum Saliency (forward + backward) pass on a CIFAR-style
   ResNet-8 at batch 64 (target <= 2x);
3. peak memory of the jobs;
4. transformers (``--cases transformers``, or all by default), one thread by default: a
   MiniLM-L6-size BERT encoder (6 layers, hidden 384, 12 heads) with a classification head at
   sequence length 64, batch 32, and a small GPT-2 decoder (4 layers, hidden 256, GPT-2's
   vocabulary) on 64-token prompts, batch 16 (next-token logit): our time and peak memory over
   one captum Saliency pass on the input embeddings (targets <= 3x time, <= 2x memory). The
   models are exported once (torch.export) in the warm-up round, and the memory subprocess
   warms up on the same batch (an export is per input shape) with malloc set to hand freed
   memory back (see ``_return_freed_memory``), so the peak is what the run holds at once.

Jobs that are compared are timed side by side: each of ``--repeats`` rounds runs every job of
the comparison once, after one warm-up round. Times printed are medians over the rounds; a
ratio is the median of the per-round ratios, each pairing timings taken moments apart, so
drift in the machine's load hits both sides alike. ``--threads`` (default 1) sets torch's
intra-op threads for every job: on a small machine shared with other work, contended intra-op
parallelism makes timings swing by several times; the reference computes in per-sample numpy
loops either way. Our engine runs 4-D inputs in channels-last memory (see ``backtrace.engine``);
captum runs the model as given, and a Saliency pass on a channels-last input is printed for
comparison.

Memory is measured in a fresh subprocess per job and setting. The subprocess builds the model
and input (in the second setting it then runs the job once on a one-sample batch, so that
one-time costs such as tracing, library and kernel set-up are left out), notes its resident set
size (VmRSS), resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), runs the job once
and reports the new peak (VmHWM) minus the RSS before. That is the extra physical memory the
job needed at its peak on top of model and data (numpy arrays, Python objects and torch's CPU
buffers alike; ``tracemalloc`` would miss torch tensors). Heap memory left resident by the
warm-up is reused, which is why the reference's one-sample call then needs almost nothing
more. Where clear_refs is not writable, a thread samples VmRSS every millisecond instead (may
miss short spikes). No assertions: this is a report.

``--cases llm`` runs the decoder benchmark instead (``benchmarks/llm_speed.py``, in its own
process, with ``--repeats``, ``--threads`` and ``--lengths``, default 128 512 1024): SmolLM2-135M
against one Saliency pass at each prompt length, contrastive over default mode, and a continuation
explained in one call against one call per token.
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
DEFAULT_REPEATS = 7
SPEEDUP_TARGET = 300.0       # reference per-sample time / ours, at least
SALIENCY_TARGET = 2.0        # ours / one Saliency pass, at most
TRANSFORMER_TIME_TARGET = 3.0      # ours / one Saliency pass on the embeddings, at most
TRANSFORMER_MEMORY_TARGET = 2.0    # peak memory, ours / that pass, at most


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
    from experiments.zoo.models import ResNet

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


def job_saliency_channels_last(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """The same Saliency pass on the input in channels-last memory (the layout our engine uses)."""
    return job_saliency(model, x.contiguous(memory_format=torch.channels_last))


def _minilm_size() -> tuple[nn.Module, dict]:
    """A randomly initialised BERT of all-MiniLM-L6-v2's size with a 2-class head; batch 32 of
    64 tokens, a quarter of them padded to lengths 40-63."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                  intermediate_size=1536, max_position_embeddings=512, num_labels=2)
    model = transformers.BertForSequenceClassification(cfg).eval()
    ids = torch.randint(1000, 30000, (32, 64))
    mask = torch.ones_like(ids)
    for b in range(0, 32, 4):
        mask[b, 40 + b % 24:] = 0
    return model, {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}


def _gpt2_small() -> tuple[nn.Module, dict]:
    """A GPT-2 decoder with 4 layers of hidden size 256 (4 heads) and GPT-2's 50257-token
    vocabulary; batch 16 of 64-token prompts."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=256, n_layer=4, n_head=4, n_positions=128)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(0, 50257, (16, 64))
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def job_ours_text(model: nn.Module, inputs: dict) -> Callable[[], object]:
    """Our explain() on the tokenizer-style mapping (a decoder: the next token at the end)."""
    from backtrace import explain

    options = {"task": "generation"} if "GPT2" in type(model).__name__ else {}
    return lambda: explain(model, inputs, mode="default", **options)


def job_saliency_text(model: nn.Module, inputs: dict) -> Callable[[], object]:
    """captum Saliency on the input embeddings: one forward and one backward pass for the
    predicted class (a decoder: the predicted next token)."""
    from captum.attr import Saliency

    decoder = "GPT2" in type(model).__name__
    embeds = model.get_input_embeddings()(inputs["input_ids"]).detach()

    def forward(e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = model(inputs_embeds=e, attention_mask=mask).logits
        return logits[:, -1] if decoder else logits

    with torch.no_grad():
        target = forward(embeds, inputs["attention_mask"]).argmax(dim=1)
    sal = Saliency(forward)
    return lambda: sal.attribute(embeds, target=target, abs=True, additional_forward_args=(inputs["attention_mask"],))


JOBS = {
    "ours_minilm": (_minilm_size, job_ours_text),
    "saliency_minilm": (_minilm_size, job_saliency_text),
    "ours_gpt2": (_gpt2_small, job_ours_text),
    "saliency_gpt2": (_gpt2_small, job_saliency_text),
    "reference_cnn": (_cnn, job_reference_cnn),
    "ours_cnn": (_cnn, job_ours),
    "ours_resnet": (_resnet, job_ours),
    "ours_resnet_traced": (_resnet, job_ours_traced),
    "saliency_resnet": (_resnet, job_saliency),
}


def side_by_side(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each job in each round, the jobs taking turns within a round."""
    for run in runs.values():
        run()                                         # warm-up (first-call allocations, caches)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    return times


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of ``num / den``: each ratio pairs two timings taken moments apart,
    so a change in the machine's load between rounds cancels out."""
    return statistics.median(a / b for a, b in zip(num, den))


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


def measure_memory_here(name: str, warm_up: bool) -> float:
    """In this (fresh) process: peak RSS during one run of job ``name`` minus RSS before, MiB."""
    make, job = JOBS[name]
    if name in TRANSFORMER_JOBS:
        _return_freed_memory()
    model, x = make()
    if warm_up:
        # one-time costs: tracing, library and kernel set-up (torch.export traces per input shape)
        job(model, x if isinstance(x, dict) else x[:1])()
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


TRANSFORMER_JOBS = ("ours_minilm", "saliency_minilm", "ours_gpt2", "saliency_gpt2")


def _return_freed_memory() -> None:
    """glibc malloc: serve every allocation over 64 KiB by mmap and trim freed heap at once, so
    resident memory follows the live tensors. Otherwise memory freed by the warm-up stays
    resident and is reused, and the measured growth depends on how each job's allocations
    happened to fit into it (a few MiB for one job, a hundred for another of the same size)."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 64 * 1024)      # M_MMAP_THRESHOLD
    libc.mallopt(-1, 64 * 1024)      # M_TRIM_THRESHOLD


def measure_memory(name: str, threads: int, warm_up: bool) -> float:
    out = subprocess.run([sys.executable, __file__, "--memory-of", name, "--threads", str(threads)]
                         + (["--warm-up"] if warm_up else []), capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "TQDM_DISABLE": "1"})
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_growth_mib"])


def transformer_cases(repeats: int) -> list[tuple[str, float, float, float, float]]:
    """Per case: (label, ours s, Saliency s, time ratio, memory ratio), printed as measured."""
    threads = torch.get_num_threads()
    rows = []
    for key, make, label in (("minilm", _minilm_size, "MiniLM-size encoder, seq 64, batch 32"),
                             ("gpt2", _gpt2_small, "GPT-2 4x256 decoder, prompt 64, batch 16")):
        model, inputs = make()
        t = side_by_side({"sal": job_saliency_text(model, inputs), "ours": job_ours_text(model, inputs)}, repeats)
        sal_s, ours_s = statistics.median(t["sal"]), statistics.median(t["ours"])
        ratio = paired_ratio(t["ours"], t["sal"])
        mem_ours = measure_memory(f"ours_{key}", threads, warm_up=True)
        mem_sal = measure_memory(f"saliency_{key}", threads, warm_up=True)
        mem_ratio = mem_ours / max(mem_sal, 1e-9)
        print(f"\n(4) {label}, default mode")
        print(f"  captum Saliency on the embeddings (fwd + bwd): {sal_s * 1e3:9.1f} ms   {mem_sal:8.1f} MiB")
        print(f"  ours, explain()                              : {ours_s * 1e3:9.1f} ms   {mem_ours:8.1f} MiB")
        print(f"  ours / Saliency                              : {ratio:9.2f}x      {mem_ratio:8.2f}x"
              f"   (targets <= {TRANSFORMER_TIME_TARGET:.0f}x time, <= {TRANSFORMER_MEMORY_TARGET:.0f}x memory)")
        rows.append((label, ours_s, sal_s, ratio, mem_ratio))
    return rows


def llm_cases(repeats: int, threads: int, lengths: list[int]) -> int:
    """The decoder cases, printed by ``llm_speed.py`` in a process of its own (it loads SmolLM2)."""
    script = Path(__file__).resolve().with_name("llm_speed.py")
    command = [sys.executable, str(script), "--repeats", str(repeats), "--threads", str(threads),
               "--lengths", *map(str, lengths)]
    return subprocess.run(command).returncode


def main(repeats: int, cases: str = "all") -> None:
    t_start = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {BATCH}, "
          f"{repeats} side-by-side rounds after a warm-up round: median times, median of per-round ratios")
    if cases == "transformers":
        rows = transformer_cases(repeats)
        print("\n" + "=" * 78)
        print(f"SUMMARY ({torch.get_num_threads()} thread(s), {repeats} rounds, "
              f"{time.perf_counter() - t_start:.0f} s)")
        _print_transformer_summary(rows)
        print("=" * 78)
        return

    model, x = _cnn()
    t = side_by_side({"ref": job_reference_cnn(model, x), "ours": job_ours(model, x)}, repeats)
    ref_s, ours_cnn_s = statistics.median(t["ref"]), statistics.median(t["ours"])
    ours_cnn_per = ours_cnn_s / BATCH
    speedup = paired_ratio(t["ref"], t["ours"]) * BATCH
    print("\n(1) two-conv 3x32x32 CNN, default mode")
    print(f"  reference dl-backtrace 0.0.25 : {ref_s * 1e3:10.2f} ms per sample (one sample per call)")
    print(f"  ours, explain() at batch {BATCH}  : {ours_cnn_per * 1e3:10.3f} ms per sample "
          f"({ours_cnn_s * 1e3:.1f} ms per batch)")
    print(f"  speed-up (per sample)         : {speedup:10.1f}x   (target >= {SPEEDUP_TARGET:.0f}x)")

    model, x = _resnet()
    t = side_by_side({"sal": job_saliency(model, x), "ours": job_ours(model, x),
                      "traced": job_ours_traced(model, x), "sal_cl": job_saliency_channels_last(model, x)},
                     repeats)
    sal_s, ours_res_s, ours_traced_s, sal_cl_s = (statistics.median(t[k])
                                                  for k in ("sal", "ours", "traced", "sal_cl"))
    ratio = paired_ratio(t["ours"], t["sal"])
    print(f"\n(2) CIFAR ResNet-8, batch {BATCH}")
    print(f"  captum Saliency (fwd + bwd)   : {sal_s * 1e3:10.1f} ms")
    print(f"  ours, explain()               : {ours_res_s * 1e3:10.1f} ms   ratio {ratio:5.2f}x"
          f"   (target <= {SALIENCY_TARGET:.0f}x)")
    print(f"  ours, predict + eval, all nodes: {ours_traced_s * 1e3:9.1f} ms   ratio "
          f"{paired_ratio(t['traced'], t['sal']):5.2f}x"
          f"   (every layer's relevance kept)")
    print(f"  Saliency, channels-last input : {sal_cl_s * 1e3:10.1f} ms   (ours / this: "
          f"{paired_ratio(t['ours'], t['sal_cl']):.2f}x)")

    print("\n(3) peak memory of one run: peak RSS minus RSS before, fresh subprocess per job")
    threads = torch.get_num_threads()
    jobs = ("reference_cnn", "ours_cnn", "saliency_resnet", "ours_resnet")
    cold = {name: measure_memory(name, threads, warm_up=False) for name in jobs}
    warm = {name: measure_memory(name, threads, warm_up=True) for name in jobs}
    mem_ratio = warm["ours_resnet"] / max(warm["saliency_resnet"], 1e-9)
    labels = {"reference_cnn": "CNN    reference, 1 sample", "ours_cnn": f"CNN    ours, batch {BATCH}",
              "saliency_resnet": f"ResNet Saliency, batch {BATCH}", "ours_resnet": f"ResNet ours, batch {BATCH}"}
    print(f"  {'':30s}  first call   after a one-sample warm-up")
    for name in jobs:
        print(f"  {labels[name]:30s}: {cold[name]:8.1f} MiB   {warm[name]:8.1f} MiB")
    print(f"  {'ResNet ours / Saliency':30s}: {cold['ours_resnet'] / max(cold['saliency_resnet'], 1e-9):8.2f}x"
          f"       {mem_ratio:8.2f}x")

    rows = transformer_cases(repeats) if cases == "all" else []

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print("\n" + "=" * 78)
    print(f"SUMMARY (batch {BATCH}, {threads} thread(s), {repeats} rounds, "
          f"{time.perf_counter() - t_start:.0f} s)")
    print(f"  (1) CNN speed-up over the reference, per sample : {speedup:8.1f}x   "
          f"target >= {SPEEDUP_TARGET:.0f}x   {verdict(speedup >= SPEEDUP_TARGET)}")
    print(f"  (2) ResNet-8 time / one Saliency pass           : {ratio:8.2f}x   "
          f"target <= {SALIENCY_TARGET:.0f}x     {verdict(ratio <= SALIENCY_TARGET)}")
    print(f"  (3) peak memory, ResNet-8 ours / Saliency       : {mem_ratio:8.2f}x   "
          f"({warm['ours_resnet']:.1f} vs {warm['saliency_resnet']:.1f} MiB after a warm-up; first call "
          f"{cold['ours_resnet']:.1f} vs {cold['saliency_resnet']:.1f})")
    print(f"      CNN at batch {BATCH}: ours {warm['ours_cnn']:.1f} MiB after a warm-up ({cold['ours_cnn']:.1f} first "
          f"call); reference {cold['reference_cnn']:.1f} MiB for its first one-sample call")
    _print_transformer_summary(rows)
    print("=" * 78)


def _print_transformer_summary(rows: list[tuple[str, float, float, float, float]]) -> None:
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    for label, _, _, ratio, mem_ratio in rows:
        print(f"  (4) {label}")
        print(f"      time / one Saliency pass on the embeddings  : {ratio:8.2f}x   "
              f"target <= {TRANSFORMER_TIME_TARGET:.0f}x     {verdict(ratio <= TRANSFORMER_TIME_TARGET)}")
        print(f"      peak memory / that pass                     : {mem_ratio:8.2f}x   "
              f"target <= {TRANSFORMER_MEMORY_TARGET:.0f}x     {verdict(mem_ratio <= TRANSFORMER_MEMORY_TARGET)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help=f"timed side-by-side rounds per comparison (default {DEFAULT_REPEATS})")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for every job (default 1)")
    parser.add_argument("--cases", choices=("all", "cnn", "transformers", "llm"), default="all",
                        help="which comparisons to run (default all; llm: SmolLM2, benchmarks/llm_speed.py)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024],
                        help="--cases llm: prompt lengths in tokens (default 128 512 1024)")
    parser.add_argument("--memory-of", choices=sorted(JOBS), help="internal: measure one job's memory and exit")
    parser.add_argument("--warm-up", action="store_true", help="internal: with --memory-of, warm up first")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.memory_of:
        print(json.dumps({"peak_rss_growth_mib": measure_memory_here(args.memory_of, args.warm_up)}))
    elif args.cases == "llm":
        sys.exit(llm_cases(args.repeats, args.threads, args.lengths))
    else:
        main(args.repeats, args.cases)
