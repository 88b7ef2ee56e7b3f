"""Face track selection, crops, and the faces stage's shard function."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.preprocess import face_tracks as facetrack
from pipeline.preprocess.detector import Detections, DetectorConfig
from pipeline.preprocess.face_tracks import (
    RIVAL_SHARE,
    FaceConfig,
    crop_face,
    face_shard,
    iou,
    rival_faces,
    select_track,
)
from pipeline.preprocess.jpeg import decode_jpeg, encode_jpeg
from pipeline.preprocess.media import read_face_frames
from pipeline.preprocess.shards import ClipRef
from pipeline.schema import FACE_FRAMES, read_table
from stages.faces import competing_warning
from tests.test_media import _video_only

CFG = FaceConfig(1.0, DetectorConfig(40, (0.6, 0.7, 0.7), 0.709, 32), 0.8, 0.2, 112, 90)


def _det(*boxes: tuple[float, float, float, float, float]) -> Detections:
    arr = np.array([b[:4] for b in boxes], dtype=float).reshape(-1, 4)
    return Detections(arr, np.array([b[4] for b in boxes]), np.zeros((len(boxes), 5, 2)))


def test_iou_hand_cases() -> None:
    a = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=float)
    np.testing.assert_allclose(iou(a, np.array([0, 0, 10, 10.0])), [1.0, 50 / 150, 0.0])


def test_track_keeps_the_large_central_face_and_follows_it() -> None:
    big = (60, 60, 160, 180, 0.99)
    corner = (0, 0, 40, 50, 0.999)
    dets = [
        _det(corner, big),
        _det((64, 62, 166, 184, 0.95), corner),  # order changes; the track must not
        _det(corner),  # only the bystander: still the best overlap there
        _det(),
        _det((62, 60, 160, 180, 0.5)),  # too unsure
    ]
    assert select_track(dets, 224, 224, min_prob=0.8) == [1, 0, 0, None, None]
    assert select_track([_det(), _det()], 224, 224, 0.8) == [None, None]


def test_crop_is_square_padded_and_sized() -> None:
    frame = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_face(frame, np.array([80, 80, 120, 120.0]), margin=0.0, size=32)
    assert crop.shape == (32, 32, 3)
    assert crop[:8, :8].mean() > 150 and crop[-8:, -8:].mean() < 5  # outside the frame: black
    jpg = encode_jpeg(crop, 90)
    assert jpg[:2] == b"\xff\xd8" and np.abs(decode_jpeg(jpg).astype(int) - crop).mean() < 4


def _refs(root: Path, clips: pd.DataFrame) -> list[ClipRef]:
    return [
        ClipRef(p.removeprefix("mp4/").removesuffix(".mp4"), p, "video", None) for p in clips.path
    ]


def test_face_shard_on_generated_clips_with_bad_files(
    small_corpus: tuple[Path, pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    root, clips, _ = small_corpus
    bad = tmp_path / "root"
    bad.mkdir()
    (bad / "zero.mp4").write_bytes(b"")
    (bad / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    _video_only(bad / "noface.mp4")  # flat grey frames: no face
    refs = _refs(root, clips)
    # Absolute media paths: root / path resolves to them.
    extra = [
        ClipRef(f"zz/{n}", str(bad / f"{n}.mp4"), "video", None)
        for n in ("zero", "corrupt", "noface")
    ]
    extra.append(ClipRef("zz/audio", "whatever.m4a", "audio", None))
    out = tmp_path / "faces-00000.parquet"
    res = face_shard(refs + extra, root, CFG, out, timeout_s=30)
    frames = read_table(out, FACE_FRAMES)
    assert set(frames.clip_key) == {r.clip_key for r in refs}
    assert res.counts["clips_out"] == len(refs) and res.counts["clips_audio_only"] == 1
    reasons = {f["clip_key"]: f["reason"] for f in res.failures}
    assert reasons == {"zz/zero": "decode", "zz/corrupt": "decode", "zz/noface": "no_face"}
    messages = {f["clip_key"]: f["message"] for f in res.failures}
    assert messages["zz/zero"] == f"{bad / 'zero.mp4'}: empty file"
    assert messages["zz/corrupt"].startswith(f"{bad / 'corrupt.mp4'}: cannot decode video")
    assert res.counts["frames_with_face"] / res.counts["frames_sampled"] >= 0.9
    crop = decode_jpeg(frames.crop_jpeg.iloc[0])
    assert crop.shape == (112, 112, 3)
    assert list(frames.clip_key) == sorted(frames.clip_key)


def test_a_clip_gets_the_same_rows_alone_as_in_a_full_shard(
    small_corpus: tuple[Path, pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    """Detections do not depend on the batch: boxes, landmarks, kept frames and crops of a clip
    processed alone equal, exactly, those it gets in a shard with every other clip."""
    root, clips, _ = small_corpus
    refs = _refs(root, clips)
    face_shard(refs, root, CFG, tmp_path / "all.parquet", timeout_s=30)
    together = read_table(tmp_path / "all.parquet", FACE_FRAMES)
    for ref in (refs[0], refs[len(refs) // 2], refs[-1]):
        face_shard([ref], root, CFG, tmp_path / "one.parquet", timeout_s=30)
        alone = read_table(tmp_path / "one.parquet", FACE_FRAMES)
        mine = together[together.clip_key == ref.clip_key].reset_index(drop=True)
        assert len(alone) > 0
        pd.testing.assert_frame_equal(alone, mine, check_exact=True)


def _same_as_facenet(videos: list[Path], fraction: float) -> int:
    """Frames sampled from ``videos``: FaceDetector's detections equal, to the bit, those of
    facenet-pytorch's own ``detect_face`` with its unmodified nets; returns the faces found."""
    import torch
    from facenet_pytorch import MTCNN
    from facenet_pytorch.models.utils.detect_face import detect_face

    from pipeline.preprocess.detector import FaceDetector

    cfg = DetectorConfig(40, (0.6, 0.7, 0.7), 0.709, 32, min_face_fraction=fraction)
    ours = FaceDetector(cfg)
    plain = MTCNN(thresholds=[0.6, 0.7, 0.7], factor=0.709, keep_all=True, post_process=False)
    torch.set_num_threads(1)
    found = 0
    for video in videos:
        _, _, frames = read_face_frames("video", str(video), 1.0)
        with torch.inference_mode():
            boxes, points = detect_face(
                torch.from_numpy(frames), cfg.min_face_for(*frames.shape[1:3]), plain.pnet,
                plain.rnet, plain.onet, plain.thresholds, plain.factor, "cpu",
            )  # fmt: skip
        for det, b, lm in zip(ours.detect(frames), boxes, points, strict=True):
            b = np.asarray(b, dtype=np.float64).reshape(-1, 5)
            assert np.array_equal(det.boxes, b[:, :4]) and np.array_equal(det.probs, b[:, 4])
            assert np.array_equal(det.landmarks, np.asarray(lm, dtype=np.float64).reshape(-1, 5, 2))
            found += len(b)
    return found


def test_the_detector_finds_facenet_pytorchs_faces_to_the_bit(
    small_corpus: tuple[Path, pd.DataFrame, pd.DataFrame],
) -> None:
    """The cascade of pipeline.preprocess.mtcnn (its own driver, faster pooling and crops)
    changes no box, probability or landmark of facenet-pytorch's detect_face."""
    root, clips, _ = small_corpus
    videos = [root / p for p in sorted(clips.path)[:6]]
    assert _same_as_facenet(videos, 0.0) > 0 and _same_as_facenet(videos, 0.4) > 0


@pytest.mark.realdata
def test_the_detector_finds_facenet_pytorchs_faces_to_the_bit_on_real_footage(
    realdata: Path,
) -> None:
    rows = pd.read_csv(realdata / "manifest.csv")
    videos = [realdata / f for f in rows[rows.has_video].groupby("identity").file.first()]
    assert _same_as_facenet(videos, 0.4) >= len(videos)


def test_a_clip_gets_the_same_rows_whatever_threads_the_calling_thread_runs(
    small_corpus: tuple[Path, pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    """Torch's thread count belongs to each thread (OpenMP's setting): a task runner's thread
    can come with another count than the one that loaded MTCNN. A shard runs MTCNN on one
    thread whatever the calling thread had, so its rows are the same bytes."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    root, clips, _ = small_corpus
    refs = _refs(root, clips)

    def shard_in_a_thread_with(threads: int) -> pd.DataFrame:
        def run() -> pd.DataFrame:
            torch.set_num_threads(threads)
            out = tmp_path / f"t{threads}.parquet"
            face_shard(refs, root, CFG, out, timeout_s=30)
            return read_table(out, FACE_FRAMES)

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(run).result()

    one = shard_in_a_thread_with(1)
    assert len(one) > 0
    pd.testing.assert_frame_equal(shard_in_a_thread_with(4), one, check_exact=True)


def test_min_face_fraction_scales_with_the_frame() -> None:
    cfg = DetectorConfig(40, (0.6, 0.7, 0.7), 0.709, 32, min_face_fraction=0.3)
    assert cfg.min_face_for(224, 224) == 67
    assert cfg.min_face_for(360, 480) == 108
    assert cfg.min_face_for(100, 100) == 40  # never below min_face_size_px
    assert CFG.detector.min_face_for(720, 1280) == 40  # off by default


def _slow_decode(kind: str, path: str, rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if path.endswith("hang.mp4"):
        time.sleep(60)
    return read_face_frames(kind, path, rate)


def test_a_hanging_decode_becomes_a_timeout_row(
    small_corpus: tuple[Path, pd.DataFrame, pd.DataFrame],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, clips, _ = small_corpus
    monkeypatch.setattr(facetrack, "read_face_frames", _slow_decode)
    refs = [*_refs(root, clips.iloc[:2]), ClipRef("zz/hang", "hang.mp4", "video", None)]
    # 10 s: a real clip's decode (~0.2 s; the child's start-up is not counted, see
    # tests/test_isolate.py) must fit even on a loaded machine. The hanging decode sleeps 60 s:
    # its "timeout" row shows that it was cut short.
    res = face_shard(refs, root, CFG, tmp_path / "f.parquet", timeout_s=10)
    assert [(f["clip_key"], f["reason"]) for f in res.failures] == [("zz/hang", "timeout")]
    assert res.counts["clips_out"] == 2


def test_face_shard_reads_voxceleb1_crops(
    small_corpus: tuple[Path, pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    from pipeline.preprocess.media import read_frames

    root, clips, _ = small_corpus
    _, frames = read_frames(root / clips.path.iloc[0], 2.0)
    folder = tmp_path / "unzippedFaces" / "Some_Name" / "1.6" / "abcdefghijk"
    folder.mkdir(parents=True)
    for k, f in zip((0, 25, 50), frames, strict=False):
        Image.fromarray(f).save(folder / f"{k:07d}.jpg")
    ref = ClipRef(
        "id10001/abcdefghijk/00001",
        "wav/id10001/abcdefghijk/00001.wav",
        "audio_crops",
        "unzippedFaces/Some_Name/1.6/abcdefghijk",
    )
    res = face_shard([ref], tmp_path, CFG, tmp_path / "f.parquet", timeout_s=30)
    got = read_table(tmp_path / "f.parquet", FACE_FRAMES)
    assert res.counts["clips_out"] == 1 and list(got.frame_index) == [0, 25, 50][: len(frames)]
    np.testing.assert_allclose(got.time_s, got.frame_index / 25.0)


def _rivalry(*frames: Detections) -> tuple[int, float]:
    dets = list(frames)
    return rival_faces(dets, select_track(dets, 224, 224, 0.8), 224, 224, 0.8)


CENTRE = (62, 62, 162, 162, 0.99)


def test_a_lone_face_has_no_rival() -> None:
    assert _rivalry(_det(CENTRE), _det(CENTRE), _det()) == (0, 0.0)
    # An unsure second face (below min_prob) is not a rival either.
    assert _rivalry(_det(CENTRE, (0, 60, 60, 160, 0.5))) == (0, 0.0)


def test_two_people_in_shot_are_a_rival() -> None:
    left, right = (10, 60, 100, 160, 0.99), (124, 60, 214, 160, 0.99)
    won, share = _rivalry(_det(left, right), _det(left, right))
    assert won == 0 and share == pytest.approx(1.0)  # equally prominent: the track keeps left
    # The centred face is the track (the most prominent overall); while it turns away (smaller)
    # the side face is the most prominent of frame 2: it wins that frame.
    small, side = (80, 80, 144, 144, 0.99), (0, 40, 100, 160, 0.99)
    won, share = _rivalry(_det(CENTRE, side), _det(small, side), _det(CENTRE))
    assert won == 1 and share == pytest.approx(0.14380617 / 0.19929847)
    assert share >= RIVAL_SHARE


def test_a_small_face_in_a_corner_is_not_a_rival() -> None:
    corner = (0, 0, 30, 30, 0.999)
    won, share = _rivalry(_det(CENTRE, corner), _det(corner, CENTRE))
    assert won == 0 and 0 < share < 0.05 < RIVAL_SHARE
    # Its own overlapping second detection (IoU >= 0.3) is the same face, not a rival.
    assert _rivalry(_det(CENTRE, (70, 70, 170, 170, 0.95))) == (0, 0.0)


def test_competing_face_warning_names_the_first_clips() -> None:
    assert competing_warning([], 10) == []
    flagged = [(f"id{i}/v/1", "why") for i in (4, 2, 3, 1)]
    assert competing_warning(flagged, 10) == [
        "4 of 10 clips have a second face competing for the face track (their audio may mix two "
        "voices): id1/v/1, id2/v/1, id3/v/1, ...; see reports/faces.json 'flagged'"
    ]
    assert "id1/v/1; see" in competing_warning(flagged[3:], 10)[0]
