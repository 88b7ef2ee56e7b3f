"""Decoding, face detection and VAD adapters on generated and real clips."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.preprocess.detector import DetectorConfig, FaceDetector
from pipeline.preprocess.media import (
    MediaError,
    is_mpeg_program_stream,
    read_audio,
    read_crop_folder,
    read_frames,
    sample_indices,
    sample_times,
)
from pipeline.preprocess.vad import VadConfig, frame_decisions, speech_segments
from tests.helpers import write_silent_audio, write_video

DET = DetectorConfig(40, (0.6, 0.7, 0.7), 0.709, 32)
VAD = VadConfig(2, 30, 0, 35.0)


def test_sample_times_are_centred() -> None:
    np.testing.assert_allclose(sample_times(3.2, 1.0), [0.5, 1.5, 2.5])
    np.testing.assert_allclose(sample_times(0.4, 1.0), [0.5])  # always at least one


def _video_only(path: Path) -> Path:
    return write_video(path, [np.full((64, 64, 3), 20 * k, np.uint8) for k in range(10)])


def test_bad_files_raise_media_errors_naming_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    silent = _video_only(tmp_path / "silent.mp4")
    with pytest.raises(MediaError, match="empty.mp4: empty file"):
        read_frames(empty, 1.0)
    with pytest.raises(MediaError, match="absent.mp4: file not found"):
        read_audio(tmp_path / "absent.mp4")
    with pytest.raises(MediaError, match="corrupt.mp4: cannot decode video"):
        read_frames(corrupt, 1.0)
    with pytest.raises(MediaError, match="silent.mp4: cannot decode audio"):
        read_audio(silent)
    assert read_frames(silent, 5.0)[1].shape == (2, 64, 64, 3)


def test_vad_config_validation_and_segments() -> None:
    with pytest.raises(ValueError, match="frame_ms"):
        VadConfig(2, 25, 0, 35.0)
    with pytest.raises(ValueError, match="aggressiveness"):
        VadConfig(4, 30, 0, 35.0)
    assert speech_segments(np.array([0, 1, 1, 0, 1], bool), 30) == [(0.03, 0.09), (0.12, 0.15)]


def test_vad_energy_gate_rejects_faint_noise_after_digital_silence() -> None:
    rng = np.random.default_rng(0)
    sr = 16000
    t = np.arange(sr) / sr
    tone = 0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 4 * t)) / 2
    voiced = tone + 0.3 * np.sign(np.sin(2 * np.pi * 120 * t)) * 0.2
    audio = np.concatenate([np.zeros(sr // 2), 1e-4 * rng.standard_normal(sr), voiced]).astype(
        np.float32
    )
    gated = frame_decisions(audio, sr, VAD)
    n_noise = (sr // 2 + sr) // 480
    assert not gated[sr // 2 // 480 : n_noise].any()


def _mpeg_ps(path: Path, frames: int, video: bool = True) -> Path:
    """A small MPEG program stream (MPEG-1 video at 25 fps, each frame its own shade and a
    moving mark; or MP2 audio only)."""
    from pipeline.cpu_pin import pin_ffmpeg

    pin_ffmpeg("av")
    if not video:
        return write_silent_audio(path, "mp2", "mpeg", "s16")
    images = []
    for k in range(frames):
        img = np.zeros((48, 64, 3), np.uint8)
        img[..., 0], img[:8, k % 60 : k % 60 + 4] = 3 * k, 255
        images.append(img)
    return write_video(path, images, "mpeg1video", "mpeg")


def test_mpeg_program_streams_are_decoded_by_pyav_as_decord_would(tmp_path: Path) -> None:
    """An MPEG program stream is told by its first bytes and decoded by PyAV: the sampled frames
    are those decord returns when it reads the file frame by frame (its random access,
    ``get_batch``, returned frames 0, 1, 2 for 12, 37, 62 on this file), the same pixels."""
    import decord

    ps = _mpeg_ps(tmp_path / "clip.mpg", 75)
    assert is_mpeg_program_stream(ps)
    mp4 = tmp_path / "clip.mp4"
    mp4.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(16))  # an MP4's first box
    assert not is_mpeg_program_stream(mp4)
    for rate in (1.0, 3.0, 40.0):
        times, frames = read_frames(ps, rate)
        expected_times, idx = sample_indices(75, 25.0, rate)
        np.testing.assert_array_equal(times, expected_times)
        vr = decord.VideoReader(str(ps), ctx=decord.cpu(0), num_threads=1)
        in_order = np.stack([vr.next().asnumpy() for _ in range(len(vr))])
        assert len(in_order) == 75
        np.testing.assert_array_equal(frames, in_order[idx])
    with pytest.raises(MediaError, match=r"audio\.mpg: cannot decode video: no video stream"):
        read_frames(_mpeg_ps(tmp_path / "audio.mpg", 0, video=False), 1.0)


@pytest.mark.realdata
def test_grid_clips_are_sampled_at_ffmpegs_own_frames(realdata: Path) -> None:
    """GRID's MPEG-1 program streams: the sampled frames are the ffmpeg command line's frames at
    the sampled numbers (decord's were 12 frames late: 92-162 levels off)."""
    import subprocess

    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    clips = sorted(r["file"] for r in _real_rows(realdata) if r["file"].endswith(".mpg"))
    assert clips
    for name in clips[:2]:
        path = realdata / name
        times, frames = read_frames(path, 1.0)
        raw = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-cpuflags", "0", "-i",
             str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        every = np.frombuffer(raw, np.uint8).reshape(-1, *frames.shape[1:])
        expected_times, idx = sample_indices(len(every), 25.0, 1.0)
        np.testing.assert_array_equal(times, expected_times)
        np.testing.assert_array_equal(frames, every[idx])


def _real_rows(realdata: Path) -> list[dict[str, str]]:
    with open(realdata / "manifest.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.realdata
@pytest.mark.slow
def test_real_clips_decode_or_fail_clearly(realdata: Path) -> None:
    """MPEG-1, FLV/VP6, MP3, MPEG-4 and H.264 files: audio decodes; video decodes or says why."""
    for row in _real_rows(realdata):
        path = realdata / row["file"]
        audio = read_audio(path, 16000)
        assert abs(len(audio) / 16000 - float(row["duration_s"])) < 0.2, row["file"]
        if row["has_video"] == "True":
            _, frames = read_frames(path, 1.0)
            assert frames.ndim == 4 and frames.shape[-1] == 3
        else:
            with pytest.raises(MediaError, match="no video stream"):
                read_frames(path, 1.0)


@pytest.mark.realdata
@pytest.mark.slow
def test_real_voxceleb2_clips_have_faces_and_speech(realdata: Path) -> None:
    det = FaceDetector(DET)
    for row in _real_rows(realdata):
        if not row["file"].startswith("pcavs_voxceleb2"):
            continue
        path = realdata / row["file"]
        _, frames = read_frames(path, 1.0)
        n = [len(d.probs) for d in det.detect(frames)]
        assert np.mean([k >= 1 for k in n]) >= 0.95, (row["file"], n)
        flags = frame_decisions(read_audio(path), 16000, VAD)
        assert flags.mean() > 0.5 and speech_segments(flags, 30), row["file"]


def _image(path: Path, rgb: tuple[int, int, int], size: tuple[int, int]) -> None:
    Image.new("RGB", size, rgb).save(path)


def test_face_image_folder_of_any_names_and_sizes(tmp_path: Path) -> None:
    _image(tmp_path / "front.jpg", (200, 40, 40), (40, 30))
    _image(tmp_path / "left.png", (40, 200, 40), (80, 50))
    _image(tmp_path / "right.JPEG", (40, 40, 200), (20, 20))
    (tmp_path / "notes.txt").write_text("not an image")
    times, idx, frames = read_crop_folder(str(tmp_path))
    assert list(idx) == [0, 1, 2] and list(times) == [0.0, 1.0, 2.0]  # one per second
    assert frames.shape == (3, 30, 40, 3) and frames.dtype == np.uint8  # the first one's size
    dominant = [int(np.argmax(f.reshape(-1, 3).mean(axis=0))) for f in frames]
    assert dominant == [0, 1, 2]  # name order: front, left, right


def test_numbered_face_images_keep_their_frame_numbers(tmp_path: Path) -> None:
    _image(tmp_path / "0000375.jpg", (90, 90, 90), (32, 32))
    _image(tmp_path / "0000400.png", (90, 90, 90), (16, 16))
    times, idx, frames = read_crop_folder(str(tmp_path))
    assert list(idx) == [375, 400] and list(times) == [15.0, 16.0]  # VoxCeleb1's 25 fps
    assert frames.shape == (2, 32, 32, 3)
    _image(tmp_path / "extra.jpg", (90, 90, 90), (32, 32))  # one name is not a number: ordinals
    assert list(read_crop_folder(str(tmp_path))[1]) == [0, 1, 2]


def test_face_image_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(MediaError, match=r"no face images \(\*\.jpg, \*\.jpeg, \*\.png\)"):
        read_crop_folder(str(tmp_path))
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(MediaError, match=f"{tmp_path}: cannot read a face image"):
        read_crop_folder(str(tmp_path))


def test_numbered_crops_without_zero_padding_come_in_frame_order(tmp_path: Path) -> None:
    for n in (10, 9, 100):
        Image.new("RGB", (8, 8), (n, 0, 0)).save(tmp_path / f"{n}.jpg", quality=100)
    times, idx, frames = read_crop_folder(str(tmp_path))
    assert idx.tolist() == [9, 10, 100]  # as numbers, not as text ("10" < "100" < "9")
    assert np.allclose(times, np.array([9, 10, 100]) / 25)
    assert frames.shape == (3, 8, 8, 3)
