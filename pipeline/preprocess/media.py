"""Thin adapters around decord: sampled video frames and 16 kHz mono audio from a media file.

decord bundles its own FFmpeg. It raises ``DECORDError`` for a file without an audio track and
``RuntimeError`` for a missing file; both become :class:`MediaError` naming the file. Callers that
process untrusted files should run these in worker processes with a timeout (decord has been
reported to hang in native code on damaged files).

MPEG program streams (``.mpg``, ``.vob``; MPEG-1/2 video, e.g. the GRID corpus) are the one
exception for video: their frames are decoded with PyAV (:func:`read_frames`). decord returns
the wrong frames from them: on GRID's clips, whose first group of pictures has repeated decoding
timestamps, decord's frame k is frame k + 12 of FFmpeg's own decoding (PyAV and the ffmpeg
command line agree), the first 0.48 s are never returned, and the last frame is repeated 12
times at the end; on a program stream PyAV writes, decord reads the frames right in order but
its random access (``get_batch``) returns frames 0, 1, 2 when asked for 12, 37, 62. Audio is
unaffected (decord's and PyAV's samples agree to within the resampler's delay).
"""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Iterator
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


#: The first bytes of an MPEG program stream (a pack header's start code).
MPEG_PS_START = b"\x00\x00\x01\xba"


def is_mpeg_program_stream(path: Path) -> bool:
    """Whether ``path`` holds an MPEG program stream (it starts with a pack header)."""
    with path.open("rb") as f:
        return f.read(len(MPEG_PS_START)) == MPEG_PS_START


def _frame_numbers(times: np.ndarray, fps: float) -> np.ndarray:
    """The frame whose period (at ``fps``) holds each instant of ``times``."""
    return np.round(times * fps - 0.5).astype(int)


def sample_indices(n_frames: int, fps: float, rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """The instants (:func:`sample_times`) and frame numbers sampled at ``rate_hz`` from
    ``n_frames`` frames at ``fps``: each instant's frame (the one whose period holds it)."""
    times = sample_times(n_frames / fps, rate_hz)
    return times, np.clip(_frame_numbers(times, fps), 0, n_frames - 1)


def read_frames(path: Path | str, rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Frames sampled at ``rate_hz``: (times_s (K,), frames (K, H, W, 3) uint8 RGB). MPEG program
    streams are decoded by PyAV (see the module doc), everything else by decord."""
    import decord

    p = _existing_file(path)
    if is_mpeg_program_stream(p):
        return _read_frames_pyav(p, rate_hz)
    pin_ffmpeg("decord")
    try:
        vr = decord.VideoReader(str(p), ctx=decord.cpu(0), num_threads=1)
        fps = float(vr.get_avg_fps())
        n = len(vr)
        if n == 0 or fps <= 0:
            raise MediaError(f"{p}: no video frames")
        times, idx = sample_indices(n, fps, rate_hz)
        frames = vr.get_batch(list(idx)).asnumpy()
    except MediaError:
        raise
    except Exception as e:  # decord raises DECORDError / RuntimeError with C++ messages
        raise MediaError(f"{p}: cannot decode video: {_reason(e, 'video')}") from e
    return times, frames


def _read_frames_pyav(p: Path, rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_frames` by PyAV: every frame decoded in order (one thread, FFmpeg's C code
    paths as decord's), the candidates for the sampled frame numbers kept as RGB (the numbers
    depend on the frame count only through the last instants, so the kept frames stay few)."""
    import av

    pin_ffmpeg("av")
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise MediaError(f"{p}: cannot decode video: no video stream in the file")
            stream = container.streams.video[0]
            stream.thread_count = 1
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            if fps <= 0:
                raise MediaError(f"{p}: no video frames")
            kept: dict[int, np.ndarray] = {}
            wanted = _candidate_frames(fps, rate_hz)
            nxt, n, last = next(wanted), 0, None
            for frame in container.decode(stream):
                if n == nxt:
                    kept[n] = frame.to_ndarray(format="rgb24")
                    while nxt <= n:
                        nxt = next(wanted)
                last, n = frame, n + 1
            if n == 0 or last is None:
                raise MediaError(f"{p}: no video frames")
            times, idx = sample_indices(n, fps, rate_hz)
            if n - 1 in idx and n - 1 not in kept:  # clipped to the last frame
                kept[n - 1] = last.to_ndarray(format="rgb24")
    except MediaError:
        raise
    except Exception as e:  # PyAV raises av.error.* (FFmpeg's messages) and ValueError
        raise MediaError(f"{p}: cannot decode video: {type(e).__name__}: {e}"[:400]) from e
    return times, np.stack([kept[int(i)] for i in idx])


def _candidate_frames(fps: float, rate_hz: float) -> Iterator[int]:
    """Frame numbers of the instants :func:`sample_indices` takes, in order, for any frame count:
    :func:`sample_times`' instants, 64 at a time, through the same :func:`_frame_numbers`."""
    for start in itertools.count(0, 64):
        times = (np.arange(start, start + 64) + 0.5) / rate_hz
        yield from _frame_numbers(times, fps).tolist()


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
