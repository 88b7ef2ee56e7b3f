"""Small builders used by several test modules."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import pandas as pd

from pipeline.synth.corpus import CorpusSpec, plan_corpus, render_jobs, render_video
from pipeline.synth.people import Calibration

CAL = Calibration(face_noise=0.75, voice_noise=0.8, gender_strength=1.0)


def small_spec(
    seed: int = 7, identities: int = 4, videos: int = 2, utts: int = 1, dur: float = 1.6
) -> CorpusSpec:
    return CorpusSpec(identities, videos, utts, dur, dur + 0.4, 224, 25, 16000, seed, CAL)


def render_corpus(
    root: Path, spec: CorpusSpec
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Render a whole (small) corpus serially; returns (identities, videos, clips, truth)."""
    identities, videos, clips = plan_corpus(spec)
    rows = []
    for job in render_jobs(root, spec, identities, videos, clips):
        rows += render_video(*job)
    return identities, videos, clips, pd.DataFrame(rows)


def write_video(
    path: Path, images: Sequence[np.ndarray], codec: str = "libx264", container: str = "mp4"
) -> Path:
    """A video file of ``images`` ((H, W, 3) uint8 RGB) at 25 fps, no audio."""
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=25)
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for k, img in enumerate(images):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = k
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_silent_audio(
    path: Path, codec: str = "aac", container: str = "mp4", sample_format: str = "fltp"
) -> Path:
    """An audio-only file of 2 s of digital silence, 16 kHz mono."""
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=16000, layout="mono")
        dtype = np.int16 if sample_format == "s16" else np.float32
        for i in range(0, 32000, 1024):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), dtype), format=sample_format, layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
