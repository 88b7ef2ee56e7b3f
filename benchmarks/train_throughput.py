"""Training throughput of every method beside the ``cid`` baseline, in one run.

Run after ``make demo`` (it reads the default corpus's training shards):
``python -m benchmarks.train_throughput --epochs 6 --rounds 2``. Each method trains from scratch
with the params of ``params.yaml`` except that clustering starts at epoch 1 and repeats every
``--every`` epochs (so a short run pays for as many k-means refreshes per epoch as the default
schedule, one per 2 epochs), for ``--epochs`` epochs; the wall time includes the per-epoch hooks
(memory-bank k-means, re-weighting), the checkpoint writes and the sampling. Methods run in
alternating order for ``--rounds`` rounds; pairs/s is the median over rounds, and the overhead
is each method's time per pair over cid's from the same round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pipeline.params import load_params
from pipeline.train.loop import TrainConfig, train
from pipeline.train.methods.registry import build_method
from pipeline.train.pairs import load_pairs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--methods", nargs="+", default=["cid", "wen2021", "cmpc", "bipseudo"])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("VOXFACE_THREADS", str(os.cpu_count() or 1))))
    torch.use_deterministic_algorithms(True)
    params = load_params(args.params)
    for name in ("cmpc", "bipseudo"):
        section = getattr(params, name).model_copy(
            update={"start_epoch": 1, "every_epochs": args.every}
        )
        params = params.model_copy(update={name: section})
    wen = params.wen2021.model_copy(update={"warmup_steps": 8, "every_steps": 8})
    params = params.model_copy(update={"wen2021": wen})
    t = params.train
    data = load_pairs(
        Path("data/manifest/clips.parquet"), Path("data/faces"), Path("data/voice"),
        ("train",), t.face_size_px,
    )  # fmt: skip
    print(
        f"{len(data)} training clips, batch {t.batch_size}, {args.epochs} epochs per run, "
        f"{torch.get_num_threads()} threads"
    )
    rate: dict[str, list[float]] = {m: [] for m in args.methods}
    for rnd in range(args.rounds):
        order = args.methods if rnd % 2 == 0 else args.methods[::-1]
        for name in order:
            method, mparams = build_method(name, params, data, params.seeds[0])
            cfg = TrainConfig.of(
                t, params.base.seed, epochs=args.epochs, head=getattr(method, "head", "none")
            )
            steps = max(1, len(data) // t.batch_size)
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                train(data, method, mparams, cfg, Path(tmp), torch.device("cpu"))
                wall = time.perf_counter() - t0
            rate[name].append(args.epochs * steps * t.batch_size / wall)
            print(f"round {rnd + 1} {name:9s} {rate[name][-1]:7.1f} pairs/s ({wall:.1f} s)")
    base = [r for r in rate.get("cid", [])]
    print("\nmethod     pairs/s (median)  overhead vs cid (per round)")
    for name in args.methods:
        med = statistics.median(rate[name])
        if base:
            over = [100 * (b / r - 1) for b, r in zip(base, rate[name], strict=True)]
            detail = ", ".join(f"{o:+.1f} %" for o in over)
        else:
            detail = "no cid run"
        print(f"{name:9s}  {med:15.1f}  {detail}")


if __name__ == "__main__":
    main()
