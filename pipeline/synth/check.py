"""Check a generated corpus against its targets (:mod:`pipeline.synth`) with the real libraries.

``python -m pipeline.synth.check data/synth`` decodes every clip with decord, runs MTCNN on frames
sampled at ``--fps`` (default 1, as the face stage does) and webrtcvad on the audio, and prints:
the share of sampled frames where MTCNN finds exactly one face, clips with no speech found, and
the VAD speech fraction against the generator's own truth.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.preprocess.detector import DetectorConfig, FaceDetector
from pipeline.preprocess.media import read_audio, read_frames
from pipeline.preprocess.vad import VadConfig, frame_decisions
from pipeline.schema import SYNTH_CLIPS, read_table

_detector: FaceDetector | None = None


def _check_clip(args: tuple[str, float, DetectorConfig, VadConfig]) -> dict[str, Any]:
    global _detector
    path, fps, det_cfg, vad_cfg = args
    if _detector is None:
        import torch

        torch.set_num_threads(1)
        _detector = FaceDetector(det_cfg)
    _, frames = read_frames(path, fps)
    dets = _detector.detect(frames)
    n_faces = np.array([len(d.probs) for d in dets])
    audio = read_audio(path, 16000)
    flags = frame_decisions(audio, 16000, vad_cfg)
    return {
        "frames": len(frames),
        "one_face": int((n_faces == 1).sum()),
        "no_face": int((n_faces == 0).sum()),
        "vad_fraction": float(flags.mean()) if len(flags) else 0.0,
    }


def check_corpus(
    root: Path,
    fps: float,
    det_cfg: DetectorConfig,
    vad_cfg: VadConfig,
    workers: int,
    limit: int | None = None,
) -> dict[str, Any]:
    """Run the checks over the corpus (optionally its first ``limit`` clips); returns figures."""
    truth = read_table(root / "ground_truth" / "clips.parquet", SYNTH_CLIPS)
    if limit is not None:
        truth = truth.iloc[:limit]
    jobs = [(str(root / p), fps, det_cfg, vad_cfg) for p in truth["path"]]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        rows = list(pool.map(_check_clip, jobs, chunksize=4))
    wall = time.perf_counter() - t0
    frames = sum(r["frames"] for r in rows)
    vad = np.array([r["vad_fraction"] for r in rows])
    true = truth["speech_fraction"].to_numpy()
    return {
        "clips": len(rows),
        "frames_sampled": frames,
        "one_face_rate": sum(r["one_face"] for r in rows) / frames,
        "no_face_rate": sum(r["no_face"] for r in rows) / frames,
        "clips_without_speech": int((vad == 0).sum()),
        "speech_fraction_vad_mean": float(vad.mean()),
        "speech_fraction_truth_mean": float(true.mean()),
        "speech_fraction_mean_abs_diff": float(np.abs(vad - true).mean()),
        "wall_s": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> None:
    from pipeline.params import load_params

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("root", type=Path, nargs="?", default=Path("data/synth"))
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--fps", type=float, default=1.0)
    ap.add_argument("--limit", type=int, default=None, help="check only the first N clips")
    ap.add_argument(
        "--workers", type=int, default=int(os.environ.get("VOXFACE_WORKERS", os.cpu_count() or 1))
    )
    args = ap.parse_args(argv)
    p = load_params(args.params)
    det = DetectorConfig.of(p.face)
    vad = VadConfig(p.voice.vad_aggressiveness, p.voice.vad_frame_ms, 0, p.voice.energy_gate_db)
    print(
        json.dumps(check_corpus(args.root, args.fps, det, vad, args.workers, args.limit), indent=2)
    )


if __name__ == "__main__":
    main()
