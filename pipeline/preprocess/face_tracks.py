"""Choose the face a clip is about, cut it out, and process shards of clips (stage ``faces``).

A talking-face clip can show other people. The clip's face is anchored on the detection that is
large and central (``area share x (1 - distance from centre)``) among all sampled frames; in
each frame the detection that overlaps the anchor most is kept, so the track stays on one person.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.preprocess.detector import Detections, DetectorConfig, FaceDetector
from pipeline.preprocess.jpeg import encode_jpeg
from pipeline.preprocess.media import read_face_frames
from pipeline.preprocess.shards import ClipRef, ShardResult, decode_each
from pipeline.schema import FACE_FRAMES, write_table


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` (N, 4) with one box ``b`` (4,), x1 y1 x2 y2."""
    x1 = np.maximum(a[:, 0], b[0])
    y1 = np.maximum(a[:, 1], b[1])
    x2 = np.minimum(a[:, 2], b[2])
    y2 = np.minimum(a[:, 3], b[3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    out: np.ndarray = inter / np.maximum(area_a + area_b - inter, 1e-9)
    return out


def _prominence(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Large and central scores highest: area share x (1 - normalised centre distance)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (width * height)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 / width - 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 / height - 0.5
    dist = np.sqrt(cx**2 + cy**2) / np.sqrt(0.5)
    out: np.ndarray = area * (1.0 - dist)
    return out


def select_track(
    dets: list[Detections], width: int, height: int, min_prob: float
) -> list[int | None]:
    """Per frame, the index of the clip's face among its detections, or None (no usable face)."""
    best: tuple[float, np.ndarray] | None = None
    for d in dets:
        ok = d.probs >= min_prob
        if ok.any():
            score = _prominence(d.boxes[ok], width, height)
            k = int(np.argmax(score))
            if best is None or score[k] > best[0]:
                best = (float(score[k]), d.boxes[ok][k])
    if best is None:
        return [None] * len(dets)
    anchor = best[1]
    out: list[int | None] = []
    for d in dets:
        confident = np.flatnonzero(d.probs >= min_prob)
        if len(confident) == 0:
            out.append(None)
            continue
        overlap = iou(d.boxes[confident], anchor)
        out.append(int(confident[int(np.argmax(overlap))]))
    return out


#: A clip is flagged when another face wins a frame's prominence, or when its best prominence is
#: at least this share of the track's (two people in shot: the audio may mix both voices).
RIVAL_SHARE = 0.5


def rival_faces(
    dets: list[Detections], track: list[int | None], width: int, height: int, min_prob: float
) -> tuple[int, float]:
    """How strongly another face competes with the selected track: (frames in which another
    confident face, overlapping the track's face by IoU < 0.3, is the most prominent; the best
    prominence of such a face over the track face's best, 0 when there is none)."""
    won, rival, own = 0, 0.0, 0.0
    for d, k in zip(dets, track, strict=True):
        if k is None:
            continue
        confident = np.flatnonzero(d.probs >= min_prob)
        score = _prominence(d.boxes[confident], width, height)
        apart = iou(d.boxes[confident], d.boxes[k]) < 0.3
        own = max(own, float(score[confident == k].max()))
        if apart.any():
            rival = max(rival, float(score[apart].max()))
            won += int(apart[int(np.argmax(score))])
    return won, (rival / own if own > 0 else 0.0)


def crop_face(frame: np.ndarray, box: np.ndarray, margin: float, size: int) -> np.ndarray:
    """Square crop around ``box`` enlarged by ``margin`` (fraction of its side), resized to
    ``size`` px; areas outside the frame are black. Returns (size, size, 3) uint8."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1 + margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = max(1, int(round(side)))
    img = Image.fromarray(frame).crop((left, top, left + s, top + s))  # PIL pads outside with black
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR))


# ---------------------------------------------------------------- the faces stage's shards


@dataclass(frozen=True)
class FaceConfig:
    rate_fps: float
    detector: DetectorConfig
    min_prob: float
    margin: float
    crop_size_px: int
    jpeg_quality: int


_detectors: dict[DetectorConfig, FaceDetector] = {}


def detector(cfg: DetectorConfig) -> FaceDetector:
    """One MTCNN per worker process and configuration (loading takes ~0.1 s)."""
    if cfg not in _detectors:
        _detectors[cfg] = FaceDetector(cfg)
    return _detectors[cfg]


def face_shard(
    clips: list[ClipRef], root: Path, cfg: FaceConfig, out: Path, timeout_s: float
) -> ShardResult:
    """Detect, track and crop the face of every clip; write ``out`` (schema.FACE_FRAMES).

    ``frame_index`` is the crop's frame number for VoxCeleb1 crops and the sample time in ms for
    decoded videos. Frames without a confident face are dropped and counted; a clip without any
    becomes a failure row. Each clip is detected on its own, so its rows are the same whatever
    clips share its shard.

    Torch runs one thread here whatever ``VOXFACE_THREADS`` says: MTCNN's boxes depend on its
    thread count in the last bits (3e-5 px on some frames), parallelism comes from the workers.
    Set on every call, in the calling thread: the count is each thread's own (OpenMP's), and a
    task runner's thread may come with another one than the thread that loaded MTCNN.
    """
    import torch

    torch.set_num_threads(1)
    res = ShardResult()
    items: list[tuple[ClipRef, Path, tuple[Any, ...]]] = []
    for clip in clips:
        res.counts["clips_in"] += 1
        if clip.media_kind == "audio":
            res.counts["clips_audio_only"] += 1
            continue
        crops = clip.media_kind == "audio_crops"
        path = root / (clip.face_dir if crops and clip.face_dir else clip.media_path)
        items.append((clip, path, (clip.media_kind, str(path), cfg.rate_fps)))
    det = detector(cfg.detector)
    rows: list[dict[str, Any]] = []
    # One clip per MTCNN call (the next clip decodes meanwhile): a clip's detections are its own,
    # whatever clips share its shard (MTCNN's last bits depend on the batch).
    for clip, (times, idx, frames) in decode_each(res, items, timeout_s, read_face_frames):
        dets = det.detect(frames)
        h, w = frames.shape[1:3]
        track = select_track(dets, w, h, cfg.min_prob)
        res.counts["frames_sampled"] += len(frames)
        kept = 0
        for fi, k in enumerate(track):
            n = len(dets[fi].probs)
            if n == 0:
                res.counts["frames_no_face"] += 1
            if n > 1:
                res.counts["frames_multi_face"] += 1
            if k is None:
                if n:
                    res.counts["frames_low_confidence"] += 1
                continue
            d = dets[fi]
            crop = crop_face(frames[fi], d.boxes[k], cfg.margin, cfg.crop_size_px)
            rows.append(
                {
                    "clip_key": clip.clip_key,
                    "frame_index": int(idx[fi]),
                    "time_s": float(times[fi]),
                    "box_px": d.boxes[k].astype(np.float32),
                    "landmarks_px": d.landmarks[k].reshape(-1).astype(np.float32),
                    "prob": float(d.probs[k]),
                    "n_faces": n,
                    "crop_size_px": cfg.crop_size_px,
                    "crop_jpeg": encode_jpeg(crop, cfg.jpeg_quality),
                }
            )
            kept += 1
        res.counts["frames_with_face"] += kept
        if kept:
            res.counts["clips_out"] += 1
            won, share = rival_faces(dets, track, w, h, cfg.min_prob)
            if won or share >= RIVAL_SHARE:
                res.counts["clips_competing_faces"] += 1
                res.flagged.append(
                    (
                        clip.clip_key,
                        f"a second face competes for the track (wins {won} of {len(frames)} "
                        f"frames; prominence {share:.2f} x the kept face's)",
                    )
                )
        else:
            res.fail(
                clip,
                "no_face",
                f"no face with prob >= {cfg.min_prob} in {len(frames)} sampled frames (faces "
                f"under {cfg.detector.min_face_for(h, w)} px are not searched for: "
                "face.min_face_size_px, face.min_face_fraction)",
            )
    write_table(pd.DataFrame(rows, columns=FACE_FRAMES.schema.names), out, FACE_FRAMES)
    return res
