"""Thin adapters around decord: sampled video frames and 16 kHz mono audio from a media file.

decord bundles its own FFmpeg. It raises ``DECORDError`` for a file without an audio track and
``RuntimeError`` for a missing file; both become :class:`MediaError` naming the file. Callers that
process untrusted files should run these in worker processes with a timeout (decord has been
reported to hang in native code on damaged files).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from pipeline.cpu_pin import pin_ffmpeg

VOX1_FPS = 25.0  # VoxCeleb1 face-crop file names are frame numbers at 25 fps


class MediaError(RuntimeError):
    """A media file could not be decoded; the message names the file and the reason."""


def _existing_file(path: Path | str) -> Path:
    """``path`` as a Path, or a MediaError when it is missing or empty."""
    p = Path(path)
    if not p.is_file():
        raise MediaError(f"{p}: file not found")
    if p.stat().st_size == 0:
        raise MediaError(f"{p}: empty file")
    return p


def _reason(err: Exception, stream: str) -> str:
    """A one-line reason from decord's multi-line C++ error text."""
    text = str(err)
    lowered = text.lower()
    if f"find {stream} stream" in lowered or "stream with wanted index: -1" in lowered:
        return f"no {stream} stream in the file"
    if "Invalid data found" in text or "Error reading" in text:
        return "invalid or corrupt data"
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("[")
    ]
    return f"{type(err).__name__}: {(lines[-1] if lines else text)[:200]}"


def sample_times(duration_s: float, rate_hz: float) -> np.ndarray:
    """Sampling instants (s) at ``rate_hz``, centred in each period: (k + 0.5) / rate."""
    n = max(1, int(np.floor(duration_s * rate_hz)))
    return (np.arange(n) + 0.5) / rate_hz


def read_frames(path: Path | str, rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Frames sampled at ``rate_hz``: (times_s (K,), frames (K, H, W, 3) uint8 RGB)."""
    import decord

    pin_ffmpeg("decord")
    p = _existing_file(path)
    try:
        vr = decord.VideoReader(str(p), ctx=decord.cpu(0), num_threads=1)
        fps = float(vr.get_avg_fps())
        n = len(vr)
        if n == 0 or fps <= 0:
            raise MediaError(f"{p}: no video frames")
        times = sample_times(n / fps, rate_hz)
        idx = np.clip(np.round(times * fps - 0.5).astype(int), 0, n - 1)
        frames = vr.get_batch(list(idx)).asnumpy()
    except MediaError:
        raise
    except Exception as e:  # decord raises DECORDError / RuntimeError with C++ messages
        raise MediaError(f"{p}: cannot decode video: {_reason(e, 'video')}") from e
    return times, frames


def read_audio(path: Path | str, sample_rate_hz: int = 16000) -> np.ndarray:
    """The audio track as float32 mono samples in [-1, 1] at ``sample_rate_hz``, shape (N,)."""
    import decord

    pin_ffmpeg("decord")
    p = _existing_file(path)
    try:
        ar = decord.AudioReader(str(p), ctx=decord.cpu(0), sample_rate=sample_rate_hz, mono=True)
        # The reader holds the decoded samples as a numpy array (channels, samples) already;
        # ``ar[:]`` would copy it through a Python list of every sample index (half of the voice
        # stage's decoding CPU on 3 s clips). The same values either way.
        held = getattr(ar, "_array", None)
        samples = held if isinstance(held, np.ndarray) else ar[:].asnumpy()
    except Exception as e:
        raise MediaError(f"{p}: cannot decode audio: {_reason(e, 'audio')}") from e
    return np.ascontiguousarray(samples.reshape(-1), dtype=np.float32)


def read_crop_folder(folder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The face images of one clip: (times_s, frame numbers, frames).

    VoxCeleb1's 1 fps crops are named by frame number (``0000375.jpg``; times from its 25 fps);
    images of other names (a generic layout's ``face_path`` folder: jpg / jpeg / png) are taken
    in name order, numbered 0, 1, ... at one per second. Images of different sizes are resized to
    the first one's size (the detector batches frames of one size).
    """
    from PIL import Image

    files = sorted(
        f for f in glob.glob(os.path.join(folder, "*"))
        if os.path.splitext(f)[1].lower() in (".jpg", ".jpeg", ".png")
    )  # fmt: skip
    if not files:
        raise MediaError(f"{folder}: no face images (*.jpg, *.jpeg, *.png)")
    numbered = all(Path(f).stem.isdigit() for f in files)
    if numbered:  # 9.jpg before 10.jpg
        files.sort(key=lambda f: (int(Path(f).stem), f))
    stems = [Path(f).stem for f in files]
    idx = np.array([int(s) for s in stems] if numbered else range(len(files)), dtype=np.int64)
    try:
        images = [Image.open(f).convert("RGB") for f in files]
    except OSError as e:
        raise MediaError(f"{folder}: cannot read a face image: {e}") from e
    size = images[0].size
    frames = np.stack([np.asarray(im if im.size == size else im.resize(size)) for im in images])
    return (idx / VOX1_FPS if numbered else idx.astype(np.float64)), idx, frames


def read_video_samples(path: str, rate_fps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames sampled at ``rate_fps``: (times_s, sample time in ms as index, frames)."""
    times, frames = read_frames(path, rate_fps)
    return times, np.round(times * 1000).astype(np.int64), frames


def read_face_frames(
    kind: str, path: str, rate_fps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames to detect faces in, for a manifest row of ``media_kind`` ``kind``: VoxCeleb1's
    crop folder (``audio_crops``) or frames sampled from a video."""
    if kind == "audio_crops":
        return read_crop_folder(path)
    return read_video_samples(path, rate_fps)
