"""A source-filter speech synthesiser (pure numpy): glottal pulses through moving formants.

Each utterance is phrases of words of consonant-vowel syllables with silences between phrases,
so that voice activity detection has real work to do. Formant frequencies scale with vocal-tract
length and shift with accent; f0 follows the speaker's parameters with declination, jitter and
shimmer; breath noise rides on the voicing. Filtering is done per 10 ms frame in the STFT domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Vowel formants (F1, F2, F3) in Hz for a reference vocal tract of 17.5 cm.
VOWELS: np.ndarray = np.array(
    [
        [730.0, 1090.0, 2440.0],  # a
        [270.0, 2290.0, 3010.0],  # i
        [300.0, 870.0, 2240.0],  # u
        [530.0, 1840.0, 2480.0],  # e
        [570.0, 840.0, 2410.0],  # o
    ]
)
_REF_VTL_CM = 17.5
_BANDWIDTHS_HZ = np.array([80.0, 100.0, 140.0, 200.0])
N_FFT = 512
HOP = 160  # 10 ms at 16 kHz
#: Silences shorter than this (the gaps between words of a phrase) count as speech in the truth,
#: as a human annotator (and any VAD with 10-30 ms frames) would mark them.
MIN_PAUSE_S = 0.1


@dataclass(frozen=True)
class VoiceParams:
    """One speaker's voice in physical units (cf. ``people.VOICE_PARAM_COLUMNS``)."""

    f0_hz: float
    vtl_cm: float
    f1_shift: float  # relative shift of F1 (accent)
    f2_shift: float  # relative shift of F2 (accent)
    jitter: float  # relative period perturbation
    breathiness: float  # aspiration noise level relative to voicing
    speech_rate: float  # syllables per second multiplier
    tilt_db: float  # spectral tilt per octave above 1 kHz


@dataclass(frozen=True)
class Channel:
    """Recording conditions of one video (voice-only nuisance)."""

    noise_dbfs: float  # level of the background noise floor
    level_dbfs: float  # RMS level of the speech
    eq_low_db: float  # gain below 500 Hz


@dataclass(frozen=True)
class Utterance:
    """A synthesised utterance: samples, sample-level speech truth, and its amplitude envelope."""

    audio: np.ndarray  # (T,) float32 in [-1, 1]
    speech: np.ndarray  # (T,) bool, True inside phrases (pauses < MIN_PAUSE_S included)
    envelope: np.ndarray  # (T // HOP,) float32, clean-speech RMS per 10 ms frame (0..1)

    @property
    def speech_fraction(self) -> float:
        return float(self.speech.mean())


def _plan(
    duration_s: float, rate: float, rng: np.random.Generator
) -> list[tuple[float, float, int, bool]]:
    """Segments ``(start_s, end_s, vowel, is_consonant)``; gaps between them are silence."""
    segs: list[tuple[float, float, int, bool]] = []
    t = rng.uniform(0.15, 0.45)
    end = duration_s - rng.uniform(0.2, 0.45)
    while t < end - 0.25:
        for _ in range(int(rng.integers(2, 6))):  # words in a phrase
            for _ in range(int(rng.integers(1, 4))):  # syllables in a word
                cons = rng.uniform(0.035, 0.075) / rate
                vow = rng.uniform(0.10, 0.20) / rate
                if t + cons + vow > end:
                    break
                if rng.random() < 0.8:
                    segs.append((t, t + cons, -1, True))
                    t += cons
                segs.append((t, t + vow, int(rng.integers(len(VOWELS))), False))
                t += vow
            t += rng.uniform(0.03, 0.09)  # between words
            if t > end - 0.25:
                break
        t += rng.uniform(0.3, 0.75)  # between phrases
    if not segs:  # always say something, even in very short clips
        mid = duration_s / 2
        segs.append((mid - 0.12, mid + 0.12, 0, False))
    return segs


def _close_gaps(mask: np.ndarray, max_gap: int) -> np.ndarray:
    """Fill runs of False shorter than ``max_gap`` samples that lie between runs of True."""
    out = mask.copy()
    idx = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    starts, ends = idx[0::2], idx[1::2]  # True runs [start, end)
    for end, nxt in zip(ends[:-1], starts[1:], strict=True):
        if nxt - end < max_gap:
            out[end:nxt] = True
    return out


def _resonances(freqs: np.ndarray, formants: np.ndarray) -> np.ndarray:
    """Magnitude response of cascaded 2-pole resonators. freqs (K,), formants (F, 4) -> (F, K)."""
    f = freqs[None, None, :]
    fk = formants[:, :, None]
    b = _BANDWIDTHS_HZ[None, :, None] / 2
    mag = (fk**2 + b**2) / np.sqrt(((f - fk) ** 2 + b**2) * ((f + fk) ** 2 + b**2))
    out: np.ndarray = np.prod(mag, axis=1)
    return out


def synthesize(
    voice: VoiceParams,
    channel: Channel,
    duration_s: float,
    rng: np.random.Generator,
    sr: int = 16000,
) -> Utterance:
    """Synthesise one utterance of ``duration_s`` seconds at ``sr`` Hz."""
    n = int(round(duration_s * sr))
    n_frames = n // HOP + 1
    segs = _plan(duration_s, voice.speech_rate, rng)

    # Per-frame targets: formants, voicing, frication, loudness.
    scale = _REF_VTL_CM / voice.vtl_cm
    formants = np.zeros((n_frames, 4))
    voiced = np.zeros(n_frames)
    fric = np.zeros(n_frames)
    speech = np.zeros(n, dtype=bool)
    last = VOWELS[0]
    for start, stop, vowel, is_cons in segs:
        a, b = int(start * sr / HOP), max(int(stop * sr / HOP), int(start * sr / HOP) + 1)
        speech[int(start * sr) : int(stop * sr)] = True
        target = last if is_cons else VOWELS[vowel]
        f = target * scale * np.array([1 + voice.f1_shift, 1 + voice.f2_shift, 1.0])
        formants[a:b, :3] = f
        formants[a:b, 3] = 3500.0 * scale
        if is_cons:
            fric[a:b] = 1.0
            voiced[a:b] = 0.3 if rng.random() < 0.4 else 0.0
        else:
            ramp = np.minimum(
                1.0, np.minimum(np.arange(b - a) + 1, (b - a) - np.arange(b - a)) / 3.0
            )
            voiced[a:b] = ramp * rng.uniform(0.7, 1.0)
            last = VOWELS[vowel]
    # Fill silent frames' formants (no energy there) and smooth trajectories (coarticulation).
    empty = formants[:, 0] == 0
    formants[empty] = [*VOWELS[0].tolist(), 3500.0]
    kernel = np.ones(5) / 5
    formants = np.stack(
        [np.convolve(np.pad(c, 2, mode="edge"), kernel, "valid") for c in formants.T], 1
    )
    formants[:, :3] *= 1 + 0.01 * rng.standard_normal((n_frames, 3))

    # Glottal source: pulses at f0 with declination, slow intonation, jitter and shimmer.
    t = np.arange(n) / sr
    intonation = np.interp(t, np.linspace(0, duration_s, 6), 1 + 0.06 * rng.standard_normal(6))
    f0 = voice.f0_hz * intonation * (1 - 0.08 * t / max(duration_s, 1e-3))
    f0 *= 1 + voice.jitter * rng.standard_normal(n).cumsum() / np.sqrt(np.arange(1, n + 1))
    phase = np.cumsum(f0 / sr)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    pulses *= 1 + 3 * voice.jitter * rng.standard_normal(n)  # shimmer
    # Glottal flow derivative ~ decaying pulse: one-pole low-pass of the impulses.
    src = np.zeros(n)
    alpha = np.exp(-2 * np.pi * 800 / sr)
    idx = np.flatnonzero(pulses)
    decay = alpha ** np.arange(64)
    for i in idx:  # ~150-250 pulses per second: cheap
        seg = src[i : i + 64]
        seg += pulses[i] * decay[: len(seg)]
    src -= np.convolve(src, np.ones(8) / 8, "same")  # remove DC, brighten
    noise = rng.standard_normal(n)

    # STFT-domain filtering per frame.
    win = np.hanning(N_FFT + 1)[:-1]
    pad = N_FFT // 2
    freqs = np.fft.rfftfreq(N_FFT, 1 / sr)
    env = _resonances(freqs, formants)  # (F, K)
    tilt = 10 ** (voice.tilt_db * np.log2(np.maximum(freqs, 1000) / 1000) / 20)
    eq = np.where(freqs < 500, 10 ** (channel.eq_low_db / 20), 1.0)
    fric_shape = np.clip((freqs - 2500) / 2500, 0, 1) * np.exp(-np.maximum(freqs - 6500, 0) / 1500)

    def frames(x: np.ndarray) -> np.ndarray:
        xp = np.pad(x, (pad, pad + HOP))
        idx = np.arange(n_frames)[:, None] * HOP + np.arange(N_FFT)[None, :]
        return np.fft.rfft(xp[idx] * win, axis=1)

    spec_v = frames(src) * env * voiced[:, None]
    spec_b = frames(noise) * env * (voiced[:, None] * voice.breathiness * 0.05)
    spec_f = frames(noise) * fric_shape * (fric[:, None] * 0.09)
    spec = (spec_v + spec_b + spec_f) * (tilt * eq)[None, :]
    # Overlap-add with the same Hann window (sum of squared windows normalises).
    out = np.zeros(n + 2 * pad + HOP)
    norm = np.zeros_like(out)
    frames_t = np.fft.irfft(spec, n=N_FFT, axis=1) * win
    for k in range(n_frames):
        out[k * HOP : k * HOP + N_FFT] += frames_t[k]
        norm[k * HOP : k * HOP + N_FFT] += win**2
    clean = (out / np.maximum(norm, 1e-3))[pad : pad + n]

    speech = _close_gaps(speech, int(MIN_PAUSE_S * sr))
    level = np.sqrt(np.mean(clean[speech] ** 2)) if speech.any() else 1.0
    clean *= 10 ** (channel.level_dbfs / 20) / max(level, 1e-9)
    floor = rng.standard_normal(n)
    floor = np.convolve(floor, [0.5, 0.3, 0.2], "same")  # slightly pink
    floor *= 10 ** (channel.noise_dbfs / 20) / np.sqrt(np.mean(floor**2))
    audio = np.clip(clean + floor, -1.0, 1.0).astype(np.float32)

    rms = np.sqrt(np.convolve(clean**2, np.ones(HOP) / HOP, "same"))[::HOP][: n // HOP]
    envelope = np.clip(rms / (10 ** (channel.level_dbfs / 20) * 1.6), 0.0, 1.0).astype(np.float32)
    return Utterance(audio=audio, speech=speech, envelope=envelope)
