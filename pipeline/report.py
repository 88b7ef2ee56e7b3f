"""The comparison page of every method: ``summary.md``, a self-contained ``summary.html``, figures.

Inputs are the files other stages write (formats in the ``report`` stage's docstring): per method
its evaluation metrics (protocol -> direction -> constraint -> split, fractions in [0, 1]), its
1:N curve, ROC and ranked examples, its training summary and loss history; the oracle's metrics
and curves when the corpus has ground truth; the trial generator's summary; the manifest; the face
shards (only for the thumbnails of the ranked figure).

Both documents are rendered from one list of blocks (headings, paragraphs, tables, figures), so
the Markdown and the HTML always say the same thing. Output is deterministic for identical inputs,
the provenance line included (a digest of the input files, no commit or date). Figures are
matplotlib PNGs (Agg canvas, no pyplot state) without a timestamp or software tag, so their bytes
are reproducible too.

Percentages carry one decimal. "% of oracle margin" is ``(m - chance) / (oracle - chance)``: 0 at
chance, 100 at the oracle; the same formula holds for EER (lower is better), where both signs flip.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from matplotlib import colormaps
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from pipeline.aggregate import at
from pipeline.atomic import atomic_dir, atomic_path
from pipeline.jpeg import decode_jpeg
from pipeline.metrics import margin_fraction as oracle_fraction
from pipeline.schema import FACE_FRAMES, MANIFEST, SPLITS, read_table

ORACLE = "oracle"

PROTOCOLS: tuple[str, ...] = (
    "match_1to2",
    "match_1to10",
    "verify_auc",
    "verify_eer",
    "retrieve_map",
)
PROTOCOL_LABELS: dict[str, str] = {
    "match_1to2": "1:2 matching",
    "match_1to10": "1:10 matching",
    "verify_auc": "verification AUC",
    "verify_eer": "verification EER (lower is better)",
    "retrieve_map": "retrieval mAP",
}
DIRECTIONS: tuple[str, ...] = ("v2f", "f2v", "vf")
DIRECTION_LABELS: dict[str, str] = {"v2f": "V→F", "f2v": "F→V", "vf": "V–F"}
CONSTRAINTS: tuple[str, ...] = ("U", "G", "N", "A", "GNA")
SPLIT_LABELS: dict[str, str] = {
    "test_unseen": "unseen-unheard",
    "test_seen": "seen-heard",
}
#: Top-level keys of a metrics file that are not protocol -> direction -> constraint -> split.
_NOT_METRICS = frozenset(
    {
        "method", "chance", "retrieve_gallery", "trials", "oracle_fraction", "available", "reason",
        "seeds", "n_seeds", "probes", "attributes",
    }
)  # fmt: skip
CEILING = "media ceiling"
#: The metrics the verdict section lists: (label, protocol, direction, constraint).
VERDICT_ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("1:2 V→F U", "match_1to2", "v2f", "U"),
    ("1:2 F→V U", "match_1to2", "f2v", "U"),
    ("1:2 V→F G", "match_1to2", "v2f", "G"),
    ("AUC U", "verify_auc", "vf", "U"),
)
#: Attribute probes shown: (header, attribute, figure) as :mod:`pipeline.probes` writes them.
PROBE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("gender acc.", "gender", "accuracy"),
    ("nationality acc.", "nationality", "accuracy"),
    ("age R²", "age_years", "r2"),
    ("build R²", "build", "r2"),
)

#: The per-split comparison table: (header, protocol, direction, constraint).
MAIN_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("1:2 V→F U", "match_1to2", "v2f", "U"),
    ("1:2 F→V U", "match_1to2", "f2v", "U"),
    ("1:2 V→F G", "match_1to2", "v2f", "G"),
    ("1:10 V→F U", "match_1to10", "v2f", "U"),
    ("AUC U", "verify_auc", "vf", "U"),
    ("EER U (lower is better)", "verify_eer", "vf", "U"),
    ("mAP V→F", "retrieve_map", "v2f", "U"),
    ("mAP F→V", "retrieve_map", "f2v", "U"),
)
FRACTION_HEADER = "1:2 V→F U, % of oracle margin"
#: The headline number: which method is "best" and gets its ranked figure first.
HEADLINE = ("match_1to2", "v2f", "U", "test_unseen")

TRUE_RGB = (20, 160, 20)  # frame of a face of the probe's identity (ranked figure)
OTHER_RGB = (175, 175, 175)  # frame of any other face
EDGE_RGB = (30, 30, 30)  # thin outer edge: keeps a frame apart from a green backdrop
THUMB_PX = 80  # thumbnail side in the ranked figure, before its frame
FRAME_PX = 8
_DPI = 100
_PNG_META: dict[str, Any] = {"Software": None}  # no version tag: bytes depend on pixels only
_MISSING = "–"


# ----------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class SplitSize:
    identities: int
    clips: int


@dataclass(frozen=True)
class Corpus:
    """Size of the indexed dataset (from the manifest) and its layout (``data.layout``)."""

    layout: str
    clips: int
    identities: int
    splits: dict[str, SplitSize]


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows, loaded and checked.

    ``curves`` (columns ``n, v2f, f2v``) and ``rocs`` (``fpr, tpr``) hold every method and, when
    ``oracle`` is not None, the oracle under :data:`ORACLE`. ``ranked`` holds each method's
    ranked examples (probe voice, its top-5 faces with score and truth).
    """

    methods: tuple[str, ...]
    metrics: dict[str, dict[str, Any]]
    oracle: dict[str, Any] | None
    oracle_reason: str
    curves: dict[str, pd.DataFrame]
    rocs: dict[str, pd.DataFrame]
    ranked: dict[str, list[dict[str, Any]]]
    train: dict[str, dict[str, Any]]
    history: dict[str, list[dict[str, Any]]]
    trials: dict[str, Any]
    corpus: Corpus
    #: The ``aggregate`` stage's paired verdicts (``verdicts.json``), None when absent.
    verdicts: dict[str, Any] | None = None
    #: The media ceiling's metrics (``ceiling.json``), None when absent or unavailable.
    ceiling: dict[str, Any] | None = None
    #: The training seed whose curves, ranked examples and loss history are shown.
    shown_seed: int | None = None
    #: What the stages flagged as weak (few identities, own-clip positives, competing faces...).
    warnings: tuple[str, ...] = ()


def load_json(path: Path | str) -> Any:
    """A JSON file; FileNotFoundError / ValueError name the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: not found")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON: {e}") from e


def _load_dict(path: Path) -> dict[str, Any]:
    payload = load_json(path)
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(payload).__name__}")
    return payload


def load_metrics(path: Path | str) -> dict[str, Any]:
    """One method's (or the oracle's) evaluation metrics file."""
    return _load_dict(Path(path))


def load_csv(path: Path | str, columns: Sequence[str]) -> pd.DataFrame:
    """A small CSV that must hold ``columns`` (float), rows kept in file order."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: not found")
    frame = pd.read_csv(p)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{p}: missing columns {missing} (has {list(frame.columns)})")
    return frame[list(columns)].astype(float)


def load_ranked(path: Path | str) -> list[dict[str, Any]]:
    """Ranked examples: ``[{probe, identity, ranked: [{clip_key, identity, score, true}]}]``."""
    p = Path(path)
    payload = load_json(p)
    if not isinstance(payload, list):
        raise ValueError(f"{p}: expected a JSON list of probes")
    for i, entry in enumerate(payload):
        ok = (
            isinstance(entry, dict)
            and {"probe", "identity", "ranked"} <= entry.keys()
            and isinstance(entry["ranked"], list)
            and all(
                isinstance(r, dict) and {"clip_key", "identity", "score", "true"} <= r.keys()
                for r in entry["ranked"]
            )
        )
        if not ok:
            raise ValueError(
                f"{p}: entry {i} needs probe, identity and ranked "
                "[{clip_key, identity, score, true}]"
            )
    return payload


def load_history(path: Path | str) -> list[dict[str, Any]]:
    """Per-epoch training history: a list of dicts with ``epoch`` and ``loss``."""
    p = Path(path)
    payload = load_json(p)
    if not isinstance(payload, list) or not all(
        isinstance(r, dict) and "epoch" in r and "loss" in r for r in payload
    ):
        raise ValueError(f"{p}: expected a list of {{epoch, loss, ...}} objects")
    return payload


def load_corpus(manifest: Path | str, layout: str) -> Corpus:
    """Clips and identities of the manifest, overall and per split (``SPLITS`` order first)."""
    clips = read_table(manifest, MANIFEST)
    present = [str(s) for s in clips["split"].unique()]
    order = [s for s in SPLITS if s in present] + sorted(s for s in present if s not in SPLITS)
    splits = {
        s: SplitSize(
            identities=int(clips.loc[clips["split"] == s, "identity"].nunique()),
            clips=int((clips["split"] == s).sum()),
        )
        for s in order
    }
    return Corpus(layout, len(clips), int(clips["identity"].nunique()), splits)


def load_inputs(
    methods: Sequence[str],
    metrics_dir: Path | str,
    eval_dir: Path | str,
    train_dir: Path | str,
    trials: Path | str,
    manifest: Path | str,
    layout: str,
    seed: int,
    stage_reports: Sequence[Path | str] = (),
) -> ReportInputs:
    """Load every input of the report; a missing file raises FileNotFoundError naming it.

    The ``warnings`` lists of ``stage_reports`` (e.g. ``reports/manifest.json``,
    ``reports/faces.json``) and of the trial summary are shown at the top of the report.

    Per method: its aggregate over seeds ``<metrics_dir>/aggregate/<m>.json`` (a leaf is a number
    or ``{mean, ci95_low, ...}``), and for training seed ``seed`` its ``<eval_dir>/<m>/s<seed>/
    {match_curve.csv, roc.csv, ranked.json}``, ``<train_dir>/<m>/s<seed>.json`` and
    ``s<seed>_history.json``. The oracle: ``<metrics_dir>/oracle.json`` and, when it is
    available, its curve and ROC in ``<eval_dir>/oracle/``. Optional: the verdicts
    ``<metrics_dir>/aggregate/verdicts.json`` and the media ceiling ``<metrics_dir>/ceiling.json``.
    """
    names = tuple(methods)
    if not names:
        raise ValueError("no methods given")
    if len(set(names)) != len(names) or ORACLE in names:
        raise ValueError(f"methods {list(names)}: expected distinct names other than {ORACLE!r}")
    mdir, edir, tdir = Path(metrics_dir), Path(eval_dir), Path(train_dir)
    metrics = {m: load_metrics(mdir / "aggregate" / f"{m}.json") for m in names}
    oracle_raw = load_metrics(mdir / f"{ORACLE}.json")
    available = oracle_raw.get("available", True) is not False
    oracle = oracle_raw if available else None
    reason = "" if available else str(oracle_raw.get("reason", "no reason given"))
    folder = {n: edir / n / f"s{seed}" for n in names} | {ORACLE: edir / ORACLE}
    curve_names = (*names, ORACLE) if available else names
    curves = {n: load_csv(folder[n] / "match_curve.csv", ("n", "v2f", "f2v")) for n in curve_names}
    rocs = {n: load_csv(folder[n] / "roc.csv", ("fpr", "tpr")) for n in curve_names}
    ranked = {m: load_ranked(folder[m] / "ranked.json") for m in names}
    train = {m: _load_dict(tdir / m / f"s{seed}.json") for m in names}
    history = {m: load_history(tdir / m / f"s{seed}_history.json") for m in names}
    trials_summary = _load_dict(Path(trials))
    corpus = load_corpus(manifest, layout)
    vpath, cpath = mdir / "aggregate" / "verdicts.json", mdir / "ceiling.json"
    verdicts = _load_dict(vpath) if vpath.is_file() else None
    ceiling = _load_dict(cpath) if cpath.is_file() else None
    if ceiling is not None and ceiling.get("available", True) is False:
        ceiling = None
    warnings: list[str] = []
    for source in (*(_load_dict(Path(r)) for r in stage_reports), trials_summary):
        warnings += [str(w) for w in source.get("warnings", [])]
    return ReportInputs(
        names, metrics, oracle, reason, curves, rocs, ranked, train, history, trials_summary,
        corpus, verdicts, ceiling, seed, tuple(warnings),
    )  # fmt: skip


def ranked_clip_keys(inputs: ReportInputs) -> list[str]:
    """The face clips the ranked figures show, sorted."""
    return sorted(
        {
            str(r["clip_key"])
            for entries in inputs.ranked.values()
            for e in entries
            for r in e["ranked"]
        }
    )


def load_first_frames(faces_dir: Path | str, clip_keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Each clip's first face crop (lowest ``frame_index``) from the ``faces-*.parquet`` shards.

    Returns clip_key -> (H, W, 3) uint8. Only the rows of ``clip_keys`` are read (row-group
    statistics skip the rest). Raises FileNotFoundError when there is no shard and ValueError
    for a shard of another table or a clip with no face frame.
    """
    folder = Path(faces_dir)
    shards = sorted(folder.glob("faces-*.parquet"))
    if not shards:
        raise FileNotFoundError(f"{folder}: no faces-*.parquet shards")
    wanted = sorted(set(clip_keys))
    if not wanted:
        return {}
    expected = FACE_FRAMES.with_metadata().metadata
    parts: list[pd.DataFrame] = []
    for shard in shards:
        meta = pq.read_schema(shard).metadata or {}
        if any(meta.get(k) != v for k, v in expected.items()):
            raise ValueError(f"{shard}: not a {FACE_FRAMES.name!r} v{FACE_FRAMES.version} table")
        table = pq.read_table(
            shard,
            columns=["clip_key", "frame_index", "crop_jpeg"],
            filters=[("clip_key", "in", wanted)],
        )
        if table.num_rows:
            parts.append(table.to_pandas())
    found = (
        pd.concat(parts, ignore_index=True)
        .sort_values(["clip_key", "frame_index"], kind="mergesort")
        .drop_duplicates("clip_key")
        if parts
        else pd.DataFrame(columns=["clip_key", "frame_index", "crop_jpeg"])
    )
    missing = sorted(set(wanted) - set(found["clip_key"]))
    if missing:
        raise ValueError(f"{folder}: no face frame for clips {missing[:5]} ({len(missing)} in all)")
    keys, jpegs = found["clip_key"], found["crop_jpeg"]
    return {str(k): decode_jpeg(bytes(j)) for k, j in zip(keys, jpegs, strict=True)}


# ---------------------------------------------------------------------------------- numbers


def metric(
    metrics: dict[str, Any] | None, protocol: str, direction: str, constraint: str, split: str
) -> float | None:
    """One number of a metrics file, or None where it is absent. In an aggregate over seeds, a
    leaf ``{mean, ...}`` gives its mean."""
    node = at(metrics, protocol, direction, constraint, split)
    if isinstance(node, dict):
        node = node.get("mean")
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None
    return float(node)


def chance_level(inputs: ReportInputs, protocol: str, split: str) -> float | None:
    """Chance of ``protocol`` on ``split`` (the first metrics file that states it)."""
    for m in (*inputs.methods, ORACLE):
        source = inputs.oracle if m == ORACLE else inputs.metrics[m]
        chance = (source or {}).get("chance")
        if not isinstance(chance, dict) or protocol not in chance:
            continue
        value = chance[protocol]
        if isinstance(value, dict):
            value = value.get(split)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _walk(metrics: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    for protocol, by_dir in metrics.items():
        if protocol in _NOT_METRICS or not isinstance(by_dir, dict):
            continue
        for direction, by_con in by_dir.items():
            if not isinstance(by_con, dict):
                continue
            for constraint, by_split in by_con.items():
                if not isinstance(by_split, dict):
                    continue
                for split in by_split:
                    if metric(metrics, protocol, direction, constraint, split) is not None:
                        yield protocol, direction, constraint, split


def _ordered(values: set[str], known: Sequence[str]) -> list[str]:
    return [v for v in known if v in values] + sorted(v for v in values if v not in known)


def _sources(inputs: ReportInputs) -> list[dict[str, Any]]:
    return [inputs.metrics[m] for m in inputs.methods] + ([inputs.oracle] if inputs.oracle else [])


def splits_present(inputs: ReportInputs) -> list[str]:
    """The evaluation splits any metrics file reports, test_unseen first."""
    found = {key[3] for src in _sources(inputs) for key in _walk(src)}
    return _ordered(found, ("test_unseen", "test_seen"))


def metric_keys(inputs: ReportInputs, split: str) -> list[tuple[str, str, str]]:
    """Every (protocol, direction, constraint) reported on ``split``, in a canonical order."""
    found = {k[:3] for src in _sources(inputs) for k in _walk(src) if k[3] == split}
    order = {
        "p": {p: i for i, p in enumerate(_ordered({k[0] for k in found}, PROTOCOLS))},
        "d": {d: i for i, d in enumerate(_ordered({k[1] for k in found}, DIRECTIONS))},
        "c": {c: i for i, c in enumerate(_ordered({k[2] for k in found}, CONSTRAINTS))},
    }
    return sorted(found, key=lambda k: (order["p"][k[0]], order["d"][k[1]], order["c"][k[2]]))


def best_method(inputs: ReportInputs) -> str:
    """The method with the highest mean 1:2 V→F U accuracy on test_unseen (first one on a tie):
    the order of the ranked figures. Whether it is ahead at all is :func:`leaders`' question."""
    scores = [(metric(inputs.metrics[m], *HEADLINE), m) for m in inputs.methods]
    known = [(s, m) for s, m in scores if s is not None]
    if not known:
        return inputs.methods[0]
    top = max(s for s, _ in known)
    return next(m for s, m in known if s == top)


def leaders(inputs: ReportInputs) -> list[str]:
    """The methods tied for first on the headline by the paired verdicts (the top method and
    every method not distinguishable from it); without verdicts, every method."""
    entry = _verdict_entry(inputs, *HEADLINE)
    if entry is None:
        return list(inputs.methods)
    return [str(m) for m in entry.get("tied_for_first", [])]


def _pct(x: float | None) -> str:
    return _MISSING if x is None else f"{100 * x:.1f}"


def metric_leaf(
    metrics: dict[str, Any] | None, protocol: str, direction: str, constraint: str, split: str
) -> dict[str, Any]:
    """The aggregate leaf of one metric (``{mean, half_width, ci95_low, ...}``); a plain number
    becomes ``{"mean": x}``, an absent one ``{}``."""
    node = at(metrics, protocol, direction, constraint, split)
    if isinstance(node, dict):
        return node
    return {"mean": node} if isinstance(node, int | float) else {}


def _pm(leaf: dict[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± half-width`` of a leaf (the 95 % interval over seeds), or the mean alone."""
    mean = leaf.get("mean")
    if not isinstance(mean, int | float):
        return _MISSING
    hw = leaf.get("half_width")
    text = f"{scale * mean:.{digits}f}"
    return text if not isinstance(hw, int | float) else f"{text} ± {scale * hw:.{digits}f}"


def _range(low: Any, high: Any, scale: float = 100.0) -> str:
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        return _MISSING
    return f"[{scale * low:.1f}, {scale * high:.1f}]"


def _verdict_entry(
    inputs: ReportInputs, protocol: str, direction: str, constraint: str, split: str
) -> dict[str, Any] | None:
    node = at((inputs.verdicts or {}).get("metrics"), protocol, direction, constraint, split)
    return node if isinstance(node, dict) else None


def ranking_text(inputs: ReportInputs) -> str:
    """Who leads on the headline (1:2 V→F U, test_unseen), ties included: never a single "best"
    that the paired 95 % intervals cannot separate from the next."""
    entry = _verdict_entry(inputs, *HEADLINE)
    n_seeds = _n_seeds(inputs)
    if entry is None:
        return "Ranking: no paired verdicts available (the aggregate stage's verdicts.json)."
    tied = [str(m) for m in entry.get("tied_for_first", [])]
    top = str(entry.get("top"))
    means = entry.get("means", {})
    desc = ", ".join(f"{m} {_pct(means.get(m))}" for m in tied)
    if len(tied) > 1:
        lead = (
            f"tied for first: {desc} — not distinguishable at 95 % (paired differences over "
            "the same trials, test identities resampled"
        )
    else:
        lead = f"first: {desc}, ahead of every other method at 95 % (paired differences"
    seeds = f"; {n_seeds} training seeds per method)" if n_seeds else ")"
    others = [m for m in inputs.methods if m in means and m not in tied]
    rest = f" Behind: {', '.join(others)}." if others and top else ""
    return f"1:2 V→F U on test_unseen, mean over seeds — {lead}{seeds}.{rest}"


def _n_seeds(inputs: ReportInputs) -> int | None:
    counts = {inputs.metrics[m].get("n_seeds") for m in inputs.methods}
    known = {int(c) for c in counts if isinstance(c, int)}
    return next(iter(known)) if len(known) == 1 and None not in counts else None


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
    """
    if not entries:
        raise ValueError(f"{method}: no ranked examples to draw")
    cols = max(len(e["ranked"]) for e in entries)
    rows = len(entries)
    cell = (THUMB_PX + 2 * FRAME_PX) / _DPI
    fig = MplFigure(figsize=(cols * cell * 1.45 + 0.9, rows * cell * 1.65 + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, entry in enumerate(entries):
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j >= len(entry["ranked"]):
                ax.set_visible(False)
                continue
            r = entry["ranked"][j]
            key = str(r["clip_key"])
            if key not in faces:
                raise ValueError(f"{method}: no face crop for ranked clip {key!r}")
            true = bool(r["true"])
            ax.imshow(_thumbnail(faces[key], true), interpolation="nearest")
            ax.set_xlabel(
                f"{'✓ ' if true else ''}{r['identity']}\n{float(r['score']):.3f}",
                fontsize=7,
                color=np.array(TRUE_RGB) / 255 if true else "black",
                fontweight="bold" if true else "normal",
            )
        axes[i, 0].set_ylabel(f"voice of\n{entry['identity']}", fontsize=8)
    fig.suptitle(
        f"{method}: top-{cols} faces per test_unseen voice (green: same identity)", fontsize=9
    )
    fig.tight_layout()
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


# ---------------------------------------------------------------------------------- document


@dataclass(frozen=True)
class Provenance:
    """What the report was built from: a digest of the bytes of its input files
    (:func:`inputs_digest`). No commit and no date: a run on the same inputs writes the same
    report, so a rerun that changes no result changes no tracked file (``git log --
    reports/summary.md`` says when it last changed)."""

    inputs: str


def inputs_digest(paths: Sequence[Path | str]) -> str:
    """The first 12 hex digits of SHA-256 over every file under ``paths`` (files or folders,
    missing ones skipped): each file's path, as given plus its place below a folder, then its
    bytes, in sorted order. Equal inputs give an equal digest on any machine."""
    h = hashlib.sha256()
    for root in sorted(Path(p) for p in paths):
        files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root]
        for f in files:
            if not f.is_file():
                continue
            h.update(f.as_posix().encode() + b"\0")
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class _Heading:
    level: int
    text: str


@dataclass(frozen=True)
class _Para:
    text: str


@dataclass(frozen=True)
class _Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    label_cols: int = 1  # leading text columns; the rest are right-aligned numbers


@dataclass(frozen=True)
class _Figures:
    figures: tuple[Figure, ...]


_Block = _Heading | _Para | _Table | _Figures

TITLE = "Voice–face association: comparison of methods"


def _split_table(inputs: ReportInputs, split: str) -> _Table:
    with_oracle = inputs.oracle is not None
    header = ("method", *(c[0] for c in MAIN_COLUMNS)) + ((FRACTION_HEADER,) if with_oracle else ())
    rows: list[tuple[str, ...]] = []
    chance_1to2 = chance_level(inputs, "match_1to2", split)
    oracle_1to2 = metric(inputs.oracle, "match_1to2", "v2f", "U", split)
    for m in inputs.methods:
        cells = [_pm(metric_leaf(inputs.metrics[m], *c[1:], split)) for c in MAIN_COLUMNS]
        frac = oracle_fraction(
            metric(inputs.metrics[m], *HEADLINE[:3], split), oracle_1to2, chance_1to2
        )
        rows.append((m, *cells) + ((_pct(frac),) if with_oracle else ()))
    if inputs.ceiling is not None:
        values = [metric(inputs.ceiling, *c[1:], split) for c in MAIN_COLUMNS]
        frac = oracle_fraction(values[0], oracle_1to2, chance_1to2)
        rows.append((CEILING, *map(_pct, values)) + ((_pct(frac),) if with_oracle else ()))
    if with_oracle:
        values = [metric(inputs.oracle, *c[1:], split) for c in MAIN_COLUMNS]
        rows.append((ORACLE, *map(_pct, values), _pct(1.0)))
    chance = [chance_level(inputs, c[1], split) for c in MAIN_COLUMNS]
    rows.append(("chance", *map(_pct, chance)) + ((_pct(0.0),) if with_oracle else ()))
    return _Table(header, tuple(rows))


def _gallery_text(inputs: ReportInputs, split: str) -> str:
    seen: dict[tuple[Any, Any], list[str]] = {}
    for m in inputs.methods:
        g = inputs.metrics[m].get("retrieve_gallery")
        entry = g.get(split) if isinstance(g, dict) else None
        if isinstance(entry, dict):
            seen.setdefault((entry.get("clips"), entry.get("identities")), []).append(m)
    chance = _pct(chance_level(inputs, "retrieve_map", split))
    if not seen:
        return f"Retrieval gallery: size not reported; chance mAP {chance}."
    parts = [f"{c} clips of {i} identities" for c, i in seen]
    if len(seen) > 1:
        parts = [f"{p} ({', '.join(ms)})" for p, ms in zip(parts, seen.values(), strict=True)]
    return f"Retrieval gallery (mAP columns): {'; '.join(parts)}; chance mAP {chance}."


def _trials_text(inputs: ReportInputs) -> str | None:
    """Trials per list (from the trial summary): each 1:N matching list is one split, direction
    and constraint; each verification list one split and constraint."""
    t = inputs.trials
    match, verify = t.get("n_match"), t.get("n_verify")
    if match is None or verify is None:
        return None
    k = t.get("candidates")
    return (
        f"Trials per list: {match} 1:N matching trials (K = {k}; one list per split, direction "
        f"and constraint), {verify} verification pairs (one list per split and constraint); "
        "the same trials for every method and seed."
    )


def _long_table(inputs: ReportInputs, split: str) -> _Table:
    names = [*inputs.methods] + ([ORACLE] if inputs.oracle is not None else [])
    header = ("protocol", "direction", "constraint", *names, "chance")
    rows = []
    for protocol, direction, constraint in metric_keys(inputs, split):
        values = [
            metric(
                inputs.oracle if n == ORACLE else inputs.metrics[n],
                protocol,
                direction,
                constraint,
                split,
            )
            for n in names
        ]
        rows.append(
            (
                PROTOCOL_LABELS.get(protocol, protocol),
                DIRECTION_LABELS.get(direction, direction),
                constraint,
                *map(_pct, values),
                _pct(chance_level(inputs, protocol, split)),
            )
        )
    return _Table(header, tuple(rows), label_cols=3)


def _corpus_blocks(inputs: ReportInputs) -> list[_Block]:
    c = inputs.corpus
    t_splits = inputs.trials.get("splits")
    t_splits = t_splits if isinstance(t_splits, dict) else {}
    names = list(c.splits) + sorted(s for s in t_splits if s not in c.splits)

    def evaluated(split: str, key: str) -> str:
        entry = t_splits.get(split)
        value = entry.get(key) if isinstance(entry, dict) else None
        return _MISSING if value is None else str(value)

    rows = tuple(
        (
            s,
            str(c.splits[s].identities) if s in c.splits else _MISSING,
            str(c.splits[s].clips) if s in c.splits else _MISSING,
            evaluated(s, "identities"),
            evaluated(s, "clips"),
        )
        for s in names
    )
    header = ("split", "identities", "clips", "evaluated identities", "evaluated clips")
    return [
        _Heading(2, "Corpus"),
        _Para(
            f"Dataset layout: {c.layout}. Manifest: {c.clips} clips of {c.identities} identities. "
            "Evaluated: clips with both a face and a voice, as counted by the trial generator."
        ),
        _Table(header, rows),
    ]


def _verdict_blocks(inputs: ReportInputs) -> list[_Block]:
    """Per headline metric on test_unseen: every method's mean, its two 95 % intervals, and its
    paired difference against the reference and against the top method, with the verdict."""
    if inputs.verdicts is None:
        return []
    ref = str(inputs.verdicts.get("reference"))
    out: list[_Block] = [
        _Heading(3, "Verdicts, test_unseen"),
        _Para(
            "Per method: mean over seeds; 95 % interval over training seeds (t); 95 % interval "
            "over test identities (bootstrap: identities resampled with replacement, seeds "
            f"averaged). Against {ref} and against the top method: the paired difference "
            "A − B on the same trials with its 95 % interval (identity bootstrap of the "
            "difference and Welch's t over seeds, in quadrature) and the verdict: better / "
            "worse when the interval excludes 0, else not distinguishable."
        ),
    ]
    header = (
        "metric", "method", "mean", "95 % over seeds", "95 % over identities",
        f"vs {ref}", "verdict", "vs top", "verdict",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = []
    for label, protocol, direction, constraint in VERDICT_ROWS:
        entry = _verdict_entry(inputs, protocol, direction, constraint, "test_unseen")
        if entry is None:
            continue
        top = str(entry.get("top"))
        for m in inputs.methods:
            leaf = metric_leaf(inputs.metrics[m], protocol, direction, constraint, "test_unseen")
            if not leaf:
                continue
            vr = entry.get("vs_reference", {}).get(m)
            vt = entry.get("vs_top", {}).get(m)

            def diff(v: dict[str, Any] | None) -> tuple[str, str]:
                if v is None:
                    return _MISSING, _MISSING
                d = f"{100 * v['difference']:+.1f} {_range(v['ci95_low'], v['ci95_high'])}"
                return d, str(v["verdict"])

            rows.append(
                (
                    label, m + (" (top)" if m == top else ""), _pct(leaf.get("mean")),
                    _range(leaf.get("ci95_low"), leaf.get("ci95_high")),
                    _range(leaf.get("boot95_low"), leaf.get("boot95_high")),
                    *diff(vr), *diff(vt),
                )
            )  # fmt: skip
    out.append(_Table(header, tuple(rows), label_cols=2))
    gains = []
    entry = _verdict_entry(inputs, *HEADLINE)
    for ls, v in (entry or {}).get("lowshot_vs_base", {}).items():
        base = ls.removeprefix("lowshot_")
        gains.append(
            f"{ls} − {base}: {100 * v['difference']:+.1f} "
            f"{_range(v['ci95_low'], v['ci95_high'])}, {v['verdict']}"
        )
    if gains:
        out.append(_Para("Low-shot fine-tuning, 1:2 V→F U paired gain: " + "; ".join(gains) + "."))
    return out


def _probe_blocks(inputs: ReportInputs) -> list[_Block]:
    """Linear attribute probes on each method's face and voice embeddings (test_unseen)."""
    rows: list[tuple[str, ...]] = []
    sources: list[tuple[str, dict[str, Any]]] = [
        (m, inputs.metrics[m].get("probes") or {}) for m in inputs.methods
    ]
    if inputs.ceiling is not None and isinstance(inputs.ceiling.get("attributes"), dict):
        sources.append((CEILING, inputs.ceiling["attributes"]))
    chance: dict[str, Any] = {}
    for name, probes in sources:
        for side in ("face", "voice"):
            fig = probes.get(side)
            if not isinstance(fig, dict):
                continue
            cells = []
            for _, attr, key in PROBE_COLUMNS:
                entry = fig.get(attr)
                entry = entry if isinstance(entry, dict) else {}
                v = entry.get(key)
                cells.append(_pm(v if isinstance(v, dict) else {"mean": v}, 1.0, 2))
                c = entry.get("chance")
                c = c.get("mean") if isinstance(c, dict) else c
                if attr not in chance and isinstance(c, int | float):
                    chance[attr] = c
            rows.append((name, side, *cells))
    if not rows:
        return []
    ch = [chance.get(a) for _, a, _ in PROBE_COLUMNS]
    rows.append(("chance", "", *(_MISSING if c is None else f"{float(c):.2f}" for c in ch)))
    return [
        _Heading(3, "Attribute probes, test_unseen"),
        _Para(
            "Which shared attributes each method's embeddings carry: linear probes trained on the "
            "training split's embeddings, scored on the unseen identities (accuracy, or R² of a "
            "ridge regression). Mean over seeds ± 95 % half-width; – where the dataset lacks the "
            "attribute."
        ),
        _Table(("model", "modality", *(h for h, _, _ in PROBE_COLUMNS)), tuple(rows), label_cols=2),
    ]


def _training_table(inputs: ReportInputs) -> _Table:
    rows = []
    for m in inputs.methods:
        t = inputs.train[m]
        loss, clips = t.get("final_loss"), t.get("train_clips")
        rows.append(
            (
                m,
                _MISSING if clips is None else str(clips),
                str(len(inputs.history[m])),
                _MISSING if loss is None else f"{float(loss):.4f}",
            )
        )
    return _Table(("method", "train clips", "epochs", "final loss"), tuple(rows))


def _blocks(
    inputs: ReportInputs, provenance: Provenance, figures: Sequence[Figure]
) -> list[_Block]:
    out: list[_Block] = [
        _Heading(1, TITLE),
        _Para(f"Inputs digest: {provenance.inputs} (SHA-256 of the files the report read)."),
    ]
    if inputs.warnings:
        out.append(_Heading(2, "Warnings: weak figures"))
        out += [_Para(f"Warning: {w}.") for w in inputs.warnings]
    out.append(_Para(f"Methods: {', '.join(inputs.methods)}. {ranking_text(inputs)}"))
    if inputs.oracle is None:
        out.append(
            _Para(
                f"Oracle: not available ({inputs.oracle_reason}); "
                "oracle rows and fractions of the oracle margin are omitted."
            )
        )
    else:
        out.append(
            _Para(
                "Oracle: a scorer that reads the corpus's ground truth, the ceiling a learned "
                f"method is compared with. {FRACTION_HEADER}: (method − chance) / "
                "(oracle − chance), 0 at chance and 100 at the oracle."
            )
        )
    if inputs.ceiling is not None:
        out.append(
            _Para(
                f"{CEILING.capitalize()}: encoders trained on the same training media with the "
                "ground-truth attributes (gender, nationality, age, build) as labels, voice mapped "
                "to face the way the oracle maps parameters: how much of the oracle's margin the "
                "media carry at all."
            )
        )
    out += _corpus_blocks(inputs)
    out.append(_Heading(2, "Results"))
    n = _n_seeds(inputs)
    out.append(
        _Para(
            "All values in % with one decimal; for EER lower is better. "
            + (
                f"Methods: mean over {n} training seeds ± the half-width of its 95 % "
                "t-interval over seeds (same trials for every seed)."
                if n and n > 1
                else "Methods: one training seed, so no interval over seeds; see the "
                "identity-bootstrap intervals below."
            )
        )
    )
    trials = _trials_text(inputs)
    if trials:
        out.append(_Para(trials))
    for split in splits_present(inputs):
        label = SPLIT_LABELS.get(split)
        out.append(_Heading(3, f"{split} ({label})" if label else split))
        out.append(_split_table(inputs, split))
        out.append(_Para(_gallery_text(inputs, split)))
    out += _verdict_blocks(inputs)
    out += _probe_blocks(inputs)
    if "test_unseen" in splits_present(inputs):
        out.append(_Heading(3, "Every protocol and constraint, test_unseen (means)"))
        out.append(_long_table(inputs, "test_unseen"))
    out.append(_Heading(2, "Training"))
    out.append(_training_table(inputs))
    if figures:
        out.append(_Heading(2, "Figures"))
        out.append(_Figures(tuple(figures)))
    return out


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown(blocks: Sequence[_Block], figure_dir: str) -> str:
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, _Heading):
            lines += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, _Para):
            lines += [b.text, ""]
        elif isinstance(b, _Table):
            align = ["---"] * b.label_cols + ["---:"] * (len(b.header) - b.label_cols)
            lines.append("| " + " | ".join(map(_md_cell, b.header)) + " |")
            lines.append("|" + "|".join(align) + "|")
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in b.rows]
            lines.append("")
        else:
            for f in b.figures:
                path = f"{figure_dir}/{f.name}" if figure_dir else f.name
                lines += [f"**{f.title}** ([{path}]({path}))", "", f"![{f.title}]({path})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 72em; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.4; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-weight: 600; margin-bottom: 0.3em; }
""".strip()


def _html(blocks: Sequence[_Block]) -> str:
    e = html.escape
    body: list[str] = []
    for b in blocks:
        if isinstance(b, _Heading):
            body.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, _Para):
            body.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, _Table):
            body.append("<table>")
            body.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in b.header) + "</tr>")
            for row in b.rows:
                cells = [
                    f"<td>{e(v)}</td>" if i < b.label_cols else f'<td class="num">{e(v)}</td>'
                    for i, v in enumerate(row)
                ]
                body.append("<tr>" + "".join(cells) + "</tr>")
            body.append("</table>")
        else:
            for f in b.figures:
                data = base64.b64encode(f.png).decode("ascii")
                body.append(
                    f'<figure id="{e(f.name)}"><figcaption>{e(f.title)}</figcaption>'
                    f'<img alt="{e(f.title)}" src="data:image/png;base64,{data}"></figure>'
                )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{e(TITLE)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def summary_markdown(
    inputs: ReportInputs,
    provenance: Provenance,
    figures: Sequence[Figure] = (),
    figure_dir: str = "figures",
) -> str:
    """The report as Markdown; figures are linked at ``<figure_dir>/<name>`` (relative)."""
    return _markdown(_blocks(inputs, provenance, figures), figure_dir)


def summary_html(
    inputs: ReportInputs, provenance: Provenance, figures: Sequence[Figure] = ()
) -> str:
    """The report as one self-contained HTML page: inline CSS, figures as ``data:`` URIs."""
    return _html(_blocks(inputs, provenance, figures))


def write_report(
    inputs: ReportInputs, provenance: Provenance, figures: Sequence[Figure], out: Path | str
) -> list[Path]:
    """Write ``<out>/figures/*.png`` (the folder replaced whole), ``summary.md``, ``summary.html``.

    Every write is atomic. Returns the paths written, figures first.
    """
    folder = Path(out)
    fig_dir = folder / "figures"
    with atomic_dir(fig_dir) as tmp:
        for f in figures:
            (tmp / f.name).write_bytes(f.png)
    written = [fig_dir / f.name for f in figures]
    md, page = folder / "summary.md", folder / "summary.html"
    with atomic_path(md) as tmp_md:
        tmp_md.write_text(
            summary_markdown(inputs, provenance, figures, "figures"), encoding="utf-8"
        )
    with atomic_path(page) as tmp_html:
        tmp_html.write_text(summary_html(inputs, provenance, figures), encoding="utf-8")
    return [*written, md, page]
