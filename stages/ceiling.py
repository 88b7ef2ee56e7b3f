"""DVC stage ``ceiling``: the media ceiling, scored on the shared trial lists like a method.

Trains attribute-supervised face and voice encoders on the training split's media
(:mod:`pipeline.evaluate.ceiling`), embeds the test clips through the oracle's voice-to-face ridge
map and writes ``reports/metrics/ceiling.json`` in the methods' format (with the oracle fractions)
plus an ``attributes`` key (the ceiling's own gender / nationality accuracy and age / build R² on
``test_unseen``, from its heads and from linear probes), and ``reports/eval/ceiling/`` (1:N curve,
ROC, ranked retrievals, the training history). Only the synthetic corpus has the latent
attributes: elsewhere it writes ``{"available": false}`` like the oracle stage.
"""

from __future__ import annotations

# isort: off
import stages._pinned  # noqa: F401  (first: pins numpy's and torch's kernels before they load)

# isort: on

import argparse
import json
import time
from pathlib import Path
from typing import Any

from prefect import flow

from pipeline.atomic import atomic_path
from pipeline.evaluate.attributes import clip_attributes
from pipeline.evaluate.ceiling import CeilingConfig, run_ceiling
from pipeline.evaluate.scoring import EVAL_SPLITS
from pipeline.evaluate.trials import read_trials
from pipeline.params import Params
from pipeline.schema import MANIFEST, read_table
from pipeline.train.loop import TrainConfig
from pipeline.train.pairs import load_pairs
from stages._runtime import device, prefect_api, run_main, setup_torch, stage_params, write_json
from stages._scoring import score_and_write, write_unavailable

NAME = "ceiling"


def ceiling_config(params: Params) -> CeilingConfig:
    """The ceiling's config: ``train``'s settings (encoders, crops, augmentation) with
    the ``ceiling`` section's epochs, learning rate and weight decay, seeded by ``base.seed``."""
    t, c = params.train, params.ceiling
    w = c.loss_weights
    return CeilingConfig(
        train=TrainConfig.of(
            t, params.base.seed, epochs=c.epochs, lr=c.lr, weight_decay=c.weight_decay
        ),
        weights=(w.gender, w.nationality, w.age_years, w.build),
        ridge=c.ridge,
        probe_l2=c.probe_l2,
        folds=c.folds,
    )


@flow(name="ceiling")
def ceiling_flow(params: Params, args: argparse.Namespace) -> dict[str, Any]:
    metrics_dir, eval_dir = Path(args.metrics), Path(args.eval)
    if params.data.layout != "synth":
        reason = "no ground-truth attributes: only the synthetic corpus has age and build"
        return write_unavailable(
            NAME, reason, metrics_dir / f"{NAME}.json", eval_dir / NAME, history=True
        )
    setup_torch(params.train.threads)
    manifest = Path(args.manifest)
    faces, voice = Path(args.faces), Path(args.voice)
    size = params.train.face_size_px
    attrs = clip_attributes(manifest, params.data.layout, Path(args.corpus or params.data.root))
    train = load_pairs(manifest, faces, voice, ("train",), size)
    test = load_pairs(manifest, faces, voice, EVAL_SPLITS, size)
    split = read_table(manifest, MANIFEST).set_index("clip_key").loc[test.clip_keys, "split"]
    cfg = ceiling_config(params)

    def show(row: dict[str, float]) -> None:
        print(f"ceiling epoch {int(row['epoch'])}: loss {row['loss']:.4f}", flush=True)

    res = run_ceiling(
        train,
        attrs.loc[train.clip_keys],
        test,
        attrs.loc[test.clip_keys],
        split.to_numpy(),
        cfg,
        device(),
        progress=show,
    )
    oracle = Path(args.oracle)
    metrics = score_and_write(
        NAME,
        res.embeddings,
        read_trials(Path(args.trials)),
        manifest,
        metrics_dir / f"{NAME}.json",
        eval_dir / NAME,
        oracle if oracle.is_file() else None,
    )
    metrics = {
        "method": NAME,
        **metrics,
        "attributes": res.attributes,
        "train": {
            "clips": res.train_clips,
            "epochs": cfg.train.epochs,
            "folds": cfg.folds,
            "final_loss": round(res.history[-1]["loss"], 4),
        },
    }
    write_json(metrics_dir / f"{NAME}.json", metrics)  # the scores plus the attribute figures
    with atomic_path(eval_dir / NAME / "history.json") as tmp:
        history = [{k: round(v, 5) for k, v in row.items()} for row in res.history]
        tmp.write_text(json.dumps(history, indent=1) + "\n")
    return metrics


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--manifest", default="data/manifest/clips.parquet")
    ap.add_argument("--faces", default="data/faces")
    ap.add_argument("--voice", default="data/voice")
    ap.add_argument("--trials", default="data/trials/trials.parquet")
    ap.add_argument("--corpus", default=None, help="synthetic corpus root (default: data.root)")
    ap.add_argument("--oracle", default="reports/metrics/oracle.json", help="oracle metrics")
    ap.add_argument("--metrics", default="reports/metrics")
    ap.add_argument("--eval", default="reports/eval")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    params = stage_params(args.params)
    t0 = time.perf_counter()
    with prefect_api():
        res = ceiling_flow(params, args)
    wall = time.perf_counter() - t0
    if not res.get("available", True):
        print(f"ceiling: {res['reason']}")
        return
    u = res["match_1to2"]
    frac = res.get("oracle_fraction", {}).get("match_1to2", {}).get("v2f", {}).get("U", {})
    heads = res["attributes"]["heads"]
    print(
        f"ceiling: 1:2 U test_unseen V->F {u['v2f']['U']['test_unseen']:.4f} "
        f"F->V {u['f2v']['U']['test_unseen']:.4f} (oracle fraction V->F "
        f"{frac.get('test_unseen', float('nan')):.4f}); heads face {json.dumps(heads['face'])}; "
        f"voice {json.dumps(heads['voice'])}; {wall:.1f} s"
    )


if __name__ == "__main__":
    run_main(main)
