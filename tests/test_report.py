"""The report: table numbers, the unavailable oracle, self-contained HTML, figures, errors."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.report import document, loading
from pipeline.report import figures as figs
from pipeline.schema import FACE_FRAMES, MANIFEST, write_table

pytestmark = pytest.mark.usefixtures("prefect_server")  # see tests/conftest.py

METHODS = ("alpha", "beta")
SEED = 1  # the first of the repository's params.yaml `seeds` (the stage shows that one)
# 1:2 V→F U on test_unseen; the oracle's margin over chance is 0.40.
HEADLINE = {"alpha": 0.72, "beta": 0.66, "oracle": 0.90}
PROV = document.Provenance(inputs="0123456789ab")
FACE_RGB = (200, 120, 90)  # face thumbnails: no green, so green pixels can only be frames


def _metrics(name: str, headline: float, oracle: bool = False) -> dict[str, Any]:
    def table(u: float, extra: dict[str, float] | None = None) -> dict[str, Any]:
        out = {"U": {"test_unseen": u, "test_seen": u + 0.02}}
        for c, v in (extra or {}).items():
            out[c] = {"test_unseen": v, "test_seen": v + 0.01}
        return out

    m: dict[str, Any] = {
        "method": name,
        "match_1to2": {
            "v2f": table(headline, {"G": headline - 0.1, "N": headline - 0.05}),
            "f2v": table(headline - 0.01, {"G": headline - 0.11}),
        },
        "match_1to10": {"v2f": table(headline - 0.4), "f2v": table(headline - 0.41)},
        "verify_auc": {"vf": table(headline + 0.03, {"G": headline - 0.08})},
        "verify_eer": {"vf": table(1.0 - headline - 0.05)},
        "retrieve_map": {"v2f": table(headline / 5), "f2v": table(headline / 6)},
        "chance": {
            "match_1to2": 0.5,
            "match_1to10": 0.1,
            "verify_auc": 0.5,
            "verify_eer": 0.5,
            "retrieve_map": {"test_unseen": 0.05, "test_seen": 0.03},
        },
        "retrieve_gallery": {
            "test_unseen": {"clips": 240, "identities": 40},
            "test_seen": {"clips": 104, "identities": 52},
        },
        "trials": {"match": 600, "verify": 300},
    }
    if not oracle:
        m["oracle_fraction"] = {"match_1to2": {"v2f": {"U": {"test_unseen": 0.0}}}}
    return m


def _jpeg(rgb: tuple[int, int, int], size: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _write(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def _face_keys() -> list[str]:
    return [f"id{i:02d}/v0/{u}" for i in range(6) for u in range(2)]


def make_inputs(root: Path, oracle: bool = True) -> dict[str, Path]:
    """A complete fake input set under ``root``: 2 methods, the oracle, manifest, one shard."""
    paths = {
        "metrics": root / "metrics",
        "eval": root / "eval",
        "train": root / "train",
        "trials": root / "trials.json",
        "manifest": root / "clips.parquet",
        "faces": root / "faces",
    }
    names = (*METHODS, "oracle") if oracle else METHODS
    for m in METHODS:
        _write(paths["metrics"] / "aggregate" / f"{m}.json", _metrics(m, HEADLINE[m]))
    if oracle:
        _write(paths["metrics"] / "oracle.json", _metrics("oracle", HEADLINE["oracle"], True))
    else:
        _write(
            paths["metrics"] / "oracle.json",
            {"method": "oracle", "available": False, "reason": "no ground truth for voxceleb2"},
        )
    for k, name in enumerate(names):
        folder = paths["eval"] / name / ("" if name == "oracle" else f"s{SEED}")
        folder.mkdir(parents=True)
        n = np.arange(2, 11)
        acc = 1.0 / n + 0.05 * (k + 1)
        pd.DataFrame({"n": n, "v2f": acc, "f2v": acc - 0.01}).to_csv(
            folder / "match_curve.csv", index=False
        )
        fpr = np.linspace(0, 1, 21)
        pd.DataFrame({"fpr": fpr, "tpr": fpr ** (1 / (k + 2))}).to_csv(
            folder / "roc.csv", index=False
        )
    keys = _face_keys()
    for m in METHODS:
        entries = []
        for p in range(3):
            ident = f"id{p:02d}"
            ranked = [
                {
                    "clip_key": keys[(2 * p + j) % len(keys)],
                    "identity": keys[(2 * p + j) % len(keys)].split("/")[0],
                    "score": round(0.9 - 0.1 * j, 3),
                    "true": keys[(2 * p + j) % len(keys)].startswith(ident),
                }
                for j in range(5)
            ]
            entries.append({"probe": f"{ident}/v1/0", "identity": ident, "ranked": ranked})
        _write(paths["eval"] / m / f"s{SEED}" / "ranked.json", entries)
        _write(
            paths["train"] / m / f"s{SEED}.json",
            {"final_loss": 0.4224, "pairs_per_s": 280.16, "train_clips": 518},
        )
        history = [{"epoch": float(e), "loss": 4.0 - 0.1 * e, "instance": 1.0} for e in (1, 2, 3)]
        _write(paths["train"] / m / f"s{SEED}_history.json", history)
    _write(
        paths["trials"],
        {"seed": 1, "splits": {"test_unseen": {"identities": 6, "clips": 12}, "test_seen": {}}},
    )
    rows = []
    for i in range(8):
        split = "train" if i < 2 else "test_unseen"
        for v in range(2):
            key = f"id{i:02d}/v{v}/0"
            rows.append(
                {
                    "clip_key": key,
                    "identity": f"id{i:02d}",
                    "video_id": f"v{v}",
                    "utterance": "0",
                    "split": split,
                    "gender": "m" if i % 2 else "f",
                    "nationality": "X",
                    "media_path": f"{key}.mp4",
                    "media_kind": "video",
                    "face_dir": None,
                    "n_face_crops": 0,
                    "size_bytes": 1000,
                }
            )
    write_table(pd.DataFrame(rows), paths["manifest"], MANIFEST)
    frames = []
    for key in keys:
        for idx, rgb in ((3, (40, 40, 200)), (0, FACE_RGB)):  # frame 0 is the one to show
            frames.append(
                {
                    "clip_key": key,
                    "frame_index": idx,
                    "time_s": idx / 25,
                    "box_px": [0.0, 0.0, 48.0, 48.0],
                    "landmarks_px": [0.0] * 10,
                    "prob": 0.99,
                    "n_faces": 1,
                    "crop_size_px": 48,
                    "crop_jpeg": _jpeg(rgb),
                }
            )
    paths["faces"].mkdir()
    write_table(pd.DataFrame(frames), paths["faces"] / "faces-00000.parquet", FACE_FRAMES)
    return paths


def load(paths: dict[str, Path]) -> loading.ReportInputs:
    return loading.load_inputs(
        METHODS,
        paths["metrics"],
        paths["eval"],
        paths["train"],
        paths["trials"],
        paths["manifest"],
        "synth",
        SEED,
    )


def _rows(markdown: str, section: str) -> dict[str, list[str]]:
    """Table rows (first cell -> other cells) of the first table after heading ``section``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and section in line)
    out: dict[str, list[str]] = {}
    in_table = False
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            in_table = True
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not set(cells[0]) <= set("-:"):  # not the alignment row
                out[cells[0]] = cells[1:]
        elif in_table:
            break
    return out


def _png_rgb(data: bytes) -> np.ndarray:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _green(rgb: np.ndarray) -> int:
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return int(((g > 130) & (r < 60) & (b < 60)).sum())


@pytest.fixture(scope="module")
def inputs_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_inputs(tmp_path_factory.mktemp("report-in"))


@pytest.fixture(scope="module")
def inputs(inputs_dir: dict[str, Path]) -> loading.ReportInputs:
    return load(inputs_dir)


@pytest.fixture(scope="module")
def figures(inputs: loading.ReportInputs, inputs_dir: dict[str, Path]) -> list[figs.Figure]:
    faces = loading.load_first_frames(inputs_dir["faces"], loading.ranked_clip_keys(inputs))
    return figs.build_figures(inputs, faces)


def test_split_table_has_a_row_per_method_oracle_and_chance(inputs: loading.ReportInputs) -> None:
    md = document.summary_markdown(inputs, PROV)
    rows = _rows(md, "test_unseen (unseen-unheard)")
    header = rows.pop("method")
    assert header[:8] == [c[0] for c in document.MAIN_COLUMNS]
    assert "EER U (lower is better)" in header
    assert list(rows) == ["alpha", "beta", "oracle", "chance"]
    # alpha: 1:2 V→F U, F→V U, V→F G, 1:10 V→F U, AUC U, EER U, mAP V→F, mAP F→V, fraction
    assert rows["alpha"] == ["72.0", "71.0", "62.0", "32.0", "75.0", "23.0", "14.4", "12.0", "55.0"]
    assert rows["oracle"][0] == "90.0" and rows["oracle"][-1] == "100.0"
    assert rows["chance"] == ["50.0", "50.0", "50.0", "10.0", "50.0", "50.0", "5.0", "5.0", "0.0"]
    seen = _rows(md, "test_seen (seen-heard)")
    assert seen["alpha"][0] == "74.0" and seen["chance"][6] == "3.0"
    assert "Inputs digest: 0123456789ab" in md and "Date" not in md
    assert "240 clips of 40 identities" in md and "104 clips of 52 identities" in md


def test_oracle_fraction_is_the_share_of_the_oracle_margin(inputs: loading.ReportInputs) -> None:
    rows = _rows(document.summary_markdown(inputs, PROV), "test_unseen (unseen-unheard)")
    for m in METHODS:
        expected = (HEADLINE[m] - 0.5) / (HEADLINE["oracle"] - 0.5)
        assert rows[m][-1] == f"{100 * expected:.1f}"
    assert document.oracle_fraction(0.72, 0.9, 0.5) == pytest.approx(0.55)
    assert document.oracle_fraction(0.3, 0.1, 0.5) == pytest.approx(0.5)  # EER: lower is better
    assert document.oracle_fraction(0.7, 0.5, 0.5) is None
    assert document.oracle_fraction(None, 0.9, 0.5) is None


def test_long_table_lists_every_protocol_and_constraint(inputs: loading.ReportInputs) -> None:
    keys = loading.metric_keys(inputs, "test_unseen")
    assert keys[:4] == [
        ("match_1to2", "v2f", "U"),
        ("match_1to2", "v2f", "G"),
        ("match_1to2", "v2f", "N"),
        ("match_1to2", "f2v", "U"),
    ]
    assert ("verify_auc", "vf", "G") in keys and len(keys) == 12
    md = document.summary_markdown(inputs, PROV)
    assert "| 1:2 matching | V→F | N | 67.0 | 61.0 | 85.0 | 50.0 |" in md
    assert "| verification EER (lower is better) | V–F | U | 23.0 | 29.0 | 5.0 | 50.0 |" in md


def test_training_corpus_and_best_method(inputs: loading.ReportInputs) -> None:
    md = document.summary_markdown(inputs, PROV)
    assert _rows(md, "Training")["alpha"] == ["518", "3", "0.4224"]  # no speed: not a result
    corpus = _rows(md, "Corpus")
    assert corpus["train"] == ["2", "4", "–", "–"]
    assert corpus["test_unseen"] == ["6", "12", "6", "12"]
    assert "Dataset layout: synth. Manifest: 16 clips of 8 identities." in md
    assert loading.best_method(inputs) == "alpha"


def test_unavailable_oracle_is_said_and_its_columns_omitted(tmp_path: Path) -> None:
    paths = make_inputs(tmp_path, oracle=False)
    inputs = load(paths)
    assert inputs.oracle is None and "oracle" not in inputs.curves
    md = document.summary_markdown(inputs, PROV)
    assert "Oracle: not available (no ground truth for voxceleb2)" in md
    rows = _rows(md, "test_unseen (unseen-unheard)")
    assert list(rows) == ["method", "alpha", "beta", "chance"]
    assert document.FRACTION_HEADER not in md and len(rows["alpha"]) == len(document.MAIN_COLUMNS)
    assert "oracle" not in _rows(md, "Every protocol")["protocol"]
    page = document.summary_html(inputs, PROV)
    assert "<td>oracle</td>" not in page and "<th>oracle</th>" not in page


def test_html_is_self_contained(inputs: loading.ReportInputs, figures: list[figs.Figure]) -> None:
    page = document.summary_html(inputs, PROV, figures)
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == len(figures) == 5  # curve, roc, loss, ranked x 2
    assert all(_png_rgb(base64.b64decode(u)).size for u in uris)
    assert not re.search(r'(?:href|src)\s*=\s*["\']?(?:https?:)?//', page)
    assert "<link" not in page and "<script" not in page
    assert "<td>alpha</td>" in page and '<td class="num">55.0</td>' in page
    md = document.summary_markdown(inputs, PROV, figures)
    assert "![1:N matching curve (V→F, test_unseen, U)](figures/match_curve.png)" in md
    assert "(figures/ranked_alpha.png)" in md


def test_figures_are_pngs_of_plausible_size(figures: list[figs.Figure]) -> None:
    names = [f.name for f in figures]
    assert names[:3] == ["match_curve.png", "roc.png", "loss.png"]
    assert names[3:] == ["ranked_alpha.png", "ranked_beta.png"]  # the best method first
    for f in figures:
        h, w, _ = _png_rgb(f.png).shape
        assert 200 <= w <= 2000 and 150 <= h <= 2000, (f.name, w, h)


def test_ranked_figure_frames_true_matches_green(inputs: loading.ReportInputs) -> None:
    faces = {k: np.full((48, 48, 3), FACE_RGB, np.uint8) for k in _face_keys()}
    entries = inputs.ranked["alpha"]
    n_true = sum(r["true"] for e in entries for r in e["ranked"])
    assert 0 < n_true < 15
    marked = _green(_png_rgb(figs.ranked_png("alpha", entries, faces)))
    assert marked > 100 * n_true  # a thick frame around each true face
    none_true = [{**e, "ranked": [{**r, "true": False} for r in e["ranked"]]} for e in entries]
    assert _green(_png_rgb(figs.ranked_png("alpha", none_true, faces))) == 0


def test_first_frame_of_each_clip_is_shown(inputs_dir: dict[str, Path]) -> None:
    keys = _face_keys()[:3]
    faces = loading.load_first_frames(inputs_dir["faces"], keys)
    assert sorted(faces) == keys
    assert np.abs(faces[keys[0]].astype(int).mean(axis=(0, 1)) - FACE_RGB).max() < 8
    with pytest.raises(ValueError, match="no face frame"):
        loading.load_first_frames(inputs_dir["faces"], ["id99/v0/0"])


def test_missing_inputs_raise_naming_the_file(tmp_path: Path) -> None:
    paths = make_inputs(tmp_path)
    (paths["eval"] / "beta" / f"s{SEED}" / "roc.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"beta/s1/roc\.csv"):
        load(paths)
    (paths["metrics"] / "aggregate" / "alpha.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"aggregate/alpha\.json: not found"):
        load(paths)
    with pytest.raises(FileNotFoundError, match="faces-"):
        loading.load_first_frames(tmp_path / "nowhere", ["x"])


def test_write_report_is_atomic_and_deterministic(
    inputs: loading.ReportInputs,
    figures: list[figs.Figure],
    inputs_dir: dict[str, Path],
    tmp_path: Path,
) -> None:
    written = document.write_report(inputs, PROV, figures, tmp_path / "reports")
    assert [p.relative_to(tmp_path).as_posix() for p in written[-2:]] == [
        "reports/summary.md",
        "reports/summary.html",
    ]
    assert sorted(p.name for p in (tmp_path / "reports").rglob("*")) == sorted(
        ["figures", *(f.name for f in figures), "summary.md", "summary.html"]
    )
    again = figs.build_figures(
        inputs, loading.load_first_frames(inputs_dir["faces"], loading.ranked_clip_keys(inputs))
    )
    assert [f.png for f in again] == [f.png for f in figures]
    assert (
        document.summary_html(inputs, PROV, again)
        == (tmp_path / "reports/summary.html").read_text()
    )


def test_inputs_digest_follows_content_not_time(tmp_path: Path) -> None:
    d = tmp_path / "metrics"
    (d / "seeds").mkdir(parents=True)
    (d / "seeds" / "a.json").write_text('{"x": 1}\n')
    single = tmp_path / "trials.json"
    single.write_text("{}\n")
    first = document.inputs_digest([d, single, tmp_path / "absent.json"])
    (d / "seeds" / "a.json").touch()  # a new mtime, same bytes
    assert document.inputs_digest([single, d]) == first and len(first) == 12
    (d / "seeds" / "a.json").write_text('{"x": 2}\n')
    assert document.inputs_digest([d, single]) != first


@pytest.mark.slow
def test_stage_main_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stages._runtime import prefect_api
    from stages.report import main

    paths = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    args = [
        "--params", str(params), "--methods", *METHODS,
        "--metrics", str(paths["metrics"]), "--eval", str(paths["eval"]),
        "--train", str(paths["train"]), "--trials", str(paths["trials"]),
        "--manifest", str(paths["manifest"]), "--faces", str(paths["faces"]), "--out", str(out),
    ]  # fmt: skip
    _write(tmp_path / "ablation" / "wen2021.json", _wen2021_ablation()[1])
    with prefect_api():  # one server for both runs
        main([*args, "--ablation", str(tmp_path / "ablation")])
        assert (out / "summary.md").is_file() and (out / "figures/ranked_alpha.png").is_file()
        assert "Ranking: no paired verdicts available" in capsys.readouterr().out
        assert "## Ablations: the papers' claims, tested" in (out / "summary.md").read_text()
        with pytest.raises(SystemExit):
            main([*args, "--trials", str(tmp_path / "missing.json")])
    assert "missing.json: not found" in capsys.readouterr().err


def _with_intervals(paths: dict[str, Path], tied: bool) -> loading.ReportInputs:
    """The fake inputs plus an aggregate leaf with intervals, probes, verdicts and a ceiling."""
    agg = paths["metrics"] / "aggregate"
    a = json.loads((agg / "alpha.json").read_text())
    a["n_seeds"] = 3
    a["match_1to2"]["v2f"]["U"]["test_unseen"] = {
        "mean": 0.72, "n": 3, "std": 0.01, "half_width": 0.0248, "ci95_low": 0.6952,
        "ci95_high": 0.7448, "boot95_low": 0.65, "boot95_high": 0.79,
    }  # fmt: skip
    a["probes"] = {
        "face": {"gender": {"accuracy": {"mean": 0.97, "half_width": 0.01}, "chance": 0.53}},
        "voice": {"gender": {"accuracy": {"mean": 0.99, "half_width": 0.005}}},
    }
    _write(agg / "alpha.json", a)
    b = json.loads((agg / "beta.json").read_text())
    b["n_seeds"] = 3
    _write(agg / "beta.json", b)
    verdict = "not distinguishable" if tied else "worse"
    beta_vs_top = {
        "difference": -0.06, "ci95_low": -0.09 if not tied else -0.12,
        "ci95_high": -0.03 if not tied else 0.01, "verdict": verdict,
    }  # fmt: skip
    head = {
        "means": {"alpha": 0.72, "beta": 0.66},
        "top": "alpha",
        "vs_reference": {"beta": beta_vs_top},
        "vs_top": {"beta": beta_vs_top},
        "tied_for_first": ["alpha", "beta"] if tied else ["alpha"],
    }
    _write(
        agg / "verdicts.json",
        {"reference": "alpha", "metrics": {"match_1to2": {"v2f": {"U": {"test_unseen": head}}}}},
    )
    ceiling = _metrics("ceiling", 0.86, oracle=True)
    ceiling["attributes"] = {"face": {"gender": {"accuracy": 0.99}}}
    _write(paths["metrics"] / "ceiling.json", ceiling)
    return load(paths)


def test_intervals_ties_ceiling_and_probes(tmp_path: Path) -> None:
    tied = _with_intervals(make_inputs(tmp_path / "t"), tied=True)
    md = document.summary_markdown(tied, PROV)
    rows = _rows(md, "test_unseen (unseen-unheard)")
    assert rows["alpha"][0] == "72.0 ± 2.5" and rows["beta"][0] == "66.0"
    assert rows[document.CEILING][0] == "86.0" and rows[document.CEILING][-1] == "90.0"
    assert "tied for first: alpha 72.0, beta 66.0 — not distinguishable" in md
    assert "3 training seeds per method" in md
    assert "Best by" not in md and loading.leaders(tied) == ["alpha", "beta"]
    assert "| 1:2 V→F U | alpha (top) | 72.0 | [69.5, 74.5] | [65.0, 79.0] |" in md
    assert "| 1:2 V→F U | beta | 66.0 | – | – | -6.0 [-12.0, 1.0] | not distinguishable |" in md
    probes = _rows(md, "Attribute probes")
    assert "| alpha | face | 0.97 ± 0.01 | – | – | – |" in md
    assert probes["alpha"] == ["voice", "0.99 ± 0.01", "–", "–", "–"]  # rounded to 2 places
    assert probes[document.CEILING] == ["face", "0.99", "–", "–", "–"]
    assert probes["chance"][1] == "0.53"
    ahead = _with_intervals(make_inputs(tmp_path / "a"), tied=False)
    md2 = document.summary_markdown(ahead, PROV)
    assert "first: alpha 72.0, ahead of every other method at 95 %" in md2
    assert "Behind: beta." in md2 and loading.leaders(ahead) == ["alpha"]
    assert "| 1:2 V→F U | beta | 66.0 |" in md2 and "worse" in md2


def test_warnings_section_and_trials_per_list(tmp_path: Path, inputs: loading.ReportInputs) -> None:
    paths = make_inputs(tmp_path)
    trials = {
        "seed": 1,
        "n_match": 5000,
        "n_verify": 4000,
        "candidates": 10,
        "splits": {"test_unseen": {"identities": 6, "clips": 12}},
        "warnings": ["no seen-heard test split"],
    }
    _write(paths["trials"], trials)
    _write(tmp_path / "manifest.json", {"clips": 16, "warnings": ["few identities"]})
    _write(tmp_path / "faces.json", {"clips_out": 16})  # no warnings key: nothing to add
    got = loading.load_inputs(
        METHODS, paths["metrics"], paths["eval"], paths["train"], paths["trials"],
        paths["manifest"], "synth", SEED, [tmp_path / "manifest.json", tmp_path / "faces.json"],
    )  # fmt: skip
    assert got.warnings == ("few identities", "no seen-heard test split")
    md = document.summary_markdown(got, PROV)
    lines = md.splitlines()
    head = lines.index("## Warnings: weak figures")
    body = [ln for ln in lines[head + 1 :] if ln.strip()][:2]
    assert body == ["Warning: few identities.", "Warning: no seen-heard test split."]
    assert head < next(i for i, ln in enumerate(lines) if ln.startswith("Methods:"))
    assert (
        "Trials per list: 5000 1:N matching trials (K = 10; one list per split, direction and "
        "constraint), 4000 verification pairs (one list per split and constraint); the same "
        "trials for every method and seed."
    ) in md
    assert "Warnings: weak figures" in document.summary_html(got, PROV)
    # Without warnings or per-list sizes neither is shown.
    plain = document.summary_markdown(inputs, PROV)
    assert inputs.warnings == () and "Warnings" not in plain and "Trials per list" not in plain
    with pytest.raises(FileNotFoundError, match="absent.json"):
        loading.load_inputs(
            METHODS, paths["metrics"], paths["eval"], paths["train"], paths["trials"],
            paths["manifest"], "synth", SEED, [tmp_path / "absent.json"],
        )  # fmt: skip


def _wen2021_ablation() -> tuple[Any, dict[str, Any]]:
    """The wen2021 ablation of ablations.yaml and an analysed result of it (fake scores)."""
    from pipeline.evaluate.ablation import analyse, load_ablations
    from tests.test_aggregate import _scored

    ab = load_ablations(Path(__file__).resolve().parents[1] / "ablations.yaml")["wen2021"]
    rng = np.random.default_rng(5)
    p = {"full": 0.8, "no_reweighting": 0.8, "no_global": 0.78, "local_only": 0.6}
    return ab, analyse(ab, {v: _scored("wen2021", x, (1, 2, 3), rng) for v, x in p.items()}, 200, 0)


def test_an_ablation_result_becomes_the_ablation_section(tmp_path: Path) -> None:
    paths = make_inputs(tmp_path / "in")
    assert "Ablations" not in document.summary_markdown(load(paths), PROV)  # none: no section
    ab, result = _wen2021_ablation()

    def with_ablation(result: dict[str, Any]) -> loading.ReportInputs:
        _write(tmp_path / "ablation" / "wen2021.json", result)
        return loading.load_inputs(
            METHODS, paths["metrics"], paths["eval"], paths["train"], paths["trials"],
            paths["manifest"], "synth", SEED, ablation_dir=tmp_path / "ablation",
        )  # fmt: skip

    inputs = with_ablation(result)
    md = document.summary_markdown(inputs, PROV)
    assert "## Ablations: the papers' claims, tested" in md and f"### {ab.paper}" in md
    rows = _rows(md, ab.paper)
    assert list(rows) == ["variant", "full", "no_reweighting", "no_global", "local_only"]
    assert rows["local_only"][1] == "wen2021.global_alignment=false, wen2021.reweighting=false"
    assert any("supports" in line for line in md.splitlines() if "local_only" in line)
    assert "Ablations: the papers" in document.summary_html(inputs, PROV)
    assert "Stale" not in md  # wen2021 is not among this report's methods
    # The report's own methods: a main-run variant that scores otherwise now is flagged.
    result["variants"]["full"]["model"] = METHODS[0]
    md = document.summary_markdown(with_ablation(result), PROV)
    assert "**Stale: measured on other inputs than this report's**" in md
    assert f"full ({METHODS[0]}): 1:2 V->F" in md and "make ablation-wen2021" in md


def test_an_ablation_measured_on_other_inputs_is_stale() -> None:
    """A variant from the main run (no overrides) must score as the current aggregate of its
    model does; a difference means the ablation describes another run."""
    from pipeline.evaluate.ablation import analyse, load_ablations
    from tests.test_aggregate import _scored

    ab = load_ablations(Path(__file__).resolve().parents[1] / "ablations.yaml")["wen2021"]
    rng = np.random.default_rng(4)
    p = {"full": 0.8, "no_reweighting": 0.8, "no_global": 0.78, "local_only": 0.6}
    result = analyse(ab, {v: _scored("wen2021", x, (1, 2, 3), rng) for v, x in p.items()}, 100, 0)
    full = {
        label: leaf["mean"] for label, leaf in result["variants"]["full"].items() if "mean" in leaf
    }

    def aggregate(v2f: float) -> dict[str, Any]:
        return {"match_1to2": {"v2f": {"U": {"test_unseen": {"mean": v2f}}}}}

    assert document.stale_variants(result, {"wen2021": aggregate(full["1:2 V->F"])}) == []
    # The model is not in this run: nothing to compare.
    assert document.stale_variants(result, {}) == []
    moved = document.stale_variants(result, {"wen2021": aggregate(full["1:2 V->F"] + 0.01)})
    assert len(moved) == 1 and moved[0].startswith("full (wen2021): 1:2 V->F")
    # Variants with overrides are experiments, not the main run: never compared.
    assert all(not line.startswith(("no_", "local_only")) for line in moved)
