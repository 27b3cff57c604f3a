"""The figures of a table on synthetic records: what each one shows, read back from the drawn
matplotlib figure or the written HTML."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from experiments.report.figures import (heatmap_figure, rank_chart, token_heatmap, token_heatmap_html, token_rows,
                                        write_token_heatmap_html)
from experiments.report.methods import method_title
from experiments.report.paper_tables import collect, main as write_tables
from metrics.statistics import bootstrap_mean_ranks, common_samples, rank_methods, summarise
from tests.helpers.report_records import SENTENCES, write_image_table, write_tabular_table, write_text_table


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures") / "runs"
    write_image_table(root)
    write_tabular_table(root)
    ids, gt = write_text_table(root)
    return {d.name: d for d in collect(root)}, root, ids, gt


def test_method_titles_are_written_out():
    assert method_title("ig") == "Integrated Gradients"
    assert method_title("backtrace_contrastive") == "DLBacktrace (contrastive)"
    assert method_title("ig (n_steps=4)") == "Integrated Gradients (n_steps=4)"
    assert method_title("my_method") == "my_method"


def test_heatmap_rows_name_class_target_prediction_and_outline_the_mask(tables):
    import matplotlib.pyplot as plt

    data = tables[0]["toy_image"]
    fig = heatmap_figure(data, n_rows=3)
    grid = [ax for ax in fig.axes if ax.get_ylabel() or ax.get_title() or ax.images]
    row_labels = [ax.get_ylabel() for ax in grid if ax.get_ylabel()]
    # sample 6 of the synthetic table: class 0 ("square"), predicted 1 ("blank")
    assert row_labels == ["#0\nclass: square\ntarget: square\nprediction: square",
                          "#3\nclass: blank\ntarget: blank\nprediction: blank",
                          "#6\nclass: square\ntarget: square\nprediction: blank"]
    titles = [ax.get_title().replace("\n", " ") for ax in fig.axes if ax.get_title()]
    assert titles == ["input", "DLBacktrace", "DLBacktrace (contrastive)", "Integrated Gradients", "Saliency",
                      "Random (control)"]
    # every cell of a row carries one contour: the ground-truth square's outline
    cells = [ax for ax in fig.axes if ax.images]
    assert len(cells) == 3 * 6 and all(len(ax.collections) == 1 for ax in cells)
    outline = cells[0].collections[0].get_paths()[0].vertices
    rows, cols = np.nonzero(np.load(data.folders["backtrace"] / "arrays.npz")["ground_truth"][0, 0])
    assert outline[:, 1].min() == pytest.approx(rows.min() - 0.5, abs=0.51)
    assert outline[:, 0].max() == pytest.approx(cols.max() + 0.5, abs=0.51)
    # one colour bar per scale in use: saliency is one-signed, the others signed
    bars = [ax for ax in fig.axes if ax.get_xlabel().endswith("max |relevance| of the map")]
    assert sorted(ax.get_xlabel().split(":")[0] for ax in bars) == ["one-signed maps", "signed maps"]
    plt.close(fig)


def test_token_rows_drop_special_and_pad_tokens_and_keep_the_rationale(tables):
    data, _, ids, gt = tables[0]["toy_text"], *tables[1:]
    rows = token_rows(data, n_samples=3)
    assert [r.tokens[:3] for r in rows] == [["the", "movie", "was"], ["a", "truly", "wonderful"], ["boring", "plot", ","]]
    for row, sentence, i in zip(rows, SENTENCES, range(3)):
        keep = ~np.isin(ids[i], [0, 100, 101, 102, 103])
        assert len(row.tokens) == int(keep.sum())
        assert " ".join(row.tokens).replace(" ##", "").replace(" ,", ",") == sentence
        assert row.rationale.tolist() == gt[i][keep].astype(bool).tolist()
        for m, v in row.values.items():
            assert np.abs(v).max() == pytest.approx(1.0)           # scaled per sample and method
            raw = np.load(data.folders[m] / "arrays.npz")["attributions"][i][keep]
            assert np.allclose(v * np.abs(raw).max(), raw if m != "attention_rollout" else np.abs(raw), atol=1e-6)


def test_token_html_colours_by_relevance_and_underlines_rationale(tables, tmp_path):
    data = tables[0]["toy_text"]
    fragment = token_heatmap_html(data, n_samples=1)
    rows = re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", fragment)
    assert [name for name, _ in rows] == ["DLBacktrace", "Attention rollout", "Integrated Gradients", "Random (control)"]
    spans = re.findall(r'<span class="(tok(?: rationale)?)" style="background: rgb\((\d+), (\d+), (\d+)\); '
                       r'color: \w+" title="([^"]+)">([^<]+)</span>', rows[0][1])
    assert [s[5] for s in spans] == ["the", "movie", "was", "not", "good", "at", "all"]
    assert [s[5] for s in spans if s[0] == "tok rationale"] == ["not", "good"]
    # bwr: a larger positive value is a redder, less blue background (green and blue fall)
    by_value = sorted(spans, key=lambda s: float(s[4]))
    positive = [s for s in by_value if float(s[4]) > 0]
    assert [int(s[3]) for s in positive] == sorted((int(s[3]) for s in positive), reverse=True)
    page = write_token_heatmap_html(data, tmp_path / "tokens.html")
    assert page.read_text().startswith("<!DOCTYPE html>") and "text-decoration: underline" in page.read_text()
    assert token_heatmap(data, tmp_path / "tokens.png").stat().st_size > 0


def test_table_writer_gives_text_tables_their_token_heatmap(tables, tmp_path):
    root = tables[1]
    assert write_tables(["--results-dir", str(root), "--out", str(tmp_path)]) == 0
    figures = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert figures == ["toy_image_heatmaps.png", "toy_text_tokens.html", "toy_text_tokens.png"]


def test_bootstrap_mean_ranks_match_the_table_and_cover_it(tables):
    data = tables[0]["toy_image"]
    ranks = bootstrap_mean_ranks(data.scores, data.directions, n_boot=200).set_index("method")
    table = rank_methods(summarise(common_samples(data.scores)), data.directions)["mean_rank"]
    assert np.allclose(ranks.loc[table.index, "mean_rank"], table)
    assert ((ranks["ci_low"] <= ranks["mean_rank"]) & (ranks["mean_rank"] <= ranks["ci_high"])).all()
    assert (ranks["n_metrics"] == 2).all()


def test_bootstrap_mean_ranks_on_a_hand_made_case():
    # a beats b on every sample of "up" (higher is better) and "down" (lower is better): rank 1
    # in every draw; c has no score on "down" and is ranked on "up" only (between a and b there)
    rows = [{"method": m, "metric": "up", "sample": s, "score": v + 0.01 * s}
            for s in range(8) for m, v in (("a", 3.0), ("b", 1.0), ("c", 2.0))]
    rows += [{"method": m, "metric": "down", "sample": s, "score": v} for s in range(8) for m, v in (("a", 0.0), ("b", 1.0))]
    rows += [{"method": "c", "metric": "down", "sample": s, "score": np.nan} for s in range(8)]
    ranks = bootstrap_mean_ranks(pd.DataFrame(rows), {"up": "higher", "down": "lower"}, n_boot=50).set_index("method")
    assert ranks.loc["a"].tolist() == [1.0, 1.0, 1.0, 2]
    assert ranks.loc["b"].tolist() == [2.5, 2.5, 2.5, 2]      # (3 + 2) / 2
    assert ranks.loc["c"].tolist() == [2.0, 2.0, 2.0, 1]


def test_rank_chart_lists_every_method(tables, tmp_path):
    import matplotlib.image

    path = rank_chart(tables[0]["toy_tabular"], tmp_path / "ranks.png", n_boot=50)
    assert matplotlib.image.imread(path).shape[0] > 50
