"""The comparison page of every method: ``summary.md``, a self-contained ``summary.html``, figures.

Its inputs are loaded by :mod:`pipeline.report.loading` and its figures drawn by
:mod:`pipeline.report.figures`; this module lays them out and writes the files.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_dir, atomic_path
from pipeline.evaluate.ablation import PROTOCOLS as ABLATION_PROTOCOLS
from pipeline.evaluate.ablation import tables as ablation_tables
from pipeline.evaluate.metrics import margin_fraction as oracle_fraction
from pipeline.report.figures import Figure
from pipeline.report.loading import (
    _MISSING,
    HEADLINE,
    ORACLE,
    ReportInputs,
    _n_seeds,
    _pct,
    _pm,
    _range,
    _verdict_entry,
    chance_level,
    metric,
    metric_keys,
    metric_leaf,
    ranking_text,
    splits_present,
)

PROTOCOL_LABELS: dict[str, str] = {
    "match_1to2": "1:2 matching",
    "match_1to10": "1:10 matching",
    "verify_auc": "verification AUC",
    "verify_eer": "verification EER (lower is better)",
    "retrieve_map": "retrieval mAP",
}
DIRECTION_LABELS: dict[str, str] = {"v2f": "V→F", "f2v": "F→V", "vf": "V–F"}
SPLIT_LABELS: dict[str, str] = {
    "test_unseen": "unseen-unheard",
    "test_seen": "seen-heard",
}
CEILING = "media ceiling"
#: The metrics the verdict section lists: (label, protocol, direction, constraint).
VERDICT_ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("1:2 V→F U", "match_1to2", "v2f", "U"),
    ("1:2 F→V U", "match_1to2", "f2v", "U"),
    ("1:2 V→F G", "match_1to2", "v2f", "G"),
    ("AUC U", "verify_auc", "vf", "U"),
)
#: Attribute probes shown: (header, attribute, figure) as :mod:`pipeline.evaluate.probes` writes
#: them.
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


def stale_variants(
    result: dict[str, Any], aggregates: dict[str, dict[str, Any]], tol: float = 1e-4
) -> list[str]:
    """Where an ablation (``reports/ablation/<paper>.json``) no longer describes the current run:
    each variant taken from the main run (no overrides) whose mean on a protocol differs (by more
    than ``tol``) from the current aggregate of its model. It was measured on other inputs
    (preprocessing, trials, code or params changed since); the ablation must be run again. One
    line per differing variant, naming the first protocol that differs (the headline first);
    empty when every such variant matches."""
    labels = [label for label in ABLATION_PROTOCOLS if label in result["protocols"]]
    out = []
    for name, row in result["variants"].items():
        agg = aggregates.get(row["model"])
        if row["set"] or agg is None:
            continue
        for label in labels:
            leaf, now = row.get(label), metric(agg, *result["protocols"][label])
            if leaf and now is not None and abs(float(leaf["mean"]) - now) > tol:
                out.append(
                    f"{name} ({row['model']}): {label} {_pct(leaf['mean'])} in the ablation, "
                    f"{_pct(now)} in this run"
                )
                break
    return out


def _ablation_blocks(inputs: ReportInputs) -> list[_Block]:
    """Each paper's ablation (``python -m pipeline.ablate``): its variants and paired effects."""
    if not inputs.ablations:
        return []
    out: list[_Block] = [
        _Heading(2, "Ablations: the papers' claims, tested"),
        _Para(
            "Each paper's components switched off one at a time (`make ablation-<paper>`, "
            "DVC experiments over the same seeds and trials). An effect supports the paper's "
            "claim when its 95 % interval lies above 0, contradicts it below 0, and cannot tell "
            "when it holds 0."
        ),
    ]
    for result in inputs.ablations:
        out.append(_Heading(3, str(result.get("paper", result.get("ablation", "?")))))
        stale = stale_variants(result, dict(inputs.metrics))
        if stale:
            out.append(
                _Para(
                    "**Stale: measured on other inputs than this report's** (a variant from the "
                    f"main run scores otherwise now: {'; '.join(stale)}). Run "
                    f"`make ablation-{result.get('ablation', '<paper>')}` again."
                )
            )
        for caption, header, rows in ablation_tables(result):
            out.append(_Para(caption))
            out.append(_Table(header, tuple(rows), label_cols=3 if header[0] == "variant" else 2))
    return out


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
    out += _ablation_blocks(inputs)
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
