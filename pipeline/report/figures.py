"""The report's figures: matplotlib PNGs (Agg canvas, no pyplot state) without a timestamp or
software tag, so their bytes are reproducible: the 1:N matching curve, the verification ROC, the
training loss and each method's ranked examples (:func:`build_figures`)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from pipeline.report.loading import ORACLE, ReportInputs, _pct, best_method, metric

TRUE_RGB = (20, 160, 20)  # frame of a face of the probe's identity (ranked figure)
OTHER_RGB = (175, 175, 175)  # frame of any other face
EDGE_RGB = (30, 30, 30)  # thin outer edge: keeps a frame apart from a green backdrop
THUMB_PX = 80  # thumbnail side in the ranked figure, before its frame
FRAME_PX = 8
_DPI = 100
_PNG_META: dict[str, Any] = {"Software": None}  # no version tag: bytes depend on pixels only


# ------------------------------------------------------------------------------------ figures


@dataclass(frozen=True)
class Figure:
    """One PNG of the report: its file name in ``figures/``, a title and its bytes."""

    name: str
    title: str
    png: bytes


def _colors(names: Sequence[str]) -> dict[str, Any]:
    cmap = colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(names)}


def _png(fig: MplFigure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata=_PNG_META)
    return buf.getvalue()


def match_curve_png(inputs: ReportInputs) -> bytes:
    """1:N V→F accuracy against N (test_unseen, U): every method, the oracle, chance 1/N."""
    fig = MplFigure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    colors = _colors(inputs.methods)
    n_all: list[float] = []
    for m in inputs.methods:
        c = inputs.curves[m]
        ax.plot(c["n"], 100 * c["v2f"], marker="o", ms=3, color=colors[m], label=m)
        n_all += list(c["n"])
    if inputs.oracle is not None:
        c = inputs.curves[ORACLE]
        ax.plot(c["n"], 100 * c["v2f"], "k--", marker="s", ms=3, label=ORACLE)
        n_all += list(c["n"])
    ns = np.arange(min(n_all, default=2), max(n_all, default=10) + 1)
    ax.plot(ns, 100 / ns, ":", color="grey", label="chance (1/N)")
    ax.set_xlabel("N (candidates)")
    ax.set_ylabel("V→F accuracy (%)")
    ax.set_title("1:N matching, test_unseen, U")
    ax.set_xticks(ns)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def roc_png(inputs: ReportInputs) -> bytes:
    """Verification ROC (test_unseen, U): every method, the oracle, the chance diagonal."""
    fig = MplFigure(figsize=(4.8, 4.8))
    ax = fig.subplots()
    colors = _colors(inputs.methods)
    for m in inputs.methods:
        r = inputs.rocs[m]
        auc = metric(inputs.metrics[m], "verify_auc", "vf", "U", "test_unseen")
        ax.plot(r["fpr"], r["tpr"], color=colors[m], label=f"{m} (AUC {_pct(auc)})")
    if inputs.oracle is not None:
        r = inputs.rocs[ORACLE]
        auc = metric(inputs.oracle, "verify_auc", "vf", "U", "test_unseen")
        ax.plot(r["fpr"], r["tpr"], "k--", label=f"{ORACLE} (AUC {_pct(auc)})")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.set_xlabel("false-accept rate")
    ax.set_ylabel("true-accept rate")
    ax.set_title("Verification ROC, test_unseen, U")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def loss_png(inputs: ReportInputs) -> bytes:
    """Training loss per epoch, one subplot per method (the methods' losses differ in scale)."""
    n = len(inputs.methods)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig = MplFigure(figsize=(4.2 * cols, 2.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    colors = _colors(inputs.methods)
    for ax, m in zip(axes.flat, inputs.methods, strict=False):
        hist = inputs.history[m]
        ax.plot(
            [float(h["epoch"]) for h in hist],
            [float(h["loss"]) for h in hist],
            marker="o",
            ms=3,
            color=colors[m],
        )
        ax.set_title(m)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle("Training loss per epoch")
    fig.tight_layout()
    return _png(fig)


def _thumbnail(face: np.ndarray, true: bool) -> np.ndarray:
    img = Image.fromarray(np.ascontiguousarray(face, dtype=np.uint8)).convert("RGB")
    small = np.asarray(img.resize((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS))
    side = THUMB_PX + 2 * FRAME_PX
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:] = EDGE_RGB
    out[1:-1, 1:-1] = TRUE_RGB if true else OTHER_RGB
    out[FRAME_PX : FRAME_PX + THUMB_PX, FRAME_PX : FRAME_PX + THUMB_PX] = small
    return out


def ranked_png(
    method: str, entries: Sequence[dict[str, Any]], faces: dict[str, np.ndarray]
) -> bytes:
    """Rows: probe voices (labelled with their identity); columns: the top-5 faces, best first.

    Faces of the probe's identity have a thick green frame and a green "✓" label, others a grey
    frame; the candidate's identity and score are written under each. ``faces``: clip_key ->
    (H, W, 3) uint8 face crop.

    The framed thumbnails are pasted into one image, drawn at one figure pixel per image pixel
    with the labels over it: one axes per figure (an axes per face made this 5x slower).
    """
    if not entries:
        raise ValueError(f"{method}: no ranked examples to draw")
    cols = max(len(e["ranked"]) for e in entries)
    side = THUMB_PX + 2 * FRAME_PX
    cell_w, cell_h = round(side * 1.45), side + 34  # room for the two-line label
    left, top = 90, 34  # px: the row labels, the title
    width, height = left + cols * cell_w, top + len(entries) * cell_h
    canvas = np.full((height, width, 3), 255, np.uint8)
    fig = MplFigure(figsize=(width / _DPI, height / _DPI))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    for i, entry in enumerate(entries):
        y = top + i * cell_h
        ax.text(left - 6, y + side / 2, f"voice of\n{entry['identity']}", fontsize=8,
                ha="right", va="center")  # fmt: skip
        for j, r in enumerate(entry["ranked"]):
            key = str(r["clip_key"])
            if key not in faces:
                raise ValueError(f"{method}: no face crop for ranked clip {key!r}")
            true = bool(r["true"])
            x = left + j * cell_w + (cell_w - side) // 2
            canvas[y : y + side, x : x + side] = _thumbnail(faces[key], true)
            ax.text(
                x + side / 2,
                y + side + 3,
                f"{'✓ ' if true else ''}{r['identity']}\n{float(r['score']):.3f}",
                fontsize=7,
                ha="center",
                va="top",
                color=np.array(TRUE_RGB) / 255 if true else "black",
                fontweight="bold" if true else "normal",
            )
    ax.imshow(canvas, interpolation="nearest", extent=(0, width, height, 0))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    fig.text(0.5, 1 - 8 / height, f"{method}: top-{cols} faces per test_unseen voice "
             "(green: same identity)", fontsize=9, ha="center", va="top")  # fmt: skip
    return _png(fig)


def build_figures(inputs: ReportInputs, faces: dict[str, np.ndarray]) -> list[Figure]:
    """Every figure: 1:N curve, ROC, loss, then the ranked examples (best method first)."""
    figures = [
        Figure(
            "match_curve.png", "1:N matching curve (V→F, test_unseen, U)", match_curve_png(inputs)
        ),
        Figure("roc.png", "Verification ROC (test_unseen, U)", roc_png(inputs)),
        Figure("loss.png", "Training loss per epoch", loss_png(inputs)),
    ]
    best = best_method(inputs)
    for m in (best, *(m for m in inputs.methods if m != best)):
        if inputs.ranked[m]:
            title = f"Ranked faces for test_unseen voices: {m}" + (" (best)" if m == best else "")
            figures.append(Figure(f"ranked_{m}.png", title, ranked_png(m, inputs.ranked[m], faces)))
    return figures
