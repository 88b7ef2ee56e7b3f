"""Benchmark of the preprocessing stages against the bare loops they cannot beat.

Run after ``make demo`` (it reads ``data/manifest`` and the corpus): ``make bench`` or
``python -m benchmarks.preprocess --clips 400``. In one run, on the same clips and the same number
of worker processes (``VOXFACE_WORKERS``), it measures

- the bare face loop: decode the sampled frames and run MTCNN on them, nothing else;
- the ``faces`` flow: the same plus isolation, track selection, crops, JPEG, Parquet, Prefect;
- the bare voice loop (decode audio, VAD, log-mel) and the ``voice`` flow;

and prints throughput in clip-seconds of media per wall-second, and the ratios stage / bare.
A Prefect server is started first and its start-up is reported apart (it is paid once per
``dvc repro`` by ``stages.run``).

Each measurement is repeated ``--repeats`` times, bare loop and stage alternating (a shared
machine's speed drifts between two runs of a few seconds each): the figures are the medians of
the repeats, and ``*_stage_vs_bare_range`` gives the lowest and highest ratio of a bare run to the
stage run right after it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.params import load_params
from pipeline.preprocess.detector import DetectorConfig, FaceDetector
from pipeline.preprocess.filterbank import FeatureConfig, log_mel
from pipeline.preprocess.media import read_audio, read_frames
from pipeline.preprocess.vad import VadConfig, frame_decisions, speech_segments
from pipeline.schema import MANIFEST, read_table, write_table

KINDS = ("faces", "voice")
_DET: FaceDetector | None = None


def _warm(cfg: DetectorConfig) -> None:
    """Pool initializer: one thread, MTCNN loaded, decoders imported: timing starts warm."""
    global _DET
    import torch

    torch.set_num_threads(1)
    _DET = FaceDetector(cfg)


def _bare_faces(args: tuple[list[str], DetectorConfig, float]) -> int:
    paths, _, rate = args
    det = _DET
    assert det is not None
    n = 0
    for p in paths:  # one clip per MTCNN call, as the stage
        n += sum(len(d.probs) > 0 for d in det.detect(read_frames(p, rate)[1]))
    return n


def _bare_voice(args: tuple[list[str], VadConfig, FeatureConfig]) -> float:
    paths, vad, feats = args
    speech = 0.0
    for p in paths:
        audio = read_audio(p, 16000)
        segs = speech_segments(frame_decisions(audio, 16000, vad), vad.frame_ms)
        x = np.concatenate([audio[int(a * 16000) : int(b * 16000)] for a, b in segs] or [audio[:0]])
        speech += log_mel(x, 16000, feats).shape[0] * 0.01
    return speech


def _medians(kind: str, bare: list[float], stage: list[float]) -> dict[str, Any]:
    """The median bare and stage seconds of the repeats of ``kind`` (faces, voice), and the
    range of their paired ratios (bare / stage)."""
    ratios = [b / s for b, s in zip(bare, stage, strict=True)]
    return {
        f"bare_{kind}_s": float(np.median(bare)),
        f"{kind}_stage_s": float(np.median(stage)),
        f"{kind}_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        f"{kind}_repeats_bare_stage_s": [
            [round(b, 2), round(s, 2)] for b, s in zip(bare, stage, strict=True)
        ],
    }


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--manifest", default="data/manifest/clips.parquet")
    ap.add_argument(
        "--clips", default="200,960", help="two workload sizes (clips), small then large"
    )
    ap.add_argument("--repeats", type=int, default=3, help="runs of each measurement (median)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument(
        "--only", choices=KINDS, action="append", help="measure this stage only (repeatable)"
    )
    args = ap.parse_args(argv)
    kinds = tuple(k for k in KINDS if k in (args.only or KINDS))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from stages._runtime import prefect_api, runner_kind, task_runner, workers
    from stages.faces import face_config, faces_flow
    from stages.voice import voice_config, voice_flow

    p = load_params(args.params)
    sizes = [int(x) for x in args.clips.split(",")]
    full = read_table(args.manifest, MANIFEST)
    full = full[full.media_kind == "video"]
    root = Path(p.data.root)
    n_workers = workers()
    fcfg, vcfg = face_config(p.face), voice_config(p.voice)
    import decord

    # Bare loops: worker processes forked and warmed before anything else runs here.
    pool = mp.get_context("fork").Pool(n_workers, initializer=_warm, initargs=(fcfg.detector,))
    pool.map(abs, range(n_workers * 4))
    out: dict[str, Any] = {
        "workers": n_workers,
        "runner": runner_kind(),
    }
    runs = []
    with pool, tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with prefect_api():
            out["prefect_server_start_s"] = round(time.perf_counter() - t0, 2)
            for n in sizes:
                manifest = full.iloc[:n]
                paths = [str(root / m) for m in manifest.media_path]
                media_s = sum(
                    decord.AudioReader(x, sample_rate=16000, mono=True).shape[1] / 16000
                    for x in paths
                )
                sub = write_table(manifest, Path(tmp) / f"clips{n}.parquet", MANIFEST)
                r: dict[str, Any] = {"clips": len(paths), "media_s": round(media_s, 1)}
                if "faces" in kinds:
                    jobs = [
                        (c, fcfg.detector, fcfg.rate_fps)
                        for c in _chunks(paths, p.face.shard_clips)
                    ]
                    bare, stage = [], []
                    for i in range(args.repeats):
                        t0 = time.perf_counter()
                        frames = int(sum(pool.map(_bare_faces, jobs, chunksize=1)))
                        bare.append(time.perf_counter() - t0)
                        t0 = time.perf_counter()
                        rep = faces_flow.with_options(task_runner=task_runner())(
                            str(sub), str(root), p.face, f"{tmp}/faces{n}-{i}"
                        )
                        stage.append(time.perf_counter() - t0)
                    r |= _medians("faces", bare, stage)
                    r["bare_frames_with_face"] = frames
                    r["stage_frames_with_face"] = rep["frames_with_face"]
                if "voice" in kinds:
                    jobs_v = [
                        (c, vcfg.vad, vcfg.features) for c in _chunks(paths, p.voice.shard_clips)
                    ]
                    bare, stage = [], []
                    for i in range(args.repeats):
                        t0 = time.perf_counter()
                        pool.map(_bare_voice, jobs_v, chunksize=1)
                        bare.append(time.perf_counter() - t0)
                        t0 = time.perf_counter()
                        voice_flow.with_options(task_runner=task_runner())(
                            str(sub), str(root), p.voice, f"{tmp}/voice{n}-{i}"
                        )
                        stage.append(time.perf_counter() - t0)
                    r |= _medians("voice", bare, stage)
                runs.append({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()})
    out["runs"] = runs
    small, large = runs[0], runs[-1]
    for kind, bare, stage in (
        ("faces", "bare_faces_s", "faces_stage_s"),
        ("voice", "bare_voice_s", "voice_stage_s"),
    ):
        if kind not in kinds:
            continue
        out[f"{kind}_stage_clip_s_per_s"] = round(large["media_s"] / large[stage], 1)
        out[f"{kind}_bare_clip_s_per_s"] = round(large["media_s"] / large[bare], 1)
        out[f"{kind}_stage_vs_bare"] = round(large[bare] / large[stage], 3)
        out[f"{kind}_stage_vs_bare_range"] = large[f"{kind}_ratio_range"]
        # Marginal: the extra clips' cost, fixed start-up costs (flow, workers) cancelled out.
        out[f"{kind}_marginal_stage_vs_bare"] = round(
            (large[bare] - small[bare]) / (large[stage] - small[stage]), 3
        )
    print(json.dumps(out, indent=2))
    for kind in kinds:
        print(
            f"{kind}: stage {out[f'{kind}_stage_clip_s_per_s']} clip-s/s vs bare "
            f"{out[f'{kind}_bare_clip_s_per_s']} clip-s/s on {large['clips']} clips -> "
            f"{out[f'{kind}_stage_vs_bare']:.0%} of the bare loop end to end, "
            f"{out[f'{kind}_marginal_stage_vs_bare']:.0%} per added clip"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
