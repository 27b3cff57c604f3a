"""The figures of a results table, drawn to be read: heatmap grids (images), token heatmaps
(text), the mean-rank chart and the method cost chart.

Every figure says how to read it: methods by their written-out names, the class, target and
prediction of each sample, a colour bar for the scale (each map is scaled to its own largest
|value|, so the bar runs from -1 to 1 of that), and the ground-truth mask outlined where the data
have one; for a dense model, the predicted mask or box outlined beside the true one, and each
sample's IoU and explained value in place of its class and prediction. Figures read the record folders of a :class:`~experiments.report.table_data.TableData`.
"""
from __future__ import annotations

import html
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from experiments.report.methods import method_order, method_title
from experiments.report.table_data import TableData

GROUND_TRUTH_COLOUR = "#00c853"
PREDICTED_COLOUR = "#ff9100"     # a dense model's predicted mask or box (dashed)
SIGNED_CMAP, UNSIGNED_CMAP = "bwr", "Reds"
SCALE_NOTE = "each map scaled to its own max |relevance|"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# -- what each sample is ---------------------------------------------------------------------

@dataclass
class SampleInfo:
    """The explained samples of a table, in the order of its arrays: dataset index, class,
    target and prediction, the class names and the ground-truth masks where known."""

    samples: np.ndarray
    labels: np.ndarray
    targets: np.ndarray
    predictions: np.ndarray
    class_names: Optional[list[str]] = None
    ground_truth: Optional[np.ndarray] = None
    # a dense model's samples: its task, predicted and true masks or boxes, IoU and explained value
    task: Optional[str] = None
    predicted: Optional[np.ndarray] = None
    true: Optional[np.ndarray] = None
    iou: Optional[np.ndarray] = None
    value: Optional[np.ndarray] = None

    def name(self, c: int) -> str:
        if c < 0:
            return "?"
        return self.class_names[c] if self.class_names and c < len(self.class_names) else str(c)

    def describe(self, i: int, sep: str = "\n") -> str:
        if self.task is not None:
            return sep.join([f"#{int(self.samples[i])}",
                             f"IoU: {float(self.iou[i]):.2f}" if self.iou is not None else "IoU: ?",
                             f"value: {float(self.value[i]):.3g}" if self.value is not None else "value: ?"])
        return sep.join([f"#{int(self.samples[i])}", f"class: {self.name(int(self.labels[i]))}",
                         f"target: {self.name(int(self.targets[i]))}",
                         f"prediction: {self.name(int(self.predictions[i]))}"])


# Where the dataset registry was (experiments/datasets.py) when records did not yet keep class
# names and ground truth; such records' dataset configs name it.
LEGACY_REGISTRY = "experiments.datasets."


def _rebuild_dataset(record: dict[str, Any]) -> Any:
    """The table's dataset rebuilt from the record's own config, for records written before the
    class names and ground truth were stored with them; never downloads."""
    cfg = (record.get("config") or {}).get("dataset")
    if not isinstance(cfg, dict) or "_target_" not in cfg:
        return None
    from hydra.utils import instantiate

    cfg = {**cfg, **({"download": False} if "download" in cfg else {})}
    if str(cfg["_target_"]).startswith(LEGACY_REGISTRY):  # such records name the registry's old module
        cfg["_target_"] = "experiments.data.datasets." + str(cfg["_target_"])[len(LEGACY_REGISTRY):]
    try:
        return instantiate(cfg)
    except Exception as exc:  # a loader whose files are not here: the figure goes without
        print(f"note: figures of {record['dataset']['name']} without class names or ground truth "
              f"(dataset not rebuilt: {type(exc).__name__}: {exc})".replace("\n", " "), file=sys.stderr)
        return None


def sample_info(data: TableData) -> SampleInfo:
    """Read the samples' classes from the table's first record (every record of a table explained
    the same samples), class names from ``record.json``, ground truth from ``arrays.npz``, each
    rebuilt from the dataset config only where the record predates them (a record that says
    whether its data have ground truth keeps everything a figure needs)."""
    folder = next(iter(data.folders.values()))
    record = json.loads((folder / "record.json").read_text())
    scores = pd.read_csv(folder / "scores.csv")
    with np.load(folder / "arrays.npz") as arrays:
        targets = arrays["targets"] if "targets" in arrays else scores.get("target", pd.Series(-1, index=scores.index)).to_numpy()
        gt = arrays["ground_truth"] if "ground_truth" in arrays else None
        predicted = arrays["predicted"] if "predicted" in arrays else None
        true = arrays["true"] if "true" in arrays else None
    samples = scores["sample"].to_numpy()
    labels = scores["label"].to_numpy() if "label" in scores else np.full(len(scores), -1)
    preds = scores["prediction"].to_numpy() if "prediction" in scores else np.full(len(scores), -1)
    names = record["dataset"].get("class_names")
    legacy = "ground_truth" not in record["dataset"]
    if legacy and (names is None or (gt is None and data.modality in ("image", "text"))):
        ds = _rebuild_dataset(record)
        if ds is not None:
            names = names or ds.class_names
            if gt is None and ds.ground_truth is not None:
                gt = np.asarray(ds.ground_truth)[samples]
    dense = record.get("dense") or {}
    return SampleInfo(samples, labels, np.asarray(targets), preds, names, gt, dense.get("task"), predicted, true,
                      scores["iou"].to_numpy() if "iou" in scores else None,
                      scores["explained_value"].to_numpy() if "explained_value" in scores else None)


def _outline_dense(ax: Any, info: SampleInfo, i: int, shape: tuple[int, int]) -> None:
    """The predicted (dashed) and true mask or box of sample ``i`` of a dense model; for
    segmentation the true mask is the ground truth, outlined by the caller."""
    if info.task == "binary-segmentation":
        if info.predicted is not None and info.predicted[i].any():
            ax.contour(info.predicted[i].reshape(shape).astype(float), levels=[0.5], colors=PREDICTED_COLOUR,
                       linewidths=0.9, linestyles="dashed")
        return
    from matplotlib.patches import Rectangle

    h, w = shape
    for boxes, colour, style in ((info.true, GROUND_TRUTH_COLOUR, "solid"), (info.predicted, PREDICTED_COLOUR, "dashed")):
        if boxes is None:
            continue
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        # (x0, y0, x1, y1): first column / W ... one past the last row / H; pixel j spans j +- 0.5
        ax.add_patch(Rectangle((x0 * w - 0.5, y0 * h - 0.5), (x1 - x0) * w, (y1 - y0) * h, fill=False,
                               edgecolor=colour, linewidth=0.9, linestyle=style))


def _one_signed(data: TableData, method: str) -> bool:
    """Maps drawn on a sequential scale: no sample of the method had both signs."""
    returns = data.methods.get(method, {}).get("returns") or {}
    return returns.get("mixed_sign_samples", 1.0 if data.signed.get(method, True) else 0.0) <= 0


def _colour_bars(fig: Any, kinds: set[str], rect: Sequence[float], fontsize: float) -> None:
    """One horizontal bar per scale used (signed: -1..1, one-signed: 0..1 of each map's max),
    side by side in ``rect``; its caption on two lines under it, in ``fontsize`` points."""
    plt = _plt()
    from matplotlib.colors import Normalize

    left, bottom, width, height = rect
    kinds_sorted = [k for k in ("signed", "one-signed") if k in kinds]
    w = width / max(len(kinds_sorted), 1)
    for i, kind in enumerate(kinds_sorted):
        cax = fig.add_axes([left + i * w + 0.1 * w, bottom, 0.8 * w, height])
        signed = kind == "signed"
        sm = plt.cm.ScalarMappable(norm=Normalize(-1 if signed else 0, 1), cmap=SIGNED_CMAP if signed else UNSIGNED_CMAP)
        bar = fig.colorbar(sm, cax=cax, orientation="horizontal")
        bar.set_ticks([-1, 0, 1] if signed else [0, 0.5, 1])
        bar.ax.tick_params(labelsize=fontsize)
        bar.set_label(("signed maps" if signed else "one-signed maps") + ":\nrelevance / max |relevance| of the map",
                      fontsize=fontsize)


# -- text legible on the report page ---------------------------------------------------------

# The widest an image is drawn on the report page (its body is at most 1500 CSS px wide, less 2 x 24
# px of padding; images keep max-width: 100%), and the smallest text a figure may show there.
PAGE_IMAGE_PX = 1452
MIN_TEXT_PX = 10.0
CHAR_EM = 0.6            # a generous mean advance of DejaVu Sans, in ems: room for a line of text


def rendered_px(fontsize_pt: float, fig_width_in: float, dpi: float) -> float:
    """How many CSS pixels tall text of ``fontsize_pt`` is drawn on the report page: a point is
    dpi/72 pixels of the PNG, and a PNG wider than the page is scaled down to its width."""
    return fontsize_pt * dpi / 72 * min(1.0, PAGE_IMAGE_PX / (fig_width_in * dpi))


def legible_pt(fig_width_in: float, dpi: float) -> float:
    """The smallest font size (points) drawn :data:`MIN_TEXT_PX` tall on the page (see
    :func:`rendered_px`): on a figure wider than the page it grows with the figure's width."""
    return MIN_TEXT_PX * 72 * max(1 / dpi, fig_width_in / PAGE_IMAGE_PX)


# -- image heatmap grid ------------------------------------------------------------------------

def heatmap_figure(data: TableData, n_rows: int = 6, dpi: int = 110) -> Any:
    """Samples as rows (class, target, prediction at the left), the input then each method as
    columns; the ground-truth mask outlined on every cell where the data have one. Its text is
    sized for a PNG of ``dpi`` on the report page (:func:`legible_pt`). None when the records
    hold no inputs."""

    plt = _plt()
    methods = method_order(list(data.folders))
    arrays = {m: np.load(data.folders[m] / "arrays.npz") for m in methods}
    first = next((a for a in arrays.values() if "inputs" in a), None)
    if first is None:
        return None
    info = sample_info(data)
    inputs = first["inputs"][:n_rows]
    n, cols = len(inputs), len(methods) + 1
    labels = [info.describe(i) for i in range(n)]
    label_chars = max(len(line) for label in labels for line in label.split("\n"))
    cell = 1.45
    # the row labels widen the figure, and a wider figure is drawn smaller on the page: grow the
    # font until it is legible at the figure's own width (converges: the labels are a small part of it)
    font = legible_pt(cell * cols, dpi)
    for _ in range(200):          # bounded: labels of hundreds of characters would never settle
        label_w = 0.2 + label_chars * CHAR_EM * font / 72
        fig_w = label_w + cell * cols
        need = legible_pt(fig_w, dpi)
        if need <= font:
            break
        font = need + 0.01
    title_chars = max(8, int(0.95 * cell * 72 / (CHAR_EM * font)))
    titles = [textwrap.fill(t, title_chars) for t in ["input"] + [method_title(m) for m in methods]]
    title_lines = max(t.count("\n") + 1 for t in titles)
    line = 1.3 * font / 72                      # one line of text, inches
    top = 0.1 + 2 * 1.1 * line + 0.15 + title_lines * line + 0.05
    bar_h, below_bar = 0.14, 0.1 + 3.6 * line   # tick labels and a two-line caption under each bar
    bottom = 0.15 + below_bar + bar_h + 0.15
    fig_h = top + bottom + cell * n
    fig, axes = plt.subplots(n, cols, figsize=(fig_w, fig_h), squeeze=False)
    fig.subplots_adjust(left=label_w / fig_w, right=1 - 0.05 / fig_w, top=1 - top / fig_h, bottom=bottom / fig_h,
                        wspace=0.06, hspace=0.08)
    kinds: set[str] = set()
    for i in range(n):
        img = inputs[i]
        img = img[0] if img.shape[0] == 1 else np.transpose((img - img.min()) / (np.ptp(img) + 1e-12), (1, 2, 0))
        axes[i, 0].imshow(img, cmap="gray" if img.ndim == 2 else None)
        mask = info.ground_truth[i].reshape(img.shape[:2]) if info.ground_truth is not None else None
        for j, m in enumerate(methods, start=1):
            a = arrays[m]["attributions"][i]
            a = a.reshape(a.shape[-2:]) if a.ndim == 3 else a
            scale = float(np.abs(a).max()) or 1.0
            if _one_signed(data, m):
                axes[i, j].imshow(np.abs(a) / scale, cmap=UNSIGNED_CMAP, vmin=0, vmax=1)
                kinds.add("one-signed")
            else:
                axes[i, j].imshow(a / scale, cmap=SIGNED_CMAP, vmin=-1, vmax=1)
                kinds.add("signed")
        if mask is not None and mask.any() and info.task != "bbox-regression":   # boxes: drawn as rectangles
            for j in range(cols):
                axes[i, j].contour(mask.astype(float), levels=[0.5], colors=GROUND_TRUTH_COLOUR, linewidths=0.9)
        if info.task is not None:
            for j in range(cols):
                _outline_dense(axes[i, j], info, i, img.shape[:2])
        axes[i, 0].set_ylabel(labels[i], fontsize=font, rotation=0, ha="right", va="center", labelpad=4)
    for j, title in enumerate(titles):
        axes[0, j].set_title(title, fontsize=font)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if info.task is not None:
        what = "mask" if info.task == "binary-segmentation" else "box"
        note = f"{SCALE_NOTE}; green: true {what}, orange dashed: predicted {what}"
    else:
        note = f"{SCALE_NOTE}" + ("; green outline: ground-truth mask" if info.ground_truth is not None else "")
    fig.suptitle(f"{data.name}: {data.model} on {data.dataset}\n{note}", fontsize=1.1 * font, y=1 - 0.1 / fig_h,
                 va="top")
    _colour_bars(fig, kinds, [label_w / fig_w, (0.15 + below_bar) / fig_h, 1 - (label_w + 0.05) / fig_w, bar_h / fig_h],
                 font)
    for a in arrays.values():
        a.close()
    return fig


def heatmap_grid(data: TableData, path: Path, n_rows: int = 6, dpi: int = 110) -> Optional[Path]:
    """Draw :func:`heatmap_figure` to ``path`` (PNG); None when the records hold no inputs."""
    fig = heatmap_figure(data, n_rows, dpi)
    if fig is None:
        return None
    return _save(fig, path, dpi)


def _save(fig: Any, path: Path, dpi: int = 110, palette: bool = False) -> Path:
    """Write a PNG; ``palette``: as 256 indexed colours (charts of a few flat colours lose
    nothing visible and shrink to about a third; heatmaps would band, so they stay RGB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _plt().close(fig)
    if palette:
        from PIL import Image

        with Image.open(path) as im:
            quantised = im.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
        quantised.save(path, optimize=True)
    return path


# -- text: token heatmaps ----------------------------------------------------------------------

@dataclass
class TokenRow:
    """One sample of a text table: its feature tokens, rationale and each method's relevance."""

    description: str
    tokens: list[str]                 # word pieces (WordPiece "##" continuations, or byte-level BPE "Ġ" spaces)
    rationale: Optional[np.ndarray]   # bool per token, or None
    values: dict[str, np.ndarray]     # method -> relevance per token, scaled to [-1, 1]
    raw: dict[str, np.ndarray]        # method -> relevance per token as recorded
    one_signed: dict[str, bool]


def _special_ids(tokenizer: Any) -> set[int]:
    ids = {int(i) for i in tokenizer.all_special_ids}
    if tokenizer.pad_token_id is not None:
        ids.add(int(tokenizer.pad_token_id))
    return ids


def token_rows(data: TableData, n_samples: int = 4) -> list[TokenRow]:
    """The first ``n_samples`` samples of a text table: special and pad tokens left out, each
    method's values scaled by its largest |value| on that sample."""
    from experiments.data.tokenizer import load_tokenizer

    folder = next(iter(data.folders.values()))
    record = json.loads((folder / "record.json").read_text())
    tokenizer = load_tokenizer(record["dataset"].get("tokenizer", "minilm"))
    special = _special_ids(tokenizer)
    methods = method_order(list(data.folders))
    info = sample_info(data)
    attributions = {}
    ids = None
    for m in methods:
        with np.load(data.folders[m] / "arrays.npz") as a:
            attributions[m] = a["attributions"][:n_samples].reshape(min(n_samples, len(a["attributions"])), -1)
            if ids is None and "inputs" in a:
                ids = a["inputs"][:n_samples].astype(np.int64)
    if ids is None:
        return []
    rows = []
    for i in range(len(ids)):
        keep = np.array([int(t) not in special for t in ids[i]])
        tokens = tokenizer.convert_ids_to_tokens([int(t) for t in ids[i][keep]])
        gt = None if info.ground_truth is None else info.ground_truth[i].reshape(-1)[keep].astype(bool)
        values, raw, one = {}, {}, {}
        for m in methods:
            v = attributions[m][i][keep].astype(np.float64)
            scale = float(np.abs(v).max()) or 1.0
            one[m] = _one_signed(data, m)
            raw[m] = v
            values[m] = np.abs(v) / scale if one[m] else v / scale
        rows.append(TokenRow(info.describe(i, sep=" · "), list(tokens), gt, values, raw, one))
    return rows


def _colour(value: float, one_signed: bool) -> tuple[float, float, float]:
    plt = _plt()
    cmap = plt.get_cmap(UNSIGNED_CMAP if one_signed else SIGNED_CMAP)
    rgba = cmap(float(value) if one_signed else 0.5 + 0.5 * float(value))
    return rgba[0], rgba[1], rgba[2]


def _ink(background: tuple[float, float, float]) -> str:
    """Black text on light backgrounds, white on dark ones (relative luminance below 0.4)."""
    r, g, b = background
    return "white" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.4 else "black"


BPE_SPACE = "\u0120"     # byte-level BPE (GPT-2, SmolLM2) writes a leading space as "Ġ"


def _display(tokens: list[str]) -> list[tuple[str, bool]]:
    """Each piece as shown, and whether a space goes before it: WordPiece marks a continuation
    with ``##`` (no space before it); byte-level BPE marks a space with a leading ``Ġ`` instead
    (no space before a piece without one)."""
    if any(t.startswith(BPE_SPACE) for t in tokens):
        return [(t[1:], True) if t.startswith(BPE_SPACE) else (t, False) for t in tokens]
    return [(t[2:], False) if t.startswith("##") and k else (t, k > 0) for k, t in enumerate(tokens)]


def token_heatmap_figure(data: TableData, n_samples: int = 4, width_chars: int = 96, dpi: int = 110) -> Any:
    """A PNG-ready figure: per sample a header (class, target, prediction), then one line per
    method with every token on a background coloured by its relevance; rationale tokens are
    underlined. Laid out in a monospace font, so positions are exact in character units."""
    from matplotlib.patches import Rectangle

    plt = _plt()
    rows = token_rows(data, n_samples)
    if not rows:
        return None
    methods = list(rows[0].values)
    label_chars = max(len(method_title(m)) for m in methods) + 2
    text_chars = width_chars - label_chars
    lines: list[tuple[str, Any]] = []   # ("head", text) | ("tokens", (method, [(x, piece, value, gt)]))
    kinds: set[str] = set()
    for row in rows:
        lines.append(("head", row.description))
        for m in methods:
            for k, placed in enumerate(_wrap(row, m, text_chars)):
                lines.append(("tokens", (m if k == 0 else "", m, placed)))
            kinds.add("one-signed" if row.one_signed[m] else "signed")
        lines.append(("gap", None))
    fontsize = 8.0
    char_in = 0.602 * fontsize / 72        # DejaVu Sans Mono advance width
    line_in = 1.9 * fontsize / 72
    fig_w = width_chars * char_in + 0.3
    small = max(legible_pt(fig_w, dpi), 7.0)   # the title and the colour bars' captions
    fontsize = max(fontsize, legible_pt(fig_w, dpi))
    bar_h, below_bar = 0.1, 0.1 + 3.6 * 1.3 * small / 72
    bar_in = 0.1 + below_bar + bar_h + 0.15
    fig_h = len(lines) * line_in + 0.3 + 1.3 * small / 72 + bar_in
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes([0.15 / fig_w, bar_in / fig_h, width_chars * char_in / fig_w, len(lines) * line_in / fig_h])
    ax.set_xlim(0, width_chars)
    ax.set_ylim(len(lines), 0)
    ax.axis("off")
    one_signed = {m: rows[0].one_signed[m] for m in methods}
    for y, (kind, content) in enumerate(lines, start=0):
        yc = y + 0.5
        if kind == "head":
            ax.text(0, yc, content, family="monospace", fontsize=fontsize, weight="bold", va="center")
        elif kind == "tokens":
            label, m, placed = content
            if label:
                ax.text(0, yc, method_title(label), family="monospace", fontsize=fontsize, va="center", color="#333333")
            for x, piece, value, gt in placed:
                x0 = label_chars + x
                ax.add_patch(Rectangle((x0, yc - 0.42), len(piece), 0.84, facecolor=_colour(value, one_signed[m]),
                                       edgecolor="none"))
                colour = _colour(value, one_signed[m])
                ax.text(x0 + len(piece) / 2, yc, piece, family="monospace", fontsize=fontsize, ha="center", va="center",
                        color=_ink(colour))
                if gt:
                    ax.plot([x0, x0 + len(piece)], [yc + 0.4, yc + 0.4], color="black", linewidth=1.1)
    fig.text(0.5, 1 - 0.08 / fig_h, f"{data.name}: {data.model} on {data.dataset}; {SCALE_NOTE} per sample"
             + ("; underlined: rationale tokens" if rows[0].rationale is not None else ""),
             ha="center", va="top", fontsize=small)
    _colour_bars(fig, kinds, [0.05, (0.1 + below_bar) / fig_h, 0.9, bar_h / fig_h], small)
    return fig


def _words(tokens: list[str]) -> list[list[tuple[int, str]]]:
    """The pieces grouped into words: a piece with a space before it starts one, the ``##``
    pieces after it continue it; ``(token index, piece)`` per piece."""
    words: list[list[tuple[int, str]]] = []
    for k, (piece, space) in enumerate(_display(tokens)):
        if space or not words:
            words.append([])
        words[-1].append((k, piece))
    return words


def _wrap(row: TokenRow, method: str, width: int) -> list[list[tuple[int, str, float, bool]]]:
    """One method's tokens of one sample placed on lines of ``width`` characters, breaking
    between words only (a word longer than a line gets a line of its own):
    ``(x, piece, scaled value, in rationale)`` per token."""
    lines: list[list[tuple[int, str, float, bool]]] = [[]]
    x = 0
    for word in _words(row.tokens):
        length = sum(len(piece) for _, piece in word)
        if lines[-1] and x + 1 + length > width:
            lines.append([])
            x = 0
        x += 1 if lines[-1] else 0
        for k, piece in word:
            gt = bool(row.rationale[k]) if row.rationale is not None else False
            lines[-1].append((x, piece, float(row.values[method][k]), gt))
            x += len(piece)
    return lines


TOKEN_DPI = 110


def token_heatmap(data: TableData, path: Path, n_samples: int = 4) -> Optional[Path]:
    """Draw :func:`token_heatmap_figure` to ``path`` (PNG); None when the records hold no token ids."""
    fig = token_heatmap_figure(data, n_samples, dpi=TOKEN_DPI)
    if fig is None:
        return None
    return _save(fig, path, dpi=TOKEN_DPI, palette=True)


TOKEN_CSS = """
.token-heatmap { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; }
.token-heatmap .sample-head { font-weight: bold; margin: 12px 0 4px; }
.token-heatmap table { border-collapse: collapse; }
.token-heatmap th { text-align: right; font-weight: normal; color: #333; padding: 2px 10px 2px 0; white-space: nowrap; }
.token-heatmap td { padding: 2px 0; line-height: 1.9; }
.token-heatmap .tok { padding: 1px 2px; border-radius: 2px; }
.token-heatmap .word { white-space: nowrap; }
.token-heatmap .rationale { text-decoration: underline; text-decoration-thickness: 2px; text-underline-offset: 3px; }
"""


def token_heatmap_html(data: TableData, n_samples: int = 4) -> str:
    """The token heatmap as an HTML fragment: coloured spans (title: the recorded value),
    rationale tokens underlined. Empty when the records hold no token ids."""
    rows = token_rows(data, n_samples)
    if not rows:
        return ""
    has_gt = rows[0].rationale is not None
    out = ['<div class="token-heatmap">',
           f"<p>Background: relevance, {SCALE_NOTE} per sample (red-blue: signed maps, blue negative; "
           "reds: one-signed maps)" + ("; <span class=\"rationale\">underlined</span>: rationale tokens" if has_gt else "")
           + ". Hover a token for its recorded value.</p>"]
    for row in rows:
        out.append(f'<p class="sample-head">{html.escape(row.description)}</p><table>')
        for m, values in row.values.items():
            words = []
            for word in _words(row.tokens):       # a word's pieces never part across lines
                spans = []
                for k, piece in word:
                    colour = _colour(float(values[k]), row.one_signed[m])
                    r, g, b = (int(round(255 * c)) for c in colour)
                    cls = "tok rationale" if row.rationale is not None and row.rationale[k] else "tok"
                    spans.append(f'<span class="{cls}" style="background: rgb({r}, {g}, {b}); '
                                 f'color: {_ink(colour)}" '
                                 f'title="{row.raw[m][k]:.4g}">{html.escape(piece)}</span>')
                words.append(f'<span class="word">{"".join(spans)}</span>')
            out.append(f"<tr><th>{html.escape(method_title(m))}</th><td>{' '.join(words)}</td></tr>")
        out.append("</table>")
    out.append("</div>")
    return "\n".join(out)


def write_token_heatmap_html(data: TableData, path: Path, n_samples: int = 4) -> Optional[Path]:
    """A standalone page holding :func:`token_heatmap_html`."""
    body = token_heatmap_html(data, n_samples)
    if not body:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                    f"<title>{html.escape(data.name)}: token relevance</title><style>{TOKEN_CSS}</style></head>"
                    f"<body><h1>{html.escape(data.name)}: {html.escape(data.model)} on {html.escape(data.dataset)}</h1>"
                    f"{body}</body></html>\n")
    return path


# -- ranks and cost ----------------------------------------------------------------------------

def rank_chart(data: TableData, path: Path, n_boot: int = 1000) -> Optional[Path]:
    """Each method's mean rank over the table's metrics (1 = best) with its bootstrap 95%
    interval over samples (:func:`metrics.statistics.bootstrap_mean_ranks`); best at the top."""
    from metrics.statistics import bootstrap_mean_ranks

    ranks = bootstrap_mean_ranks(data.scores, data.directions, n_boot=n_boot).dropna(subset=["mean_rank"])
    if len(ranks) < 2:
        return None
    ranks = ranks.sort_values("mean_rank", ascending=False)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.2, 0.9 + 0.3 * len(ranks)))
    y = np.arange(len(ranks))
    err = np.vstack([ranks["mean_rank"] - ranks["ci_low"], ranks["ci_high"] - ranks["mean_rank"]])
    ax.errorbar(ranks["mean_rank"], y, xerr=np.clip(err, 0, None), fmt="o", color="#1f4e79", ecolor="#7f9fbf",
                capsize=3, markersize=4)
    ax.set_yticks(y, [method_title(m) for m in ranks["method"]], fontsize=7)
    ax.set_xlim(0.5, len(ranks) + 0.5)
    ax.invert_xaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel(f"mean rank over {len(data.directions)} metrics (1 = best); bars: bootstrap 95% interval over samples",
                  fontsize=7)
    ax.set_title(f"{data.name}: rank across metrics", fontsize=8)
    fig.tight_layout()
    return _save(fig, path, palette=True)


def cost_chart(data: TableData, path: Path) -> Optional[Path]:
    """Seconds per explained sample and the same time in forward+backward passes of the model
    (both from the records' ``runtime``), one bar per method, log scales."""

    methods = method_order(list(data.runtime))
    seconds = [data.runtime[m].get("seconds_per_sample") for m in methods]
    units = [data.runtime[m].get("forward_backward_units") for m in methods]
    if not any(v for v in seconds if v):
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 0.9 + 0.3 * len(methods)), sharey=True)
    y = np.arange(len(methods))[::-1]
    for ax, values, label in ((axes[0], seconds, "seconds per sample"),
                              (axes[1], units, "forward+backward units per sample")):
        v = np.array([x if x and x > 0 else np.nan for x in values], dtype=float)
        ax.barh(y, np.nan_to_num(v, nan=0.0), color="#4c72b0")
        for yi, vi in zip(y, v):
            ax.text(vi if np.isfinite(vi) else 0, yi, f" {vi:.3g}" if np.isfinite(vi) else " n/a", va="center", fontsize=6)
        if np.isfinite(v).any():
            ax.set_xscale("log")
            ax.set_xlim(np.nanmin(v) / 2, np.nanmax(v) * 8)
        ax.set_xlabel(label + " (log)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [method_title(m) for m in methods], fontsize=7)
    fig.suptitle(f"{data.name}: cost of each method", fontsize=8)
    fig.tight_layout()
    return _save(fig, path, palette=True)
