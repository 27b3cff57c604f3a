"""Cost of the text deletion metrics, batched as they run, against one sequence per forward pass.

Run as ``.venv/bin/python benchmarks/text_metrics_cost.py [--samples N] [--compare K] [--repeats R]
[--threads T]``. On the pretrained MiniLM-L6 classifier (the ``bert`` model's encoder with a
fresh head) and on an LSTM classifier, with synthetic sentences of 8 to 30 word pieces padded to
48, it prints for every deletion metric of ``metrics/text.py`` (MoRF and LeRF both after every
token and with ``steps: 10``, as the ``text`` set runs them):

1. the time to score ``--samples`` sentences as configured (every perturbed sequence of the batch
   stacked, each distinct one once, ``chunk_size`` 256 per forward), and the sequences scored;
2. on the first ``--compare`` sentences, the time as configured and with one forward pass per
   perturbed sequence (``chunk_size: 1``, as a per-sequence loop would), timed side by side in
   each of ``--repeats`` rounds after a warm-up round, and the median per-round ratio. Both give
   the same scores (checked).

No assertions: this is a report; the machine's load moves the times, the ratios less.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.data.tokenizer import tokenizer_spec  # noqa: E402
from experiments.zoo.text_models import BertClassifier, LSTMClassifier  # noqa: E402
from metrics.text import TEXT_METRICS  # noqa: E402

METRICS = (("text_comprehensiveness", {}), ("text_sufficiency", {}), ("text_morf_auc", {}),
           ("text_morf_auc", {"steps": 10}), ("text_lerf_auc", {}), ("text_lerf_auc", {"steps": 10}))


def batch(n: int, spec: dict, width: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    specials = set(spec["special_token_ids"])
    cls_id, sep_id = 101, 102  # the WordPiece vocabulary's [CLS] and [SEP]
    ids = torch.full((n, width), spec["pad_token_id"])
    for i in range(n):
        length = int(torch.randint(8, 31, (1,), generator=gen))
        words = torch.randint(1000, spec["vocab_size"], (length,), generator=gen)
        words[torch.isin(words, torch.tensor(sorted(specials)))] = 2000
        ids[i, 0], ids[i, 1:length + 1], ids[i, length + 1] = cls_id, words, sep_id
    a = torch.randn(ids.shape, generator=gen) * (ids > sep_id)
    return ids, torch.randint(0, 2, (n,), generator=gen), a


def timed(metric, model, ids, y, a) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    scores = metric(model, ids, y, a)
    return time.perf_counter() - start, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--compare", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = {k: tokenizer_spec()[k] for k in ("vocab_size", "pad_token_id", "mask_token_id", "special_token_ids")}
    torch.manual_seed(0)
    models = {"minilm": BertClassifier(2, **spec, pretrained="minilm").eval(),
              "lstm": LSTMClassifier(2, **spec, embedding_dim=128, hidden=128).eval()}
    ids, y, a = batch(args.samples, spec)
    k = min(args.compare, args.samples)
    print(f"{args.samples} sentences ({int((a != 0).sum())} feature tokens), ratio on the first {k}; "
          f"{args.threads} threads, {args.repeats} rounds")
    print(f"{'model':7} {'metric':31} {'sequences':>9} {'all s':>7} {'first k s':>9} {'1/forward s':>11} {'ratio':>6}")
    for model_name, model in models.items():
        for name, params in METRICS:
            metric, single = TEXT_METRICS[name](**params), TEXT_METRICS[name](**params, chunk_size=1)
            seconds, _ = timed(metric, model, ids, y, a)
            counted = []
            original = metric.target_output
            metric.target_output = lambda m, i, t: (counted.append(len(i)), original(m, i, t))[1]
            metric(model, ids, y, a)
            metric.target_output = original
            times: dict[str, list[float]] = {"batched": [], "single": []}
            for round_ in range(args.repeats + 1):
                tb, reference = timed(metric, model, ids[:k], y[:k], a[:k])
                ts, scores = timed(single, model, ids[:k], y[:k], a[:k])
                np.testing.assert_allclose(scores, reference, atol=1e-5)
                if round_:
                    times["batched"].append(tb)
                    times["single"].append(ts)
            ratio = statistics.median(s / b for s, b in zip(times["single"], times["batched"]))
            label = name + "".join(f" {p}={v}" for p, v in params.items())
            print(f"{model_name:7} {label:31} {sum(counted):9d} {seconds:7.2f} {statistics.median(times['batched']):9.2f} "
                  f"{statistics.median(times['single']):11.2f} {ratio:6.1f}", flush=True)


if __name__ == "__main__":
    main()
