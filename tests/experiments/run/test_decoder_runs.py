"""Decoders through the harness: a tiny_decoder cell on kv_retrieval records the token ids, the
attributions per token and the sources, its table names the tokens by the kv vocabulary, and a
smollm2 cell runs on the copy prompts (slow; the SmolLM2 weights come from the default cache)."""
from __future__ import annotations

import json
from typing import Optional

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from experiments.data.base import Dataset
from experiments.data.synthetic import synthetic_tabular
from experiments.report.figures import token_rows
from experiments.report.paper_tables import collect
from experiments.run.config import compose
from experiments.run.pipeline import load_dataset
from experiments.run.runner import run
from experiments.zoo.training import build_network

TINY = ["model=tiny_decoder", "dataset.n_train=200", "dataset.n_test=20", "model.train.epochs=1", "n_samples=6",
        "batch_size=4", "table=decoders"]


# shap_partition_tokens names the tokens it groups through the tokenizer of the explain context:
# the kv_retrieval tokenizer (a dataclass) must reach it as itself, not as a config
@pytest.mark.parametrize("method", ["backtrace", "attnlrp", "ig", "shap_partition_tokens"])
def test_a_tiny_decoder_cell_records_tokens_attributions_and_sources(method, run_dirs, one_thread):
    result = run(compose([*TINY, f"method={method}", *run_dirs]))
    record = json.loads((result.path / "record.json").read_text())
    assert record["dataset"]["tokenizer"] == "kv16x16" and record["dataset"]["n_classes"] == 36
    assert set(record["metrics"]) == {"source_ap", "source_pointing_game", "morf_lerf_area",
                                      "text_comprehensiveness", "text_sufficiency"}
    with np.load(result.path / "arrays.npz") as arrays:
        ids, attributions, truth, targets = (arrays[k] for k in ("inputs", "attributions", "ground_truth", "targets"))
    assert ids.shape == attributions.shape == truth.shape == (6, 19)
    assert (attributions[ids < 4] == 0).all()                 # pads, <mask>, | and -> are never features
    assert (truth.sum(1) == 2).all()                          # the answer's key and value
    values = np.where(truth.astype(bool) & (ids >= 20), ids, 0).max(1)
    assert (targets == values).all() and record["targets_from_prediction"] == 0   # the answer, as labelled


def test_a_decoder_table_names_its_tokens_by_its_vocabulary(run_dirs, one_thread):
    for method in ("backtrace", "random"):
        run(compose([*TINY, f"method={method}", *run_dirs]))
    (data,) = collect(run_dirs[0].split("=", 1)[1])
    rows = token_rows(data, n_samples=2)
    assert len(rows) == 2 and set(rows[0].values) == {"backtrace", "random"}
    assert all(t[0] in "kv" for row in rows for t in row.tokens)        # keys and values only
    assert rows[0].rationale.sum() == 2


@pytest.mark.slow
def test_run_py_on_smollm2_with_backtrace(tmp_path, one_thread):
    pytest.importorskip("gguf")
    result = run(compose(["model=smollm2", "method=backtrace", "n_samples=2", "batch_size=2",
                          "dataset.n_prompts=24", "dataset.n_test=2", f"results_dir={tmp_path}"]))
    record = json.loads((result.path / "record.json").read_text())
    assert record["model"]["test_accuracy"] == 1.0                       # the prompts it completes
    assert record["dataset"]["tokenizer"] == "smollm2" and record["dataset"]["n_classes"] == 49152
    scores = record["metrics"]
    assert scores["source_ap"]["n"] == 2 and np.isfinite(scores["morf_lerf_area"]["mean"])
    assert record["diagnostics"]["conservation"]["max"] > 0


class CacheProbe(torch.nn.Module):
    """A network that keeps what it is handed: the run's cache_dir, where it names one."""

    def __init__(self, num_classes: int, cache_dir: Optional[str] = None) -> None:
        super().__init__()
        self.cache_dir = cache_dir
        self.fc = torch.nn.Linear(1, num_classes)


def probe_data(n: int = 8, cache_dir: Optional[str] = None) -> Dataset:
    ds = synthetic_tabular(n_train=n, n_test=n, n_features=3, n_informative=2, seed=0)
    ds.info["cache_dir"] = cache_dir
    return ds


def test_the_runs_cache_dir_reaches_loaders_and_networks_that_take_one(tmp_path):
    cfg = compose(["model=mlp", f"cache_dir={tmp_path}"])
    cfg.dataset = OmegaConf.create({"_target_": f"{__name__}.probe_data", "n": 8})
    assert load_dataset(cfg).info["cache_dir"] == str(tmp_path)
    net = build_network(OmegaConf.create({"name": "probe", "net": {"_target_": f"{__name__}.CacheProbe"}}),
                        load_dataset(cfg), cache_dir=tmp_path)
    assert net.cache_dir == str(tmp_path)
    other = build_network(compose(["model=mlp"]).model, load_dataset(cfg), cache_dir=tmp_path)   # takes none
    assert not hasattr(other, "cache_dir")


def test_smollm2_needs_a_writable_cache_though_pretrained(tmp_path):
    from experiments.errors import ConfigError
    from experiments.run.config import check_output_dirs

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cfg = compose(["model=smollm2", f"cache_dir={blocker}", f"results_dir={tmp_path / 'runs'}"])
    with pytest.raises(ConfigError, match=r"^cache_dir='.*a_file' is a file, not a folder; choose a folder path$"):
        check_output_dirs(cfg)
    check_output_dirs(compose(["model=efficientnet_lite0", f"cache_dir={blocker}", f"results_dir={tmp_path / 'r'}"]))
