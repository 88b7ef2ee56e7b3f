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


@dataclass(frozen=True)
class VadConfig:
    aggressiveness: int  # 0..3
    frame_ms: int  # 10, 20 or 30
    padding_ms: int  # hysteresis window; 0 = raw per-frame decisions
    energy_gate_db: float  # frames quieter than (loudest frames - gate) are never speech

    def __post_init__(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0-3, got {self.aggressiveness}")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError(f"frame_ms must be 10, 20 or 30, got {self.frame_ms}")
        if self.padding_ms < 0 or self.padding_ms % self.frame_ms:
            raise ValueError("padding_ms must be a non-negative multiple of frame_ms")


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
    ref = np.percentile(level_db, 95)
    raw &= level_db > ref - cfg.energy_gate_db
    if cfg.padding_ms == 0:
        return raw
    w = cfg.padding_ms // cfg.frame_ms
    out = np.zeros(count, dtype=bool)
    triggered = False
    for i in range(count):
        window = raw[max(0, i - w + 1) : i + 1]
        frac = window.mean()
        if not triggered and frac > 0.9:
            triggered = True
            out[max(0, i - w + 1) : i + 1] = True
        elif triggered and frac < 0.1:
            triggered = False
        out[i] = out[i] or triggered
    return out


def speech_segments(flags: np.ndarray, frame_ms: int) -> list[tuple[float, float]]:
    """Runs of True in per-frame flags as (start_s, end_s) pairs."""
    m = np.concatenate([[False], flags, [False]]).astype(np.int8)
    d = np.diff(m)
    starts = np.flatnonzero(d == 1) * frame_ms / 1000
    ends = np.flatnonzero(d == -1) * frame_ms / 1000
    return [(float(a), float(b)) for a, b in zip(starts, ends, strict=True)]
