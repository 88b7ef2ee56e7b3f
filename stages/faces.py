"""DVC stage ``faces``: the face track of every clip, as Parquet shards of JPEG crops.

Samples frames at ``face.rate_fps`` with decord (in an isolated child process per shard task, so
a hang in native decoding cannot freeze the stage), runs MTCNN in batches, keeps the clip's face
(large, central, stable), and stores per frame its time, box, landmarks, probability and crop.
"""

from __future__ import annotations

# isort: off
import stages._pinned  # noqa: F401  (first: pins numpy's and torch's kernels before they load)

# isort: on
import time
from typing import Any

from prefect import flow

from pipeline.params import FaceStageParams
from pipeline.preprocess.detector import DetectorConfig
from pipeline.preprocess.face_tracks import FaceConfig, detector, face_shard
from pipeline.schema import FACE_FRAMES
from stages._runtime import run_main
from stages._shards import failure_summary, fan_out, run_stage


def face_config(p: FaceStageParams) -> FaceConfig:
    return FaceConfig(
        rate_fps=p.rate_fps,
        detector=DetectorConfig.of(p),
        min_prob=p.min_prob,
        margin=p.margin,
        crop_size_px=p.crop_size_px,
        jpeg_quality=p.jpeg_quality,
    )


@flow(name="faces")
def faces_flow(manifest: str, root: str, params: FaceStageParams, out: str) -> dict[str, Any]:
    """Process every clip of the manifest into ``out``; returns the stage report."""
    t0 = time.perf_counter()
    counts, failures, flagged, work = fan_out(
        "faces",
        face_shard,
        manifest,
        params.shard_clips,
        root,
        face_config(params),
        out,
        FACE_FRAMES,
    )
    wall = time.perf_counter() - t0
    sampled = counts["frames_sampled"]
    video_clips = counts["clips_in"] - counts["clips_audio_only"]
    report = {
        "clips_in": counts["clips_in"],
        "clips_audio_only": counts["clips_audio_only"],
        "clips_out": counts["clips_out"],
        "frames_sampled": sampled,
        "frames_with_face": counts["frames_with_face"],
        "frames_no_face": counts["frames_no_face"],
        "frames_low_confidence": counts["frames_low_confidence"],
        "frames_multi_face": counts["frames_multi_face"],
        "face_rate": round(counts["frames_with_face"] / max(sampled, 1), 4),
        **failure_summary(failures, video_clips),
        "clips_competing_faces": counts["clips_competing_faces"],
        "flagged": [{"clip_key": k, "why": why} for k, why in sorted(flagged)],
        "warnings": competing_warning(flagged, counts["clips_out"]),
        "wall_s": round(wall, 1),
        "clips_per_s": round(work["clips_processed"] / max(wall, 1e-9), 1),
        **work,
    }
    print(
        f"faces: {report['clips_out']}/{video_clips} clips, faces in {report['frames_with_face']}"
        f"/{sampled} sampled frames, {report['failures']} failures, "
        f"{report['clips_competing_faces']} with competing faces ({wall:.1f} s, "
        f"{report['clips_per_s']} clips/s; {work['shards_written']} shards written, "
        f"{work['shards_reused']} reused)"
    )
    for w in report["warnings"]:
        print(f"warning: {w}")
    return report


def competing_warning(flagged: list[tuple[str, str]], clips_out: int) -> list[str]:
    """The report's warning for clips whose face track has a rival face (first few named)."""
    if not flagged:
        return []
    keys = ", ".join(k for k, _ in sorted(flagged)[:3]) + (", ..." if len(flagged) > 3 else "")
    return [
        f"{len(flagged)} of {clips_out} clips have a second face competing for the face track "
        f"(their audio may mix two voices): {keys}; see reports/faces.json 'flagged'"
    ]


def warm(p: FaceStageParams) -> None:
    """Import torch and load MTCNN (the tasks' shared detector) before the flow starts."""
    detector(face_config(p).detector)


def main(argv: list[str] | None = None) -> None:
    run_stage(__doc__ or "", "faces", "face", faces_flow, argv, warm)


if __name__ == "__main__":
    run_main(main)
