"""The report's inputs and the numbers read out of them.

Inputs are the files other stages write (formats in the ``report`` stage's docstring): per method
its evaluation metrics (protocol -> direction -> constraint -> split, fractions in [0, 1]), its
1:N curve, ROC and ranked examples, its training summary and loss history; the oracle's metrics
and curves when the corpus has ground truth; the trial generator's summary; the manifest; the face
shards (only for the thumbnails of the ranked figure). :func:`load_inputs` gathers them into one
:class:`ReportInputs`; the "numbers" helpers below pick metrics, chance levels and the leaders out
of it for :mod:`pipeline.report.figures` and :mod:`pipeline.report.document`.

Percentages carry one decimal. "% of oracle margin" is ``(m - chance) / (oracle - chance)``: 0 at
chance, 100 at the oracle; the same formula holds for EER (lower is better), where both signs flip.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.evaluate.aggregate import at
from pipeline.preprocess.jpeg import decode_jpeg
from pipeline.schema import FACE_FRAMES, MANIFEST, SPLITS, read_table

ORACLE = "oracle"

PROTOCOLS: tuple[str, ...] = (
    "match_1to2",
    "match_1to10",
    "verify_auc",
    "verify_eer",
    "retrieve_map",
)
DIRECTIONS: tuple[str, ...] = ("v2f", "f2v", "vf")
CONSTRAINTS: tuple[str, ...] = ("U", "G", "N", "A", "GNA")
#: Top-level keys of a metrics file that are not protocol -> direction -> constraint -> split.
_NOT_METRICS = frozenset(
    {
        "method", "chance", "retrieve_gallery", "trials", "oracle_fraction", "available", "reason",
        "seeds", "n_seeds", "probes", "attributes",
    }
)  # fmt: skip
#: The headline number: which method is "best" and gets its ranked figure first.
HEADLINE = ("match_1to2", "v2f", "U", "test_unseen")
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
    #: Each paper's ablation (``reports/ablation/<paper>.json``, written by ``pipeline.ablate``).
    ablations: tuple[dict[str, Any], ...] = ()


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
    ablation_dir: Path | str | None = None,
) -> ReportInputs:
    """Load every input of the report; a missing file raises FileNotFoundError naming it.

    The ``warnings`` lists of ``stage_reports`` (e.g. ``reports/manifest.json``,
    ``reports/faces.json``) and of the trial summary are shown at the top of the report.

    Per method: its aggregate over seeds ``<metrics_dir>/aggregate/<m>.json`` (a leaf is a number
    or ``{mean, ci95_low, ...}``), and for training seed ``seed`` its ``<eval_dir>/<m>/s<seed>/
    {match_curve.csv, roc.csv, ranked.json}``, ``<train_dir>/<m>/s<seed>.json`` and
    ``s<seed>_history.json``. The oracle: ``<metrics_dir>/oracle.json`` and, when it is
    available, its curve and ROC in ``<eval_dir>/oracle/``. Optional: the verdicts
    ``<metrics_dir>/aggregate/verdicts.json``, the media ceiling ``<metrics_dir>/ceiling.json``
    and every ``<ablation_dir>/<paper>.json`` (in name order).
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
    ablations: list[dict[str, Any]] = []
    if ablation_dir is not None and Path(ablation_dir).is_dir():
        ablations = [_load_dict(f) for f in sorted(Path(ablation_dir).glob("*.json"))]
    return ReportInputs(
        names, metrics, oracle, reason, curves, rocs, ranked, train, history, trials_summary,
        corpus, verdicts, ceiling, seed, tuple(warnings), tuple(ablations),
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
