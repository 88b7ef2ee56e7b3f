"""DVC stage ``lowshot@<method>-<seed>``: CMPC's low-shot supervision setting for one trained model.

Draws ``lowshot.fraction`` of the training identities from ``base.seed`` (the same ones for every
method and seed), fine-tunes ``models/<method>/s<seed>/model.pt`` on their clips with identity
labels (:mod:`pipeline.train.methods.lowshot`; seeded by ``--seed``, checkpointed and resumable like
training), writes ``models/lowshot/<method>/s<seed>/model.pt``, and scores it on the shared trials
as ``lowshot_<method>`` (``reports/metrics/seeds/lowshot_<method>-s<seed>.json``).
"""

from __future__ import annotations

# isort: off
import stages._pinned  # noqa: F401  (first: pins numpy's and torch's kernels before they load)

# isort: on

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import flow

from pipeline.atomic import atomic_path
from pipeline.evaluate.scoring import model_embeddings
from pipeline.evaluate.trials import read_trials
from pipeline.params import Params
from pipeline.train.loop import TrainConfig, load_model, save_model, train
from pipeline.train.methods.lowshot import LowShot, LowShotParams
from pipeline.train.pairs import load_pairs, select_clips
from stages._runtime import (
    device,
    model_dir,
    prefect_api,
    run_main,
    setup_torch,
    stage_params,
    write_json,
    write_timing,
)
from stages._scoring import add_eval_arguments, probe_figures, score_and_write, seed_outputs


@flow(name="lowshot")
def lowshot_flow(
    method: str, seed: int, params: Params, args: argparse.Namespace
) -> dict[str, Any]:
    setup_torch(params.train.threads)
    ls, t = params.lowshot, params.train
    manifest, faces, voice = Path(args.manifest), Path(args.faces), Path(args.voice)
    data = load_pairs(manifest, faces, voice, ("train",), t.face_size_px)
    rng = np.random.default_rng(params.base.seed)
    n_ids = max(2, round(ls.fraction * len(data.identities)))
    labelled = np.sort(rng.choice(len(data.identities), n_ids, replace=False))
    clips = torch.from_numpy(np.flatnonzero(np.isin(data.identity.numpy(), labelled)))
    subset = select_clips(data, clips)
    base, base_cfg = load_model(
        Path(model_dir(method, seed, args.models)) / "model.pt", torch.device("cpu")
    )
    cfg = TrainConfig(
        **{
            **asdict(base_cfg),
            "epochs": ls.epochs,
            "lr": ls.lr,
            "batch_size": min(t.batch_size, len(subset)),
            "seed": seed,
        }
    )
    lp = LowShotParams(ls.tau, n_ids)
    torch.manual_seed(seed)
    loss = LowShot(lp, cfg.embed_dim)
    dev = device()
    out = Path(model_dir(method, seed, str(Path(args.models) / "lowshot")))
    rates: list[float] = []

    def show(row: dict[str, float]) -> None:
        rates.append(row["pairs_per_s"])
        print(f"lowshot@{method}-{seed} {int(row['epoch'])}: {row['loss']:.4f}")

    encoders, history = train(
        subset, loss, lp, cfg, out / "state", dev, init=base.state_dict(), progress=show
    )
    save_model(out / "model.pt", cfg, f"lowshot_{method}", encoders)
    emb = model_embeddings(encoders, manifest, faces, voice, t, dev)
    name = f"lowshot_{method}"
    metrics_file, eval_out = seed_outputs(name, seed, Path(args.metrics), Path(args.eval))
    metrics = score_and_write(
        name, emb, read_trials(Path(args.trials)), manifest, metrics_file, eval_out,
        Path(args.metrics) / "oracle.json", {"probes": probe_figures(encoders, params, args, emb)},
    )  # fmt: skip
    return {
        "metrics": metrics,
        "history": history,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "device": dev.type,
        "pairs_per_s": round(float(np.mean(rates)), 1) if rates else None,
        "train_clips": len(subset),
        "labelled_identities": n_ids,
        "labelled_clips": len(subset),
        "train_identities": len(data.identities),
        "final_loss": round(history[-1]["loss"], 4),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--method", required=True)
    ap.add_argument("--seed", type=int, required=True, help="the training seed of the model")
    add_eval_arguments(ap)
    ap.add_argument(
        "--train", default="reports/train", help="for lowshot_<method>/s<seed>[_history].json"
    )
    args = ap.parse_args(argv)
    params = stage_params(args.params)
    with prefect_api():
        res = lowshot_flow(args.method, args.seed, params, args)
    m = res.pop("metrics")
    history = res.pop("history")
    write_timing(f"lowshot@{args.method}-{args.seed}", {"pairs_per_s": res.pop("pairs_per_s")})
    # Beside the training stages' summaries, so the report lists the fine-tuned models too.
    train_dir = Path(args.train) / f"lowshot_{args.method}"
    with atomic_path(train_dir / f"s{args.seed}_history.json") as tmp:
        tmp.write_text(json.dumps(history, indent=1) + "\n")
    write_json(train_dir / f"s{args.seed}.json", res)
    print(
        f"lowshot@{args.method}-{args.seed}: "
        f"{res['labelled_identities']}/{res['train_identities']} identities "
        f"labelled; 1:2 U test_unseen V->F {m['match_1to2']['v2f']['U']['test_unseen']:.4f}"
    )


if __name__ == "__main__":
    run_main(main)
