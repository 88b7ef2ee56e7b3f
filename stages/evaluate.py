"""DVC stages ``evaluate@<method>`` and ``oracle``: score embeddings on the stored trial lists.

``--method NAME`` embeds the test clips with ``models/NAME/model.pt``; ``--oracle`` uses the
synthetic corpus's ground truth instead (the ceiling; on a dataset without ground truth it writes
``{"available": false}``). Both write ``reports/metrics/<name>.json`` (nested protocol ->
direction -> constraint -> split), and ``reports/eval/<name>/`` with the 1:N curve and the ROC
for ``dvc plots`` and a few ranked retrievals for the report. A method's file also gives each
value as a fraction of the oracle's margin over chance.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow

from pipeline.atomic import atomic_path
from pipeline.evaluate import (
    Embeddings,
    Scores,
    model_embeddings,
    oracle_embeddings,
    oracle_fraction,
    score,
)
from pipeline.params import Params
from pipeline.schema import MANIFEST, read_table
from pipeline.train.loop import load_model
from pipeline.trials import read_trials
from stages._runtime import prefect_api, stage_params, write_json
from stages.train import device


def write_scores(name: str, scores: Scores, metrics_dir: Path, eval_dir: Path) -> None:
    out = eval_dir / name
    out.mkdir(parents=True, exist_ok=True)
    for file, frame in (("match_curve.csv", scores.match_curve), ("roc.csv", scores.roc)):
        with atomic_path(out / file) as tmp:
            frame.to_csv(tmp, index=False)
    with atomic_path(out / "ranked.json") as tmp:
        tmp.write_text(json.dumps(scores.ranked, indent=1) + "\n")
    write_json(metrics_dir / f"{name}.json", {"method": name, **scores.metrics})


def score_and_write(
    name: str,
    emb: Embeddings,
    trials: pd.DataFrame,
    manifest: Path,
    metrics_dir: Path,
    eval_dir: Path,
    oracle: Path | None,
) -> dict[str, Any]:
    """Score ``emb`` on ``trials``, add the oracle fractions (when ``oracle`` has figures) and
    write the metrics file and plot tables. Returns the metrics."""
    m = read_table(manifest, MANIFEST)
    identity = dict(zip(m["clip_key"], m["identity"], strict=True))
    scores = score(emb, trials, identity)
    if oracle is not None:
        ref = json.loads(oracle.read_text())
        if ref.get("available", True):
            scores.metrics["oracle_fraction"] = oracle_fraction(scores.metrics, ref)
    write_scores(name, scores, metrics_dir, eval_dir)
    return scores.metrics


@flow(name="evaluate")
def evaluate_flow(
    name: str, params: Params, args: argparse.Namespace, oracle: bool
) -> dict[str, Any]:
    manifest, trials_path = Path(args.manifest), Path(args.trials)
    trials = read_trials(trials_path)
    keys = sorted(set(trials["probe"]))
    if oracle:
        if params.data.layout != "synth":
            out = {"method": "oracle", "available": False, "reason": "no ground truth"}
            write_json(Path(args.metrics) / "oracle.json", out)
            return out
        emb = oracle_embeddings(Path(params.data.root), manifest, keys)
    else:
        dev = device()
        enc, _ = load_model(Path(args.models) / name / "model.pt", dev)
        emb = model_embeddings(
            enc,
            manifest,
            Path(args.faces),
            Path(args.voice),
            params.train.face_size_px,
            dev,
        )
    ref = None if oracle else Path(args.metrics) / "oracle.json"
    return score_and_write(name, emb, trials, manifest, Path(args.metrics), Path(args.eval), ref)


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


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--method", help="score models/<method>/model.pt")
    ap.add_argument("--oracle", action="store_true", help="score the ground-truth oracle")
    add_eval_arguments(ap)
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if bool(args.method) == args.oracle:
        raise SystemExit("give exactly one of --method NAME and --oracle")
    name = "oracle" if args.oracle else args.method
    params = stage_params(args.params)
    with prefect_api():
        res = evaluate_flow(name, params, args, args.oracle)
    if res.get("available", True):
        u = res["match_1to2"]
        print(
            f"evaluate@{name}: 1:2 U test_unseen V->F {u['v2f']['U']['test_unseen']:.4f} "
            f"F->V {u['f2v']['U']['test_unseen']:.4f}; AUC "
            f"{res['verify_auc']['vf']['U']['test_unseen']:.4f}; mAP V->F "
            f"{res['retrieve_map']['v2f']['U']['test_unseen']:.4f}"
        )
    else:
        print(f"evaluate@{name}: {res['reason']}")


if __name__ == "__main__":
    main()
