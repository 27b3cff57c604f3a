"""Small paper_segmentation and paper_bbox sweeps end to end (slow): published into a temporary
folder, their evidence holds every cell's record and per-sample scores as the runs wrote them,
``reproduce --check`` reruns them to the same scores, and the tables and report page render the
head's value, the model's own test score and per-sample IoU and explained value from the records."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from experiments.report.check import check
from experiments.report.figures import heatmap_figure
from experiments.report.page import write_report
from experiments.report.paper_tables import collect
from experiments.run.config import ROOT
from tests.helpers.folders import file_hashes

pytestmark = pytest.mark.slow

N = 4
TABLES = {"paper_segmentation": ("backtrace,saliency,random", "test IoU"),
          "paper_bbox": ("backtrace,ig,random", "test mean box IoU")}


_tree = file_hashes


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Both tables at 4 samples, three methods each, on models trained one epoch on 64 scenes."""
    tmp = tmp_path_factory.mktemp("dense_sweeps")
    env = {**os.environ, "BACKTRACE_BENCH_NO_PROGRESS": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    before = _tree(ROOT / "results")
    for table, (methods, _) in TABLES.items():
        cmd = [sys.executable, "-m", "experiments.reproduce", table, f"n_samples={N}", "dataset.n_train=64",
               "dataset.n_test=16", "model.train.epochs=1", f"method={methods}", "hydra.launcher.n_jobs=1",
               f"results_dir={tmp / 'runs'}", f"cache_dir={tmp / 'cache'}", "--publish", "--out", str(tmp / "out")]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env=env, timeout=1800)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert _tree(ROOT / "results") == before
    return tmp


def _records(root) -> dict[tuple[str, str], tuple[dict, object]]:
    out = {}
    for path in (root / "runs").rglob("record.json"):
        record = json.loads(path.read_text())
        out[(record["config"]["table"], record["method"]["name"])] = (record, path.parent)
    return out


def test_evidence_holds_each_dense_cells_record_and_scores_byte_for_byte(swept):
    records = _records(swept)
    for table, (methods, score_name) in TABLES.items():
        folder = swept / "out" / "evidence" / table
        manifest = json.loads((folder / "evidence.json").read_text())
        assert manifest["model"]["test_score_name"] == score_name
        assert len(manifest["cells"]) == len(methods.split(","))
        for method in methods.split(","):
            record, run = records[(table, method)]
            assert manifest["model"]["weights_sha256"] == record["model"]["weights_sha256"]
            assert manifest["model"]["test_score"] == record["model"]["test_score"]
            for name in ("record.json", "scores.csv"):
                assert (folder / method / name).read_bytes() == (run / name).read_bytes()
            assert {"iou", "explained_value"} <= set(pd.read_csv(folder / method / "scores.csv").columns)


@pytest.mark.parametrize("table", TABLES)
def test_check_reruns_a_dense_table_to_the_same_scores(swept, table, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BACKTRACE_BENCH_HOME", str(tmp_path / "home"))
    code = check(table, [f"n_samples={N}", f"cache_dir={swept / 'cache'}"], swept / "out" / "evidence")
    out = capsys.readouterr().out.splitlines()
    assert code == 0, "\n".join(out)
    assert out[-1].startswith(f"{table}: passed: all ")
    rows = {tuple(line.split()[:2]) for line in out if line.split()[:1] and line.split()[0] in TABLES[table][0].split(",")}
    assert ("backtrace", "iou") in rows and ("backtrace", "explained_value") in rows and ("random", "mprt") in rows


def test_tables_and_report_page_of_the_sweeps_render_head_score_and_rows(swept, tmp_path):
    import matplotlib.pyplot as plt

    records = _records(swept)
    data = {d.name: d for d in collect(swept / "runs")}
    for table, (methods, score_name) in TABLES.items():
        record, run = records[(table, "backtrace")]
        heading = (swept / "out" / "tables" / f"{table}.md").read_text().splitlines()[0]
        assert f"({score_name} {record['model']['test_score']:.3f}), {N} test samples;" in heading
        assert f"every method explains **{record['dense']['explains']}** (the {record['dense']['task']} head's value" \
            in heading
        scores = pd.read_csv(run / "scores.csv")
        fig = heatmap_figure(data[table], n_rows=2)
        labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
        assert labels == [f"#{int(s)}\nIoU: {iou:.2f}\nvalue: {v:.3g}"
                          for s, iou, v in scores[["sample", "iou", "explained_value"]].head(2).itertuples(index=False)]
        plt.close(fig)
    page = write_report(swept / "runs", tmp_path / "report").read_text()
    for table in TABLES:
        assert f'id="table-{table}"' in page and (tmp_path / "report" / f"{table}_heatmaps.png").is_file()
    assert "IoU of the prediction, explained value" in page
