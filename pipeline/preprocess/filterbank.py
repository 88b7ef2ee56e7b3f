"""Log-mel features of speech, computed where the audio is decoded.

Front ends (``voice.front_end`` in params):

- ``fbank``: Kaldi-compatible log-mel filterbank (``torchaudio.compliance.kaldi.fbank``), the
  field's default (64 bins, 25 ms window, 10 ms hop);
- ``melspec``: ``torchaudio.transforms.MelSpectrogram`` (Hann window, power 2) then log;

both followed, when ``normalize`` is set, by per-bin mean/variance normalisation over the
utterance (as CMPC's and Wen's code do).

:func:`speech_features` is what the ``voice`` stage runs in its decoder child
(:func:`pipeline.preprocess.shards.decode_each`): decoding, VAD and the features in one call, so
that only the float16 features travel back, and the stage's shard threads, which share one
interpreter lock, do no per-clip work but collecting rows. This module imports neither pandas
nor pyarrow, and torch only on first use: the child stays quick to start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from pipeline.preprocess.vad import VadConfig, read_speech


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
    import torch  # on first use (the voice stage's decoder children preload it)

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


#: What a decoder child running :func:`speech_features` imports as it starts, beside the
#: decoders: torch and its Kaldi front end (2-3 CPU-s, not to count against a clip's timeout).
SPEECH_PRELOAD = ("torch", "torchaudio.compliance.kaldi", "pipeline.preprocess.filterbank")


class Speech(NamedTuple):
    """One clip's speech as the decoder child hands it back."""

    samples: int  # audio samples decoded
    segments: list[tuple[float, float]]  # speech segments (start, end), seconds
    speech_samples: int  # samples inside the segments
    features_f16: bytes | None  # (frames, n_mels) little-endian float16, None: too little speech
    n_frames: int
    n_bins: int


def speech_features(
    path: str, sample_rate_hz: int, vad: VadConfig, features: FeatureConfig, min_speech_s: float
) -> Speech:
    """Decode ``path``'s audio, find its speech and compute its features (none when it holds
    less than ``min_speech_s`` seconds of speech). Torch runs one thread (as MTCNN does in the
    faces stage): the features cannot depend on the machine's core count."""
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    n, segs, speech = read_speech(path, sample_rate_hz, vad)
    if len(speech) / sample_rate_hz < min_speech_s:
        return Speech(n, segs, len(speech), None, 0, 0)
    feats = log_mel(speech, sample_rate_hz, features)
    return Speech(n, segs, len(speech), feats.astype("<f2").tobytes(), *feats.shape)
