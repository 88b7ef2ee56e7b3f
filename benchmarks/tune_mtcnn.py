"""Speed and detections of MTCNN settings on face-track frames (synthetic corpus + real clips).

``python -m benchmarks.tune_mtcnn`` samples frames at 1 fps from the first ``--clips`` clips of
the manifest and from every video in ``../shared/realdata`` (when present), then for each
(min_face_size, factor, batch) setting prints frames/s on one thread and the share of frames
where a face with prob >= face.min_prob is found.
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
from pipeline.preprocess.media import read_frames
from pipeline.schema import MANIFEST, read_table

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def _frames(paths: list[Path]) -> list[np.ndarray]:
    return [f for p in paths for f in read_frames(p, 1.0)[1]]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--manifest", default="data/manifest/clips.parquet")
    ap.add_argument("--clips", type=int, default=150)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    p = load_params(args.params)
    m = read_table(args.manifest, MANIFEST).iloc[: args.clips]
    sets = {"synthetic": _frames([Path(p.data.root) / x for x in m.media_path])}
    if (REALDATA / "manifest.csv").is_file():
        with open(REALDATA / "manifest.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["has_video"] == "True"]
        sets["realdata"] = _frames([REALDATA / r["file"] for r in rows])
    print(
        f"frames: {', '.join(f'{k} {len(v)}' for k, v in sets.items())}; min_prob {p.face.min_prob}"
    )
    print(
        f"{'min_face':>8} {'factor':>6} {'batch':>5} "
        + " ".join(f"{k + ' fps':>14} {k + ' found':>15}" for k in sets)
    )
    for mfs, factor, batch in itertools.product((20, 40, 60, 80), (0.709, 0.6), (8, 32)):
        det = FaceDetector(DetectorConfig(mfs, p.face.thresholds, factor, batch))
        cells = []
        for frames in sets.values():
            by_shape: dict[tuple[int, ...], list[np.ndarray]] = {}
            for f in frames:
                by_shape.setdefault(f.shape, []).append(f)
            t0 = time.perf_counter()
            found = sum(
                bool((d.probs >= p.face.min_prob).any())
                for g in by_shape.values()
                for d in det.detect(np.stack(g))
            )
            dt = time.perf_counter() - t0
            cells.append(f"{len(frames) / dt:>14.1f} {found / len(frames):>15.3f}")
        print(f"{mfs:>8} {factor:>6} {batch:>5} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
