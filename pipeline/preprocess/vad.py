"""Voice activity detection: webrtcvad with an energy gate and padded hysteresis.

webrtcvad alone flags faint noise after digital silence as speech, so a frame counts as speech
only when webrtcvad says so *and* its level is within ``energy_gate_db`` of the clip's loudest
frames. A ring buffer of ``padding_ms`` smooths decisions: a segment starts when most of the
window is speech and ends when most of it is not (the py-webrtcvad example's scheme).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import webrtcvad

from pipeline.preprocess.media import read_audio


@dataclass(frozen=True)
class VadConfig:
    aggressiveness: int  # 0..3
    frame_ms: int  # 10, 20 or 30
    padding_ms: int  # hysteresis window; 0 = raw per-frame decisions
    energy_gate_db: float  # frames quieter than (loudest frames - gate) are never speech
    on_percent: int = 90  # hysteresis: a window more than this % flagged starts speech ...
    off_percent: int = 10  # ... and one less than this % flagged ends it
    reference_percentile: float = 95.0  # "the loudest frames": this percentile of frame levels

    def __post_init__(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0-3, got {self.aggressiveness}")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError(f"frame_ms must be 10, 20 or 30, got {self.frame_ms}")
        if self.padding_ms < 0 or self.padding_ms % self.frame_ms:
            raise ValueError("padding_ms must be a non-negative multiple of frame_ms")
        if not 0 <= self.off_percent < self.on_percent <= 100:
            raise ValueError(
                f"need 0 <= off_percent < on_percent <= 100, got {self.off_percent}, "
                f"{self.on_percent}"
            )
        if not 0 <= self.reference_percentile <= 100:
            raise ValueError(
                f"reference_percentile must be in [0, 100]: {self.reference_percentile}"
            )


def frame_decisions(audio: np.ndarray, sample_rate_hz: int, cfg: VadConfig) -> np.ndarray:
    """Per-frame speech flags (bool, (F,)) for float audio in [-1, 1]."""
    if sample_rate_hz not in (8000, 16000, 32000, 48000):
        raise ValueError(f"webrtcvad needs 8/16/32/48 kHz, got {sample_rate_hz}")
    n = sample_rate_hz * cfg.frame_ms // 1000
    count = len(audio) // n
    if count == 0:
        return np.zeros(0, dtype=bool)
    frames = audio[: count * n].reshape(count, n)
    pcm = (np.clip(frames, -1, 1) * 32767).astype("<i2")
    vad = webrtcvad.Vad(cfg.aggressiveness)
    raw = np.array([vad.is_speech(f.tobytes(), sample_rate_hz) for f in pcm], dtype=bool)
    level_db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    ref = np.percentile(level_db, cfg.reference_percentile)
    raw &= level_db > ref - cfg.energy_gate_db
    if cfg.padding_ms == 0:
        return raw
    return hysteresis(raw, cfg.padding_ms // cfg.frame_ms, cfg.on_percent, cfg.off_percent)


def hysteresis(raw: np.ndarray, w: int, on_percent: int = 90, off_percent: int = 10) -> np.ndarray:
    """Padded hysteresis over per-frame flags (bool, (F,)) with a trailing window of ``w`` frames.

    Frame ``i``'s window is the ``L = min(i + 1, w)`` frames ending at ``i``, ``c`` of them
    flagged. Untriggered, a window more than ``on_percent`` (90) % flagged (``100 c > 90 L``)
    triggers: the whole window becomes speech. Triggered, a window less than ``off_percent``
    (10) % flagged (``100 c < 10 L``) ends it; every frame in between is speech. Integer counts,
    so no rounding: with the defaults these are exactly the py-webrtcvad example's
    ``mean > 0.9`` / ``mean < 0.1`` tests on a ring buffer.

    Vectorised: a frame is triggered when the latest on- or off-candidate at or before it is an
    on-candidate (the two kinds never coincide), and each run of triggered frames back-fills
    the window of the frame that started it.
    """
    if w < 1:
        raise ValueError(f"hysteresis window must be at least 1 frame, got {w}")
    flags = np.asarray(raw, dtype=bool)
    count = len(flags)
    if count == 0:
        return np.zeros(0, dtype=bool)
    idx = np.arange(count)
    csum = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    start = np.maximum(idx - w + 1, 0)
    c = csum[idx + 1] - csum[start]
    length = idx + 1 - start
    if not 0 <= off_percent < on_percent <= 100:
        raise ValueError(f"need 0 <= off_percent < on_percent <= 100: {off_percent}, {on_percent}")
    on = 100 * c > on_percent * length
    off = 100 * c < off_percent * length
    # Index of the latest candidate (either kind) at or before each frame; -1 if none yet.
    latest = np.maximum.accumulate(np.where(on | off, idx, -1))
    triggered = (latest >= 0) & on[np.maximum(latest, 0)]
    # A frame starts a triggered run when the frame before it was not triggered.
    rises = np.flatnonzero(triggered & ~np.concatenate([[False], triggered[:-1]]))
    # Back-fill each rise's window [start, rise] with a difference array.
    n = count + 1
    edges = np.bincount(start[rises], minlength=n) - np.bincount(rises + 1, minlength=n)
    out: np.ndarray = triggered | (np.cumsum(edges[:count]) > 0)
    return out


def speech_segments(flags: np.ndarray, frame_ms: int) -> list[tuple[float, float]]:
    """Runs of True in per-frame flags as (start_s, end_s) pairs."""
    m = np.concatenate([[False], flags, [False]]).astype(np.int8)
    d = np.diff(m)
    starts = np.flatnonzero(d == 1) * frame_ms / 1000
    ends = np.flatnonzero(d == -1) * frame_ms / 1000
    return [(float(a), float(b)) for a, b in zip(starts, ends, strict=True)]


def read_speech(
    path: str, sample_rate_hz: int, cfg: VadConfig
) -> tuple[int, list[tuple[float, float]], np.ndarray]:
    """Decode a clip's audio and keep its speech: ``(samples decoded, speech segments, the
    segments' samples concatenated)``.

    The ``voice`` stage runs this in its decoder child
    (:func:`pipeline.preprocess.shards.decode_each`), so webrtcvad's per-frame calls hold that
    process's interpreter lock, not the stage's, where the shard threads share one; only the
    speech travels back. This module imports neither torch nor pandas: the child stays quick to
    start.
    """
    audio = read_audio(path, sample_rate_hz)
    segs = speech_segments(frame_decisions(audio, sample_rate_hz, cfg), cfg.frame_ms)
    speech = np.concatenate(
        [audio[int(a * sample_rate_hz) : int(b * sample_rate_hz)] for a, b in segs]
        or [np.zeros(0, np.float32)]
    )
    return len(audio), segs, speech
