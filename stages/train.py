"""DVC stage ``train@<method>-<seed>``: train one association method with one training seed.

Loads the training split's (face, voice) pairs, trains the method's encoders with the shared
loop (seeded by ``--seed``, one of ``params.yaml``'s ``seeds``: initialisation, batch order,
k-means; a checkpoint every epoch, resumed after a kill), and writes ``models/<method>/s<seed>/``
(``model.pt``; ``state/`` keeps the checkpoints across runs for resuming), the per-epoch
history for ``dvc plots`` and a quick 1:2 voice->face check on the validation identities (the
test splits are for the evaluation stages only). ``wen2021``
runs its two phases (the re-weighting run, then the main run with the identity weights
frozen; :func:`pipeline.train.methods.wen2021.phases`). The method comes from
:mod:`pipeline.train.methods.registry`. The device comes from ``VOXFACE_DEVICE`` (default: CUDA when
present, else CPU).

Data-parallel training (:mod:`pipeline.train.distributed`): ``VOXFACE_NPROC=N`` relaunches the
stage as ``torchrun --standalone --nproc-per-node N`` (so ``VOXFACE_NPROC=2 dvc repro`` trains
every model over two processes), or launch ``torchrun ... -m stages.train ...`` yourself (several
nodes: ``--nnodes``, ``--rdzv-endpoint``). Each process takes one GPU (``LOCAL_RANK``) or a share
of the CPU cores; rank 0 alone writes the checkpoints, the model and the reports, which record
the process count (``processes``) with the thread count: like it, it changes the trained floats.
"""

from __future__ import annotations

# isort: off
import stages._pinned  # noqa: F401  (first: pins numpy's and torch's kernels before they load)

# isort: on

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import flow

from pipeline.atomic import atomic_path
from pipeline.evaluate.scoring import Embeddings, quick_match
from pipeline.params import Params
from pipeline.schema import MANIFEST, read_table
from pipeline.train import distributed
from pipeline.train.loop import embed_clips, save_model
from pipeline.train.methods.registry import (
    MethodSetupError,
    UnknownMethodError,
    lookup,
    train_method,
)
from pipeline.train.stream import open_pairs
from stages._runtime import (
    device,
    fail,
    model_dir,
    prefect_api,
    run_main,
    setup_torch,
    stage_params,
    write_json,
    write_timing,
)


@flow(name="train")
def train_flow(
    method_name: str, seed: int, params: Params, manifest: str, faces: str, voice: str, out: str
) -> dict[str, Any]:
    t = params.train
    setup_torch(t.threads)
    data = open_pairs(Path(manifest), Path(faces), Path(voice), ("train",), t)
    dev = distributed.init_from_env() or device()
    rates: list[float] = []

    def show(row: dict[str, float]) -> None:
        if distributed.rank() != 0:
            return
        rates.append(row["pairs_per_s"])
        print(
            f"{method_name} epoch {int(row['epoch'])}: loss {row['loss']:.4f} "
            f"({row['pairs_per_s']:.0f} pairs/s)",
            flush=True,
        )

    try:  # the method's phases (wen2021: two, pipeline.train.methods.wen2021.phases)
        cfg, (encoders, history, extra) = train_method(
            method_name, params, data, seed, Path(out) / "state", dev, show
        )
    except MethodSetupError as e:  # e.g. more clusters than the clips the faces/voice stages kept
        return {"error": str(e)}
    if distributed.rank() != 0:  # rank 0 holds the same model and writes it
        return {"rank": distributed.rank()}
    save_model(Path(out) / "model.pt", cfg, method_name, encoders)
    # Quick check on the validation identities (the evaluation stages score the test splits),
    # on trials drawn and scored by the evaluation's own code.
    val = open_pairs(Path(manifest), Path(faces), Path(voice), ("val",), t)
    f, v = embed_clips(encoders, val, dev)
    emb = Embeddings(list(val.clip_keys), f.numpy(), v.numpy())
    m = read_table(manifest, MANIFEST)
    acc = quick_match(emb, m, "val", t.eval_trials, params.base.seed)
    acc = {c: None if a is None else round(a, 4) for c, a in acc.items()}
    return {
        "history": history,
        "final_loss": history[-1]["loss"],
        # The settings that change a CPU run's floats (recorded with the results they shaped).
        "threads": torch.get_num_threads(),
        "processes": distributed.world_size(),
        "device": dev.type,
        # speed, logged to logs/timings by main(), not tracked
        "pairs_per_s": float(np.mean(rates)) if rates else None,
        "train_clips": len(data),
        "seed": seed,
        "val_1to2_v2f_U": acc["U"],
        "val_1to2_v2f_G": acc["G"],
        "val_identities": len(val.identities),
        **extra,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--method", required=True)
    ap.add_argument("--seed", type=int, required=True, help="training seed (one of `seeds`)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--manifest", default="data/manifest/clips.parquet")
    ap.add_argument("--faces", default="data/faces")
    ap.add_argument("--voice", default="data/voice")
    ap.add_argument("--out", default=None, help="default: models/<method>/s<seed>")
    ap.add_argument("--reports", default="reports/train")
    args = ap.parse_args(argv)
    try:
        lookup(args.method)
    except UnknownMethodError as e:
        fail(f"train@{args.method}-{args.seed}: {e}")
    params = stage_params(args.params)
    nproc = int(os.environ.get("VOXFACE_NPROC", "1"))
    if nproc > 1 and "WORLD_SIZE" not in os.environ:  # relaunch as N processes
        args_ = sys.argv[1:] if argv is None else argv
        sys.exit(subprocess.call(torchrun_command(nproc, args_)))
    out = args.out or model_dir(args.method, args.seed)
    if distributed.rank_from_env() != 0:  # another rank of torchrun: the same training, no flow
        train_flow.fn(args.method, args.seed, params, args.manifest, args.faces, args.voice, out)
        return
    with prefect_api():
        res = train_flow(args.method, args.seed, params, args.manifest, args.faces, args.voice, out)
    if "error" in res:
        fail(f"train@{args.method}-{args.seed}: {res['error']}")
    history = res.pop("history")
    write_timing(f"train@{args.method}-{args.seed}", {"pairs_per_s": res.pop("pairs_per_s")})
    reports = Path(args.reports) / args.method
    with atomic_path(reports / f"s{args.seed}_history.json") as tmp:
        tmp.write_text(json.dumps(history, indent=1) + "\n")
    write_json(
        reports / f"s{args.seed}.json",
        {k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()},
    )
    print(f"train@{args.method}-{args.seed}: {json.dumps(res)}")


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """This stage as ``nproc`` processes on this node (``torchrun --standalone``: a free port)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(nproc), "-m", "stages.train", *argv]  # fmt: skip


if __name__ == "__main__":
    run_main(main)
