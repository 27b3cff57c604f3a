"""``python -m experiments.records list|show [filters]``: what is stored, one line per record, and
one record's settings and scores; the filters shared with the table writers' ``--where``."""
from __future__ import annotations

import pytest

from experiments.report.browse import main as records
from tests.helpers.table_records import write_cell


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    write_cell(root, "backtrace", n=12, created="2026-01-03T00:00:00+00:00")
    write_cell(root, "saliency", n=12, created="2026-01-02T00:00:00+00:00")
    write_cell(root, "ig", n=8, table="other", model="cnn", created="2026-01-01T00:00:00+00:00")
    return root


def test_list_prints_one_line_per_record_newest_first(runs, capsys):
    assert records(["list", "--results-dir", str(runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["hash", "table", "model", "dataset", "method", "n", "created"]
    assert [line.split()[:6] for line in lines[1:4]] == [
        ["toy-backtrace-12", "toy", "mlp", "toy_rows", "backtrace", "12"],
        ["toy-saliency-12", "toy", "mlp", "toy_rows", "saliency", "12"],
        ["other-ig-8", "other", "cnn", "toy_rows", "ig", "8"]]
    assert lines[1].split()[6] == "2026-01-03T00:00:00+00:00"
    assert lines[4] == f"3 records under {runs}"


@pytest.mark.parametrize("filters, hashes", [
    (["model=mlp"], ["toy-backtrace-12", "toy-saliency-12"]),
    (["method=ig,saliency"], ["toy-saliency-12", "other-ig-8"]),
    (["table=other"], ["other-ig-8"]),
    (["n_samples=12", "method=backtrace"], ["toy-backtrace-12"]),      # a config path
    (["model.train.epochs=3", "n=8"], ["other-ig-8"]),
    (["hash=toy-s"], ["toy-saliency-12"]),                             # a hash prefix
])
def test_filters_choose_records(runs, capsys, filters, hashes):
    assert records(["list", *filters, "--results-dir", str(runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:-1]] == hashes


def test_show_prints_the_settings_and_the_scores(runs, capsys):
    assert records(["show", "toy-back", "--results-dir", str(runs)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"record          toy-backtrace-12 ({runs / 'toy-backtrace-12'})"
    assert out[3].startswith("model           mlp (cache key ") and "weights sha256 aaaaaaaaaaaa, test accuracy 0.900)" in out[3]
    assert out[6] == "samples         12 explained (first, seed 0)"
    assert out[10].split() == ["metric", "better", "mean", "n", "n_nan"]
    assert out[11].split() == ["faith", "higher", "0", "12", "0"]
    assert out[12].split() == ["complexity", "lower", "0", "12", "0"]


@pytest.mark.parametrize("args, message", [
    (["list", "modle=mlp"], "error: unknown filter 'modle': no record has that setting; valid keys: hash, table, "
                            "model, dataset, method, n, created, cache_key, weights, or a config path such as "
                            "n_samples or method.n_steps"),
    (["lst"], "error: unknown command 'lst'; valid choices: list, show"),
    (["list", "model=resnet"], "error: no records under {runs} match model=resnet"),
    (["list", "model"], "error: no records under {runs} match model"),   # a bare word is a hash prefix
])
def test_bad_filters_and_commands_are_one_line(runs, capsys, args, message):
    assert records([*args, "--results-dir", str(runs)]) == 2
    assert capsys.readouterr().err.strip() == message.format(runs=runs)
