"""How 1:2 matching on unseen identities grows with the number of training identities.

Evidence for what limits the learned methods on the default synthetic corpus (the closing notes
cite it). Run after ``make demo``: ``python -m benchmarks.data_scaling --method cid``. It trains
the method on nested subsets of the training identities (drawn from the seed; each subset
contains the smaller ones) with the same number of optimiser steps (epochs scaled by the
inverse fraction), then scores 1:2 V->F (U) on the unseen-unheard identities with the train
stage's quick check, and prints accuracy, final training loss and the seen-clips accuracy
(the training clips themselves) to show over-fitting.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.evaluate.scoring import Embeddings, quick_match
from pipeline.params import load_params
from pipeline.schema import MANIFEST, read_table
from pipeline.train.loop import Encoders, TrainConfig, embed_clips, train
from pipeline.train.methods.registry import build_method
from pipeline.train.pairs import PairData, load_pairs, select_clips


def accuracy(enc: Encoders, data: PairData, clips: pd.DataFrame, split: str, seed: int) -> float:
    """1:2 V->F (U) on 5,000 trials of ``split``'s clips in ``data``: the train stage's check."""
    f, v = embed_clips(enc, data, torch.device("cpu"))
    emb = Embeddings(list(data.clip_keys), f.numpy(), v.numpy())
    acc = quick_match(emb, clips, split, 5000, seed, ("U",))["U"]
    return float("nan") if acc is None else acc


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--method", default="cid")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("VOXFACE_THREADS", str(os.cpu_count() or 1))))
    params = load_params()
    t = params.train
    paths = (Path("data/manifest/clips.parquet"), Path("data/faces"), Path("data/voice"))
    data = load_pairs(*paths, ("train",), t.face_size_px)
    test = load_pairs(*paths, ("test_unseen",), t.face_size_px)
    clips = read_table(paths[0], MANIFEST)
    order = np.random.default_rng(params.base.seed).permutation(len(data.identities))
    print(f"{args.method}: {len(data.identities)} training identities, {t.epochs} epochs at 100 %")
    print("identities  clips  epochs  final_loss  train_1to2_U  unseen_1to2_U  wall_s")
    for frac in args.fractions:
        keep = order[: max(2, round(frac * len(order)))]
        clips = torch.from_numpy(np.flatnonzero(np.isin(data.identity.numpy(), keep)))
        sub = select_clips(data, clips)
        method, mp = build_method(args.method, params, sub, params.seeds[0])
        epochs = round(t.epochs / frac)
        cfg = TrainConfig.of(
            t, params.base.seed, epochs=epochs, head=getattr(method, "head", "none")
        )
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            enc, hist = train(sub, method, mp, cfg, Path(tmp), torch.device("cpu"))
        wall = time.perf_counter() - t0
        print(
            f"{len(keep):10d}  {len(sub):5d}  {epochs:6d}  {hist[-1]['loss']:10.3f}  "
            f"{accuracy(enc, sub, clips, 'train', 1):12.3f}  "
            f"{accuracy(enc, test, clips, 'test_unseen', 1):13.3f}  "
            f"{wall:6.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
