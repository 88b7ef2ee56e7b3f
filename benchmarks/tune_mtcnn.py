"""Speed and detections of MTCNN settings on face-track frames (synthetic corpus + real clips).

``python -m benchmarks.tune_mtcnn`` samples frames at ``face.rate_fps`` from the first ``--clips``
clips of the manifest and from every video in ``../shared/realdata`` (when present). For each
(``min_face_fraction``, ``factor``) setting (``min_face_size_px`` and thresholds from
``params.yaml``) it runs MTCNN one clip per call on one thread, as the faces stage does, picks the
clip's face track (:func:`pipeline.preprocess.face_tracks.select_track`) and prints, per set:

- frames/s (detection only, one thread) and the speed-up over the reference setting;
- face recall: frames with a track face / frames sampled;
- agreement with the reference setting (``--ref-fraction``, ``--ref-factor``; default the
  previous default, 0 and 0.709): frames kept by one setting and not the other, and the median,
  5th percentile and minimum IoU of the two track boxes on frames both kept (the crop is the box
  enlarged by ``face.margin``, so box IoU is crop agreement).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.params import load_params
from pipeline.preprocess.detector import DetectorConfig, FaceDetector
from pipeline.preprocess.face_tracks import iou, select_track
from pipeline.preprocess.media import read_frames
from pipeline.schema import MANIFEST, read_table

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"

Tracks = list[list[np.ndarray | None]]


def _clips(paths: list[Path], rate: float) -> list[np.ndarray]:
    return [read_frames(p, rate)[1] for p in paths]


def run_setting(
    clips: list[np.ndarray], cfg: DetectorConfig, min_prob: float
) -> tuple[Tracks, float]:
    """Per clip, per frame the track's box (None: no usable face); and detection seconds."""
    det = FaceDetector(cfg)
    out: Tracks = []
    seconds = 0.0
    for frames in clips:
        t0 = time.perf_counter()
        dets = det.detect(frames)
        seconds += time.perf_counter() - t0
        h, w = frames.shape[1:3]
        track = select_track(dets, w, h, min_prob)
        out.append([None if k is None else d.boxes[k] for d, k in zip(dets, track, strict=True)])
    return out, seconds


def agreement(ref: Tracks, other: Tracks) -> dict[str, float]:
    """Frames lost / gained against ``ref`` and IoU quantiles of the boxes both kept."""
    pairs = [(a, b) for ca, cb in zip(ref, other, strict=True) for a, b in zip(ca, cb, strict=True)]
    both = [float(iou(a[None], b)[0]) for a, b in pairs if a is not None and b is not None]
    return {
        "lost": sum(a is not None and b is None for a, b in pairs),
        "gained": sum(a is None and b is not None for a, b in pairs),
        "iou_median": float(np.median(both)) if both else float("nan"),
        "iou_p5": float(np.percentile(both, 5)) if both else float("nan"),
        "iou_min": min(both) if both else float("nan"),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--manifest", default="data/manifest/clips.parquet")
    ap.add_argument("--clips", type=int, default=150)
    ap.add_argument("--fractions", default="0,0.2,0.25,0.3,0.35")
    ap.add_argument("--factors", default="0.709,0.6,0.5")
    ap.add_argument("--ref-fraction", type=float, default=0.0)
    ap.add_argument("--ref-factor", type=float, default=0.709)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    p = load_params(args.params)
    f = p.face
    m = read_table(args.manifest, MANIFEST).iloc[: args.clips]
    sets = {"synthetic": _clips([Path(p.data.root) / x for x in m.media_path], f.rate_fps)}
    if (REALDATA / "manifest.csv").is_file():
        with open(REALDATA / "manifest.csv") as fh:
            rows = [r for r in csv.DictReader(fh) if r["has_video"] == "True"]
        sets["realdata"] = _clips([REALDATA / r["file"] for r in rows], f.rate_fps)

    def cfg(fraction: float, factor: float) -> DetectorConfig:
        return DetectorConfig(f.min_face_size_px, f.thresholds, factor, f.batch_size, fraction)

    print(f"min_face_size_px {f.min_face_size_px}, min_prob {f.min_prob}; one thread, per clip")
    for name, clips in sets.items():
        n = sum(len(c) for c in clips)
        run_setting(clips[:2], cfg(args.ref_fraction, args.ref_factor), f.min_prob)  # warm-up
        ref, ref_s = run_setting(clips, cfg(args.ref_fraction, args.ref_factor), f.min_prob)
        print(f"\n{name}: {len(clips)} clips, {n} frames")
        print(
            f"{'fraction':>8} {'factor':>6} {'frames/s':>9} {'speed-up':>8} {'recall':>7} "
            f"{'lost':>5} {'gained':>6} {'IoU med':>8} {'IoU p5':>7} {'IoU min':>7}"
        )
        fractions = [float(x) for x in args.fractions.split(",")]
        factors = [float(x) for x in args.factors.split(",")]
        for fraction, factor in itertools.product(fractions, factors):
            same = (fraction, factor) == (args.ref_fraction, args.ref_factor)
            tracks, s = (
                (ref, ref_s) if same else run_setting(clips, cfg(fraction, factor), f.min_prob)
            )
            a = agreement(ref, tracks)
            kept = sum(b is not None for c in tracks for b in c)
            print(
                f"{fraction:>8} {factor:>6} {n / s:>9.1f} {ref_s / s:>7.2f}x {kept / n:>7.3f} "
                f"{a['lost']:>5} {a['gained']:>6} {a['iou_median']:>8.3f} {a['iou_p5']:>7.3f} "
                f"{a['iou_min']:>7.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
