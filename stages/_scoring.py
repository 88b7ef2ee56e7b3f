"""What the scoring stages share (``evaluate``, ``oracle``, ``lowshot``, ``ceiling``): where a
scored model's files go, scoring embeddings on the stored trials and writing every declared output,
the "unavailable" outputs of a dataset without ground truth, the attribute probes, and the CLI
arguments of scoring. A stage-support module like :mod:`stages._runtime`: no stage imports
another stage's module.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.atomic import atomic_path
from pipeline.evaluate.attributes import clip_attributes
from pipeline.evaluate.probes import embedding_probes
from pipeline.evaluate.scoring import Embeddings, Scores, model_embeddings, oracle_fraction, score
from pipeline.params import Params
from pipeline.schema import MANIFEST, OUTCOMES, read_table, write_table
from pipeline.train.loop import Encoders
from stages._runtime import write_json


def seed_outputs(name: str, seed: int, metrics_dir: Path, eval_dir: Path) -> tuple[Path, Path]:
    """(metrics file, evaluation folder) of one scored (model, seed):
    ``<metrics>/seeds/<name>-s<seed>.json`` and ``<eval>/<name>/s<seed>/``."""
    return metrics_dir / "seeds" / f"{name}-s{seed}.json", eval_dir / name / f"s{seed}"


def write_scores(name: str, scores: Scores, metrics_file: Path, out: Path) -> None:
    """The metrics file, and in ``out`` the plot tables, ranked examples and trial outcomes."""
    out.mkdir(parents=True, exist_ok=True)
    for file, frame in (("match_curve.csv", scores.match_curve), ("roc.csv", scores.roc)):
        with atomic_path(out / file) as tmp:
            frame.to_csv(tmp, index=False)
    with atomic_path(out / "ranked.json") as tmp:
        tmp.write_text(json.dumps(scores.ranked, indent=1) + "\n")
    write_table(scores.outcomes, out / "outcomes.parquet", OUTCOMES)
    write_json(metrics_file, {"method": name, **scores.metrics})


def write_unavailable(
    name: str, reason: str, metrics_file: Path, out: Path, history: bool = False
) -> dict[str, Any]:
    """What a dataset cannot provide (the oracle or the media ceiling without ground truth):
    the metrics file says ``available: false`` and why; every declared output exists, empty
    (the plot tables with their headers, no ranked examples, no outcomes), so DVC and the report
    read it as unavailable rather than failing."""
    out.mkdir(parents=True, exist_ok=True)
    tables = {"match_curve.csv": "n,v2f,f2v\n", "roc.csv": "fpr,tpr\n"}
    if history:
        tables["history.json"] = "[]\n"
    for file, text in {**tables, "ranked.json": "[]\n"}.items():
        with atomic_path(out / file) as tmp:
            tmp.write_text(text)
    write_table(pd.DataFrame(columns=OUTCOMES.schema.names), out / "outcomes.parquet", OUTCOMES)
    payload = {"method": name, "available": False, "reason": reason}
    write_json(metrics_file, payload)
    return payload


def score_and_write(
    name: str,
    emb: Embeddings,
    trials: pd.DataFrame,
    manifest: Path,
    metrics_file: Path,
    eval_out: Path,
    oracle: Path | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score ``emb`` on ``trials``, add the oracle fractions (when ``oracle`` has figures) and
    ``extra`` (e.g. attribute probes), and write the metrics file, plot tables and outcomes
    (:func:`write_scores`). Returns the metrics."""
    m = read_table(manifest, MANIFEST)
    identity = dict(zip(m["clip_key"], m["identity"], strict=True))
    scores = score(emb, trials, identity)
    if oracle is not None:
        ref = json.loads(oracle.read_text())
        if ref.get("available", True):
            scores.metrics["oracle_fraction"] = oracle_fraction(scores.metrics, ref)
    scores.metrics.update(extra or {})
    write_scores(name, scores, metrics_file, eval_out)
    return scores.metrics


def probe_figures(
    encoders: Encoders, params: Params, args: argparse.Namespace, test: Embeddings
) -> dict[str, Any]:
    """Linear attribute probes on a model's embeddings (:mod:`pipeline.evaluate.probes`): fitted on
    the training split's clips, scored on the test_unseen clips of ``test``."""
    manifest = Path(args.manifest)
    train = model_embeddings(
        encoders, manifest, Path(args.faces), Path(args.voice), params.train,
        next(encoders.parameters()).device, splits=("train",),
    )  # fmt: skip
    synth = params.data.layout == "synth"
    attrs = clip_attributes(manifest, params.data.layout, Path(params.data.root) if synth else None)
    m = read_table(manifest, MANIFEST)
    unseen = set(m.loc[m["split"] == "test_unseen", "clip_key"])
    keys = [k for k in test.clip_keys if k in unseen]
    rows = test.rows(keys)
    return embedding_probes(
        train.face, train.voice, attrs.loc[train.clip_keys],
        test.face[rows], test.voice[rows], attrs.loc[keys],
    )  # fmt: skip


def add_eval_arguments(ap: argparse.ArgumentParser) -> None:
    """The inputs and outputs of scoring a model (shared with ``lowshot``)."""
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--manifest", default="data/manifest/clips.parquet")
    ap.add_argument("--faces", default="data/faces")
    ap.add_argument("--voice", default="data/voice")
    ap.add_argument("--trials", default="data/trials/trials.parquet")
    ap.add_argument("--models", default="models")
    ap.add_argument("--metrics", default="reports/metrics")
    ap.add_argument("--eval", default="reports/eval")
