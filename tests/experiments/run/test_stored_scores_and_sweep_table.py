"""What a user sees of stored results while running: a rerun of a cell prints the scores stored
for it, a sweep ends with a compact table of its cells; every record carries its model's weight hash."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from experiments.run.config import compose
from experiments.run.runner import run
from experiments.run.sweep_index import cells_table
from experiments.zoo.training import _load
from metrics.statistics import significant
from tests.helpers.faults_helpers import TINY, cli
from tests.helpers.table_records import write_cell


def test_a_rerun_prints_the_stored_scores(run_dirs, capsys):
    cfg = compose(TINY + run_dirs)
    first = run(cfg)
    stored = json.loads((first.path / "record.json").read_text())
    capsys.readouterr()
    second = run(cfg)
    out = capsys.readouterr().out
    assert second.skipped and second.record == stored
    words = " ".join(out.split())                 # the console table wraps its title to its width
    assert f"method saliency, 4 samples (stored {stored['created']})" in words
    for name, metric in stored["metrics"].items():
        line = next(line for line in out.splitlines() if f" {name} " in line)
        assert f" {significant(metric['mean'])} " in line
    assert words.endswith(f"record exists, skipping: {first.path} (force=true reruns)")


def test_the_record_holds_the_weight_hash_of_the_cached_model(run_dirs, tmp_path):
    result = run(compose(TINY + run_dirs))
    model = result.record["model"]
    (cache_file,) = (tmp_path / "cache" / "models").glob("mlp-*.pt")
    meta, _ = _load(cache_file)
    assert model["weights_sha256"] == meta["sha256"]          # the hash of the cached state-dict blob
    forced = run(compose(TINY + run_dirs + ["force=true"]))    # loaded from the cache this time
    assert forced.record["model"]["from_cache"] and forced.record["model"]["weights_sha256"] == meta["sha256"]


def test_the_cells_table_names_cells_by_what_differs(tmp_path):
    a = write_cell(tmp_path, "backtrace", n=4)
    b = write_cell(tmp_path, "saliency", n=4)
    for folder, faith, complexity in ((a, 0.91234, 7.04e-4), (b, -0.5, 12.0)):
        record = json.loads((folder / "record.json").read_text())
        record["metrics"]["faith"]["mean"], record["metrics"]["complexity"]["mean"] = faith, complexity
        (folder / "record.json").write_text(json.dumps(record))
    index = pd.DataFrame({"job": [0, 1, 2], "status": ["ok", "skipped", "error"], "seconds": 1.0, "message": "",
                          "overrides": ["+experiment=x method=backtrace n_samples=4",
                                        "+experiment=x method=saliency n_samples=4",
                                        "+experiment=x method=lime n_samples=4"],
                          "record": [str(a), str(b), ""]})
    assert cells_table(index).splitlines() == [
        "cell       status   faith ↑  complexity ↓",
        "backtrace  ok         0.912      7.04e-04",
        "saliency   skipped     -0.5            12",
        "lime       error          -             -"]


@pytest.mark.slow
def test_a_sweep_ends_with_its_cells_table_and_the_index(tmp_path):
    args = [a for a in TINY if not a.startswith("method=")]
    code, out, err = cli(["-m", *args, "method=saliency,gradxinput", f"results_dir={tmp_path / 'runs'}",
                          f"cache_dir={tmp_path / 'cache'}"])
    assert code == 0, err
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("cell "))
    assert lines[at].split() == ["cell", "status", "faithfulness_correlation", "↑", "sparseness", "↑"]
    assert [line.split()[:2] for line in lines[at + 1:at + 3]] == [["saliency", "ok"], ["gradxinput", "ok"]]
    assert lines[at + 3].startswith("sweep index: ") and "(2 ok, 0 skipped, 0 error; 2 cells)" in lines[at + 3]
