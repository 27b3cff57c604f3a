"""Tables and figures of dense models on synthetic records: the heading declares the value every
method explains and the model's own test score; heatmap rows give each sample's IoU and explained
value and outline the predicted and true mask (segmentation) or box (regression)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.report.figures import heatmap_figure
from experiments.report.page import write_report
from experiments.report.paper_tables import build, collect, to_markdown
from experiments.run.records import write_record

METHODS = ("backtrace", "ig", "random")
SEG_EXPLAINS = "S = sum of the foreground probabilities p over the pixels with p > 0.5"
BOX_EXPLAINS = "one predicted box coordinate (target 0..3: x0, y0, x1, y1, as fractions of the image)"


def _record(table: str, task: str, method: str, n: int, explains: str, head: dict, score_name: str) -> dict:
    return {
        "config_hash": f"{table}-{method}", "created": "2026-01-01T00:00:00+00:00", "n_samples": n,
        "config": {"table": table, "seed": 0, "target": "label", "output": "identity", "n_samples": n,
                   "sample_selection": "first", "channel_reduction": "sum"},
        "model": {"name": "net", "test_accuracy": None, "test_score": 0.8125, "test_score_name": score_name,
                  "cache_key": "abc123"},
        "dataset": {"name": "scenes", "modality": "image", "n_classes": 1, "class_names": ["object"],
                    "ground_truth": True},
        "method": {"name": method, "signed": method != "random", "params": {}, "budget": {}, "absent": {},
                   "returns": {"mixed_sign_samples": 1.0 if method != "random" else 0.0}},
        "output": "identity", "saturated_samples": None,
        "runtime": {"seconds_per_sample": 0.01, "forward_backward_units": 10.0},
        "metrics": {"faith": {"direction": "higher", "mean": 0.0, "n": n, "n_nan": 0, "params": {}}},
        "dense": {"task": task, "explains": explains, "head": head},
    }


def write_dense_table(root: Path, task: str, n: int = 4, size: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    inputs = rng.uniform(0, 0.5, (n, 1, size, size)).astype(np.float32)
    true_boxes = np.array([[2, 2, 6, 8], [4, 1, 10, 5], [0, 0, 12, 12], [3, 3, 5, 9]], dtype=np.float32)[:n] / size
    pred_boxes = np.clip(true_boxes + 1.0 / size, 0, 1).astype(np.float32)
    masks = np.zeros((n, 1, size, size), dtype=np.float32)
    for i, (x0, y0, x1, y1) in enumerate((true_boxes * size).astype(int)):
        masks[i, 0, y0:y1, x0:x1] = 1
    pred_masks = np.roll(masks, 1, axis=-1)
    seg = task == "binary-segmentation"
    table = "paper_segmentation" if seg else "paper_bbox"
    arrays = {"inputs": inputs, "ground_truth": masks, "targets": np.zeros(n, dtype=np.int64), "sample": np.arange(n),
              "predicted": pred_masks if seg else pred_boxes, "true": masks if seg else true_boxes}
    for k, method in enumerate(METHODS):
        scores = pd.DataFrame({"sample": np.arange(n), "label": np.zeros(n, dtype=int), "iou": [0.5, 0.25, 1.0, 0.75][:n],
                               "explained_value": [3.5, 12.0, 0.25, 40.0][:n], "target": np.zeros(n, dtype=int),
                               "faith": rng.normal(k, 0.3, n)})
        record = _record(table, task, method, n, SEG_EXPLAINS if seg else BOX_EXPLAINS,
                         {"thresholding": 0.5} if seg else {"box_output": "coordinate", "coordinate": 0},
                         "test IoU" if seg else "test mean box IoU")
        write_record(root, f"{table}-{method}", record, scores,
                     {**arrays, "attributions": (masks + rng.normal(0, 0.1, masks.shape)).astype(np.float32)})
    return arrays


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("dense") / "runs"
    seg = write_dense_table(root, "binary-segmentation")
    box = write_dense_table(root, "bbox-regression")
    return {d.name: d for d in collect(root)}, root, seg, box


def test_headings_declare_the_explained_value_and_the_models_test_score(tables):
    data = tables[0]
    seg = to_markdown(data["paper_segmentation"], build(data["paper_segmentation"]))
    heading = seg.splitlines()[0]
    assert "model `net` on `scenes` (test IoU 0.812), 4 test samples;" in heading
    assert (f"every method explains **{SEG_EXPLAINS}** (the binary-segmentation head's value, thresholding=0.5), "
            "and every metric reads it.") in heading
    assert "softmax" not in heading and "accuracy" not in heading and "saturated" not in heading
    box = to_markdown(data["paper_bbox"], build(data["paper_bbox"])).splitlines()[0]
    assert "(test mean box IoU 0.812)" in box
    assert f"**{BOX_EXPLAINS}** (the bbox-regression head's value, box_output=coordinate, coordinate=0)" in box


def test_method_notes_name_the_head_value_not_the_identity_output(tables):
    data = tables[0]
    for name, task in (("paper_segmentation", "binary-segmentation"), ("paper_bbox", "bbox-regression")):
        md = to_markdown(data[name], build(data[name]))
        assert f"| backtrace | {task} head value |" in md
        assert "| identity |" not in md


def test_segmentation_rows_give_iou_and_value_and_outline_both_masks(tables):
    import matplotlib.pyplot as plt

    data, _, arrays, _ = tables
    fig = heatmap_figure(data["paper_segmentation"], n_rows=2)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["#0\nIoU: 0.50\nvalue: 3.5", "#1\nIoU: 0.25\nvalue: 12"]
    cells = [ax for ax in fig.axes if ax.images]
    assert len(cells) == 2 * (len(METHODS) + 1)
    for ax in cells:   # the true mask (solid green), then the predicted one (dashed orange)
        assert len(ax.collections) == 2
    true_path, pred_path = (c.get_paths()[0].vertices for c in cells[0].collections)
    rows, cols = np.nonzero(arrays["true"][0, 0])
    assert true_path[:, 0].min() == pytest.approx(cols.min() - 0.5, abs=0.51)
    assert pred_path[:, 0].min() == pytest.approx(cols.min() + 0.5, abs=0.51)   # predicted: one column right
    assert "green: true mask, orange dashed: predicted mask" in fig._suptitle.get_text()
    plt.close(fig)


def test_box_rows_draw_the_true_and_predicted_boxes_as_rectangles(tables):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    data, _, _, arrays = tables
    fig = heatmap_figure(data["paper_bbox"], n_rows=2)
    cells = [ax for ax in fig.axes if ax.images]
    for ax in cells:
        assert len(ax.collections) == 0                       # no mask contour: the box is drawn
        rects = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert len(rects) == 2
    true_rect, pred_rect = (p for p in cells[2].patches if isinstance(p, Rectangle))   # row 0, a method's cell
    x0, y0, x1, y1 = arrays["true"][0] * 12
    assert true_rect.get_xy() == pytest.approx((x0 - 0.5, y0 - 0.5))
    assert (true_rect.get_width(), true_rect.get_height()) == pytest.approx((x1 - x0, y1 - y0))
    assert pred_rect.get_xy() == pytest.approx((x0 + 0.5, y0 + 0.5)) and pred_rect.get_linestyle() == "dashed"
    plt.close(fig)


def test_the_report_page_holds_both_dense_tables(tables, tmp_path):
    _, root, _, _ = tables
    index = write_report(root, tmp_path / "report")
    page = index.read_text()
    for name in ("paper_segmentation", "paper_bbox"):
        assert f'id="table-{name}"' in page and (tmp_path / "report" / f"{name}_heatmaps.png").is_file()
    assert "value explained" in page and "IoU of the prediction, explained value" in page
