"""The vectorised VAD hysteresis against the per-frame loop it replaced (bit for bit)."""

from __future__ import annotations

import numpy as np
import pytest
import webrtcvad

from pipeline.preprocess.vad import VadConfig, frame_decisions, hysteresis


def loop_hysteresis(raw: np.ndarray, w: int) -> np.ndarray:
    """The reference: the per-frame loop ``frame_decisions`` ran until it was vectorised."""
    count = len(raw)
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


def loop_frame_decisions(audio: np.ndarray, sample_rate_hz: int, cfg: VadConfig) -> np.ndarray:
    """The reference ``frame_decisions``, hysteresis loop included, as it was."""
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
    return loop_hysteresis(raw, cfg.padding_ms // cfg.frame_ms)


def _runs(rng: np.random.Generator, count: int) -> np.ndarray:
    """Flags in runs of random lengths (speech-like), with random flips inside the runs."""
    out = np.zeros(count, dtype=bool)
    i, state = 0, bool(rng.integers(2))
    while i < count:
        k = int(rng.integers(1, 40))
        out[i : i + k] = state
        i, state = i + k, not state
    flip = rng.random(count) < rng.choice([0.0, 0.02, 0.1, 0.3])
    return out ^ flip


@pytest.mark.parametrize("w", [1, 2, 3, 5, 9, 10, 11, 19, 20, 21, 30, 64])
def test_hysteresis_equals_the_loop_on_random_flags(w: int) -> None:
    rng = np.random.default_rng(w)
    for trial in range(300):
        count = int(rng.choice([rng.integers(0, 2 * w + 3), rng.integers(0, 600)]))
        # i.i.d. flags of any density, or speech-like runs
        raw = rng.random(count) < rng.random() if trial % 3 == 0 else _runs(rng, count)
        got = hysteresis(raw, w)
        assert got.dtype == bool and got.shape == (count,)
        np.testing.assert_array_equal(got, loop_hysteresis(raw, w), err_msg=f"w={w} {raw!r}")


@pytest.mark.parametrize("w", [1, 2, 7, 10, 20])
@pytest.mark.parametrize("count", [0, 1, 2, 5, 9, 10, 11, 19, 20, 21, 100])
def test_hysteresis_equals_the_loop_on_edge_cases(w: int, count: int) -> None:
    cases = [
        np.ones(count, bool),
        np.zeros(count, bool),
        np.arange(count) % 2 == 0,
        np.arange(count) >= count // 2,
        np.arange(count) < count // 2,
        np.arange(count) % 10 != 3,  # exactly 90 % of a 10-frame window
        np.arange(count) % 10 == 3,  # exactly 10 %
    ]
    for raw in cases:
        np.testing.assert_array_equal(hysteresis(raw, w), loop_hysteresis(raw, w))


def test_hysteresis_exhaustive_on_short_clips() -> None:
    """Every flag sequence of up to 9 frames, windows 1 to 11 (count < w included)."""
    for count in range(10):
        bits = (np.arange(1 << count)[:, None] >> np.arange(count)) & 1
        for raw in bits.astype(bool):
            for w in range(1, 12):
                np.testing.assert_array_equal(hysteresis(raw, w), loop_hysteresis(raw, w))


def test_hysteresis_rejects_an_empty_window() -> None:
    with pytest.raises(ValueError, match="at least 1 frame"):
        hysteresis(np.ones(3, bool), 0)


@pytest.mark.parametrize("padding_ms", [0, 30, 90, 300, 600])
def test_frame_decisions_equal_the_loop_on_audio(padding_ms: int) -> None:
    rng = np.random.default_rng(padding_ms)
    sr = 16000
    t = np.arange(4 * sr) / sr
    voiced = 0.3 * np.sign(np.sin(2 * np.pi * 120 * t)) * (np.sin(2 * np.pi * 0.7 * t) > 0)
    audio = (voiced + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    for cfg in (VadConfig(a, 30, padding_ms, 35.0) for a in (0, 2, 3)):
        np.testing.assert_array_equal(
            frame_decisions(audio, sr, cfg), loop_frame_decisions(audio, sr, cfg)
        )


def test_hysteresis_thresholds_are_settings() -> None:
    flags = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    default = hysteresis(flags, 4)
    assert np.array_equal(default, hysteresis(flags, 4, 90, 10))
    # The windows of [0, 1, 1, 1] reach 0, 50, 67 and 75 % flagged: speech starts (and the
    # window is back-filled) only when the on-threshold is below 75 %.
    rise = np.array([0, 1, 1, 1], dtype=bool)
    assert not hysteresis(rise, 4, 90, 10).any() and hysteresis(rise, 4, 70, 10).all()
    with pytest.raises(ValueError, match="off_percent < on_percent"):
        hysteresis(flags, 4, 10, 10)
    with pytest.raises(ValueError, match="off_percent < on_percent"):
        VadConfig(2, 30, 300, 35.0, on_percent=20, off_percent=30)
