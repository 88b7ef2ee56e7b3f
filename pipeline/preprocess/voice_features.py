"""Voice features (log-mel filterbanks, per-bin normalisation) and the ``voice`` stage's shards.

Front ends (``voice.front_end`` in params):

- ``fbank``: Kaldi-compatible log-mel filterbank (``torchaudio.compliance.kaldi.fbank``), the
  field's default (64 bins, 25 ms window, 10 ms hop);
- ``melspec``: ``torchaudio.transforms.MelSpectrogram`` (Hann window, power 2) then log;

both followed, when ``normalize`` is set, by per-bin mean/variance normalisation over the
utterance (as CMPC's and Wen's code do).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.preprocess.shards import ClipRef, ShardResult, decode_each
from pipeline.preprocess.vad import VadConfig, read_speech
from pipeline.schema import VOICE_FEATURES, write_table


@dataclass(frozen=True)
class FeatureConfig:
    front_end: str  # "fbank" | "melspec"
    n_mels: int
    win_ms: float
    hop_ms: float
    normalize: bool

    def __post_init__(self) -> None:
        if self.front_end not in ("fbank", "melspec"):
            raise ValueError(f"front_end must be 'fbank' or 'melspec', got {self.front_end!r}")

    @property
    def name(self) -> str:
        return f"{self.front_end}{self.n_mels}"


def log_mel(audio: np.ndarray, sample_rate_hz: int, cfg: FeatureConfig) -> np.ndarray:
    """(N,) float audio in [-1, 1] -> (frames, n_mels) float32 features."""
    win = int(round(sample_rate_hz * cfg.win_ms / 1000))
    if len(audio) < win:
        return np.zeros((0, cfg.n_mels), dtype=np.float32)
    import torch  # on first use: a stage starts its Prefect server while torch loads

    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    with torch.inference_mode():
        if cfg.front_end == "fbank":
            from torchaudio.compliance.kaldi import fbank

            feats = fbank(
                x[None, :] * 32768.0,  # Kaldi works on 16-bit sample values
                num_mel_bins=cfg.n_mels,
                frame_length=cfg.win_ms,
                frame_shift=cfg.hop_ms,
                sample_frequency=float(sample_rate_hz),
                dither=0.0,
                energy_floor=0.0,
            )
        else:
            from torchaudio.transforms import MelSpectrogram

            mel = MelSpectrogram(
                sample_rate=sample_rate_hz,
                n_fft=max(512, 1 << (win - 1).bit_length()),
                win_length=win,
                hop_length=int(round(sample_rate_hz * cfg.hop_ms / 1000)),
                n_mels=cfg.n_mels,
            )
            feats = torch.log(mel(x) + 1e-6).T
    out: np.ndarray = feats.numpy().astype(np.float32)
    if cfg.normalize and len(out):
        out = (out - out.mean(0)) / (out.std(0) + 1e-5)
    return out


# ---------------------------------------------------------------- the voice stage's shards


@dataclass(frozen=True)
class VoiceConfig:
    sample_rate_hz: int
    vad: VadConfig
    features: FeatureConfig
    min_speech_s: float


def voice_shard(
    clips: list[ClipRef], root: Path, cfg: VoiceConfig, out: Path, timeout_s: float
) -> ShardResult:
    """VAD and log-mel features of every clip's audio; write ``out`` (schema.VOICE_FEATURES).

    Torch runs one thread (as for MTCNN in the faces stage): the features then cannot depend on
    the machine's core count, which it would otherwise take."""
    import torch

    torch.set_num_threads(1)
    res = ShardResult()
    rows: list[dict[str, Any]] = []
    items = [
        (c, root / c.media_path, (str(root / c.media_path), cfg.sample_rate_hz, cfg.vad))
        for c in clips
    ]
    res.counts["clips_in"] += len(clips)
    # Decoding, VAD and cutting run in the decoder child (read_speech); features run here.
    for clip, (n, segs, speech) in decode_each(res, items, timeout_s, read_speech):
        path = root / clip.media_path
        duration = n / cfg.sample_rate_hz
        res.counts["audio_ms"] += int(round(duration * 1000))
        speech_s = len(speech) / cfg.sample_rate_hz
        if speech_s < cfg.min_speech_s:
            res.fail(
                clip,
                "no_speech",
                f"{path}: {speech_s:.2f} s of speech found, need {cfg.min_speech_s} s",
            )
            continue
        feats = log_mel(speech, cfg.sample_rate_hz, cfg.features)
        res.counts["speech_ms"] += int(round(speech_s * 1000))
        res.counts["clips_out"] += 1
        rows.append(
            {
                "clip_key": clip.clip_key,
                "sample_rate_hz": cfg.sample_rate_hz,
                "duration_s": duration,
                "speech_s": speech_s,
                "segment_start_s": [a for a, _ in segs],
                "segment_end_s": [b for _, b in segs],
                "front_end": cfg.features.name,
                "hop_ms": cfg.features.hop_ms,
                "n_frames": feats.shape[0],
                "n_bins": feats.shape[1],
                "features_f16": feats.astype("<f2").tobytes(),
            }
        )
    write_table(pd.DataFrame(rows, columns=VOICE_FEATURES.schema.names), out, VOICE_FEATURES)
    return res
