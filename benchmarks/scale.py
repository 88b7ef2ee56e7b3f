"""Scale benchmark: time per clip and peak memory of the data path against corpus size.

Run after ``make demo`` (it reuses the default corpus's clips and shards)::

    python -m benchmarks.scale                       # 1x, 4x, 16x of each base
    python -m benchmarks.scale --factors 1 4 --train-base 2000

Each measurement runs in a fresh child process (``python -m benchmarks.scale _measure ...``):
its wall time per clip, and its peak resident memory (``ru_maxrss`` of the child; the decoder
processes of the preprocessing stages are not counted). Sizes are ``base x factor`` clips:

- **faces**, **voice**: the stages' own flows (thread pool of ``VOXFACE_WORKERS``, default 2)
  over the default corpus's rendered clips listed again and again under new keys, so that a
  shard of ``n`` clips costs what ``n`` new clips would (``--prep-base``, default 32 clips).
- **train**, **evaluate**, without rendering (``--train-base``, default 6,250, so 16x is
  100,000 clips): Parquet shards written directly, every clip a copy of a real one under a new
  key (6 clips per identity, 3 videos of 2 utterances); then, for each of ``--loaders``
  (``memory``: :func:`pipeline.train.pairs.load_pairs`; ``stream``:
  :class:`pipeline.train.stream.StreamData` with ``params.yaml``'s stream settings;
  ``stream-cache``: the same keeping up to 1 GB of decoded shards between epochs), ``--steps``
  optimiser steps of ``cid`` (the time of one epoch is extrapolated: loading plus steps x clips
  / batch), and the evaluation's embedding of every clip
  (:func:`pipeline.train.loop.embed_clips`; only up to ``--eval-max`` clips, it runs at a few ms
  per clip).
- **throughput**: first, each loader's training steps per second on the default corpus's own
  shards (``--throughput-steps``), one after the other in the same run, and their ratio.

The in-memory loader holds every clip's crops and features, so its peak grows with the corpus;
the stream holds its shuffle buffer and one shard, and the preprocessing stages stream shard by
shard.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.schema import FACE_FRAMES, MANIFEST, VOICE_FEATURES, read_table, write_table

CLIPS_PER_SHARD = 1000


def _shards(folder: Path, prefix: str, spec: Any) -> pd.DataFrame:
    files = sorted(folder.glob(f"{prefix}-*.parquet"))
    if not files:
        raise SystemExit(f"{folder}: no {prefix}-*.parquet shards; run `make demo` first")
    return pd.concat([read_table(f, spec) for f in files], ignore_index=True)


def _key(i: int) -> tuple[str, str, str, str]:
    """Clip ``i``'s key, identity, video and utterance: 6 clips per identity."""
    ident, video, utt = f"sc{i // 6:06d}", f"v{(i // 2) % 3}", f"{i % 2 + 1:05d}"
    return f"{ident}/{video}/{utt}", ident, video, utt


def copy_manifest(source: pd.DataFrame, n: int, out: Path) -> Path:
    """A manifest of ``n`` clips, each a row of ``source`` (cycled) under a new key."""
    rows = source.iloc[[i % len(source) for i in range(n)]].reset_index(drop=True).copy()
    keys = [_key(i) for i in range(n)]
    rows["clip_key"], rows["identity"] = [k[0] for k in keys], [k[1] for k in keys]
    rows["video_id"], rows["utterance"] = [k[2] for k in keys], [k[3] for k in keys]
    rows["split"] = "train"
    return write_table(rows, out, MANIFEST)


def write_direct_shards(faces_dir: Path, voice_dir: Path, n: int, out: Path) -> Path:
    """Faces and voice shards and a manifest of ``n`` clips copied from the real shards under new
    keys, in ``out`` (``faces/``, ``voice/``, ``clips.parquet``); returns the manifest."""
    faces = _shards(faces_dir, "faces", FACE_FRAMES)
    voices = _shards(voice_dir, "voice", VOICE_FEATURES).set_index("clip_key")
    by_clip = {k: g for k, g in faces.groupby("clip_key", sort=True)}
    pool = sorted(set(by_clip) & set(voices.index))
    source = read_table(Path("data/manifest/clips.parquet"), MANIFEST).set_index("clip_key")
    (out / "faces").mkdir(parents=True, exist_ok=True)
    (out / "voice").mkdir(parents=True, exist_ok=True)
    for s, start in enumerate(range(0, n, CLIPS_PER_SHARD)):
        idx = range(start, min(n, start + CLIPS_PER_SHARD))
        f_parts, v_rows = [], []
        for i in idx:
            src, key = pool[i % len(pool)], _key(i)[0]
            f_parts.append(by_clip[src].assign(clip_key=key))
            v_rows.append(voices.loc[src].to_dict() | {"clip_key": key})
        write_table(pd.concat(f_parts), out / "faces" / f"faces-{s:05d}.parquet", FACE_FRAMES)
        write_table(pd.DataFrame(v_rows), out / "voice" / f"voice-{s:05d}.parquet", VOICE_FEATURES)
    return copy_manifest(source.loc[pool].reset_index(), n, out / "clips.parquet")


# ---------------------------------------------------------------- measurements (child process)


def measure(kind: str, work: Path, steps: int, loader: str = "memory") -> dict[str, Any]:
    """One measurement in this process: ``faces`` / ``voice`` (the stage's flow over
    ``work/clips.parquet``), ``train`` or ``evaluate`` (over ``work``'s shards, the data read
    by ``loader``: see :func:`loader_settings`)."""
    import torch

    from pipeline.params import load_params

    params = load_params("params.yaml")
    manifest = work / "clips.parquet"
    n = len(read_table(manifest, MANIFEST))
    t0 = time.perf_counter()
    if kind in ("faces", "voice"):
        from stages._runtime import prefect_api, task_runner

        if kind == "faces":
            from stages.faces import faces_flow as flow

            p: Any = params.face
        else:
            from stages.voice import voice_flow as flow

            p = params.voice
        with prefect_api():
            t0 = time.perf_counter()  # the flow alone (the server's start is not the data path)
            flow.with_options(task_runner=task_runner())(
                str(manifest), params.data.root, p, str(work / f"out_{kind}")
            )
    else:
        from pipeline.train.loop import Encoders, TrainConfig, embed_clips
        from pipeline.train.stream import open_pairs

        torch.set_num_threads(int(os.environ.get("VOXFACE_THREADS", "2")))
        train_params = params.train.model_copy(update=loader_settings(loader))
        data = open_pairs(manifest, work / "faces", work / "voice", ("train",), train_params)
        loaded = time.perf_counter() - t0
        cfg = TrainConfig.of(train_params, params.seeds[0])
        if kind == "train":
            step_s = time_steps(data, cfg, params, steps)
            # One epoch of this corpus: loading it, then len / batch steps (extrapolated).
            epoch_s = loaded + step_s * -(-len(data) // cfg.batch_size)
            extra = {"load_s": round(loaded, 1), "step_s": round(step_s, 4)}
            return _done(kind, n, t0, extra | {"loader": loader}, wall=epoch_s)
        enc = Encoders(cfg)  # untrained: same cost
        embed_clips(enc, data, torch.device("cpu"))
        return _done(kind, n, t0, {"load_s": round(loaded, 1), "loader": loader})
    return _done(kind, n, t0, {})


def time_steps(data: Any, cfg: Any, params: Any, steps: int) -> float:
    """Seconds per optimiser step of ``cid`` over ``steps`` batches of ``data``'s epochs (the
    training loop's body: batches from :func:`pipeline.train.loop.epoch_batches`, both encoders
    forward, the loss backward, Adam), after two warm-up steps."""
    import torch

    from pipeline.train.loop import Encoders, epoch_batches
    from pipeline.train.methods.registry import build_method

    method, _ = build_method("cid", params, data, cfg.seed)
    enc = Encoders(cfg)
    opt = torch.optim.Adam([*enc.parameters(), *method.parameters()], lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    done, t1 = 0, 0.0
    while done < steps + 2:
        for clips, faces, voices in epoch_batches(data, cfg, gen):
            if done == 2:
                t1 = time.perf_counter()
            terms = method(enc.embed_face(faces), enc.embed_voice(voices), _batch(data, clips))
            opt.zero_grad()
            terms["loss"].backward()
            opt.step()
            done += 1
            if done == steps + 2:
                break
    return (time.perf_counter() - t1) / steps


def _batch(data: Any, clips: Any) -> Any:
    from pipeline.train.loop import Batch

    return Batch(clips, data.identity[clips], data.video[clips])


def _done(
    kind: str, n: int, t0: float, extra: dict[str, Any], wall: float | None = None
) -> dict[str, Any]:
    wall = time.perf_counter() - t0 if wall is None else wall
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"kind": kind, "clips": n, "wall_s": round(wall, 1), "ms_per_clip": round(
        1000 * wall / n, 2), "peak_rss_mb": round(peak_mb), **extra}  # fmt: skip


LOADERS = ["memory", "stream", "stream-cache"]
#: The decoded-unit cache of the ``stream-cache`` loader (``train.stream_cache_mb``), in MB.
STREAM_CACHE_MB = 1024


def loader_settings(loader: str) -> dict[str, Any]:
    """``train`` params for a loader name: ``memory`` (:func:`pipeline.train.pairs.load_pairs`),
    ``stream`` (:mod:`pipeline.train.stream`, ``params.yaml``'s stream settings) or
    ``stream-cache`` (the same, with decoded units kept between epochs up to
    :data:`STREAM_CACHE_MB`)."""
    if loader == "stream-cache":
        return {"loader": "stream", "stream_cache_mb": STREAM_CACHE_MB}
    return {"loader": loader}


def _child(kind: str, work: Path, steps: int, loader: str = "memory") -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.scale",
        "_measure",
        kind,
        str(work),
        str(steps),
        loader,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _report(r: dict[str, Any]) -> dict[str, Any]:
    other = {k: v for k, v in r.items() if k in ("load_s", "step_s", "loader")}
    print(
        f"{r['kind']:9s} {r['factor']:6d} {r['clips']:7d} {r['wall_s']:8.1f} "
        f"{r['ms_per_clip']:9.2f} {r['peak_rss_mb']:13d}   {other or ''}",
        flush=True,
    )
    return r


def throughput(work: Path, loaders: list[str], steps: int) -> list[dict[str, Any]]:
    """Training steps per second of each loader on the default corpus's own shards (``data/``),
    measured one after the other in this run; prints the ratios to the first loader."""
    work.mkdir(parents=True)
    (work / "clips.parquet").symlink_to(Path("data/manifest/clips.parquet").resolve())
    (work / "faces").symlink_to(Path("data/faces").resolve())
    (work / "voice").symlink_to(Path("data/voice").resolve())
    rows = []
    for loader in loaders:
        r = _child("train", work, steps, loader) | {"factor": 0, "kind": "throughput"}
        r["pairs_per_s"] = round(params_batch() / r["step_s"], 1)
        rows.append(r)
    base = rows[0]["pairs_per_s"]
    for r in rows:
        print(
            f"throughput on the default corpus ({r['clips']} training clips), {r['loader']}: "
            f"{r['pairs_per_s']} pairs/s ({r['pairs_per_s'] / base:.2f} x {rows[0]['loader']}), "
            f"peak RSS {r['peak_rss_mb']} MB",
            flush=True,
        )
    return rows


def params_batch() -> int:
    from pipeline.params import load_params

    return load_params("params.yaml").train.batch_size


def _projected_mb(done: list[dict[str, Any]], n: int) -> float:
    """Peak RSS (MB) at ``n`` clips, linear through the measured sizes (0 if none)."""
    if not done:
        return 0.0
    a, b = min(done, key=lambda r: r["clips"]), max(done, key=lambda r: r["clips"])
    if a["clips"] == b["clips"]:
        return float(a["peak_rss_mb"]) * n / a["clips"]
    slope = (b["peak_rss_mb"] - a["peak_rss_mb"]) / (b["clips"] - a["clips"])
    return float(b["peak_rss_mb"] + slope * (n - b["clips"]))


def _available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_measure"]:
        print(json.dumps(measure(argv[1], Path(argv[2]), int(argv[3]), argv[4])))
        return
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--factors", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--prep-base", type=int, default=32, help="clips at 1x for faces and voice")
    ap.add_argument("--train-base", type=int, default=6250, help="clips at 1x for train/evaluate")
    ap.add_argument("--steps", type=int, default=30, help="training steps per measurement")
    ap.add_argument("--eval-max", type=int, default=25000, help="largest evaluated corpus")
    ap.add_argument("--parts", nargs="+", default=["faces", "voice", "train", "evaluate"])
    ap.add_argument(
        "--loaders", nargs="+", default=LOADERS, choices=LOADERS,
        help="stream-cache: the stream with decoded shards kept between epochs",
    )  # fmt: skip
    ap.add_argument(
        "--throughput-steps", type=int, default=48,
        help="steps of each loader on the default corpus itself (0: skip that comparison)",
    )  # fmt: skip
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    os.environ.setdefault("VOXFACE_WORKERS", "2")
    source = read_table(Path("data/manifest/clips.parquet"), MANIFEST)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.throughput_steps:
            rows += throughput(Path(tmp) / "default", args.loaders, args.throughput_steps)
        print("part       factor   clips   wall_s   ms/clip   peak RSS MB   other", flush=True)
        for f in args.factors:
            for part in args.parts:
                work = Path(tmp) / f"{part}{f}"
                work.mkdir()
                if part in ("faces", "voice"):
                    copy_manifest(source, args.prep_base * f, work / "clips.parquet")
                    rows.append(_report(_child(part, work, args.steps) | {"factor": f}))
                    continue
                n = args.train_base * f
                if part == "evaluate" and n > args.eval_max:
                    continue
                wrote = False
                for loader in args.loaders:
                    done = [r for r in rows if r["kind"] == part and r.get("loader") == loader]
                    need = _projected_mb(done, n)
                    if need > 0.8 * _available_mb():
                        print(
                            f"{part:9s} {f:6d} {n:7d}   {loader}: skipped, its peak would be "
                            f"about {need / 1024:.0f} GiB (linear in the clips measured), this "
                            f"machine has {_available_mb() / 1024:.0f} GiB available",
                            flush=True,
                        )
                        continue
                    if not wrote:
                        t0 = time.perf_counter()
                        write_direct_shards(Path("data/faces"), Path("data/voice"), n, work)
                        wrote = True
                        print(
                            f"  ({n} clips of shards written in {time.perf_counter() - t0:.0f} s)"
                        )
                    rows.append(_report(_child(part, work, args.steps, loader) | {"factor": f}))
                shutil.rmtree(work)
    for part in args.parts:
        for loader in (None, *args.loaders):
            mine = sorted(
                (r for r in rows if r["kind"] == part and r.get("loader") == loader),
                key=lambda r: r["factor"],
            )
            if len(mine) >= 2:
                a, b = mine[0], mine[-1]
                print(
                    f"{part}{f' ({loader})' if loader else ''}: {b['factor']}x / {a['factor']}x "
                    f"clips: peak RSS x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}, time per clip x"
                    f"{b['ms_per_clip'] / a['ms_per_clip']:.2f}"
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
