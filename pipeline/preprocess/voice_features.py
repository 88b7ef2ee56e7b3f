"""The ``voice`` stage's shards: each clip's speech segments and log-mel features.

Every clip is decoded, cut to its speech and turned into features in a decoder child process
(:func:`pipeline.preprocess.filterbank.speech_features`, isolated with a timeout); the shard
function collects the rows and writes one Parquet shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.preprocess.filterbank import SPEECH_PRELOAD, FeatureConfig, speech_features
from pipeline.preprocess.shards import ClipRef, ShardResult, decode_each
from pipeline.preprocess.vad import VadConfig
from pipeline.schema import VOICE_FEATURES, write_table


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

    The work is done in the decoder child, one clip ahead of the row being collected here."""
    res = ShardResult()
    rows: list[dict[str, Any]] = []
    sr = cfg.sample_rate_hz
    items = [
        (
            c,
            root / c.media_path,
            (str(root / c.media_path), sr, cfg.vad, cfg.features, cfg.min_speech_s),
        )
        for c in clips
    ]
    res.counts["clips_in"] += len(clips)
    for clip, got in decode_each(res, items, timeout_s, speech_features, SPEECH_PRELOAD):
        path = root / clip.media_path
        duration = got.samples / sr
        res.counts["audio_ms"] += int(round(duration * 1000))
        speech_s = got.speech_samples / sr
        if got.features_f16 is None:
            res.fail(
                clip,
                "no_speech",
                f"{path}: {speech_s:.2f} s of speech found, need {cfg.min_speech_s} s",
            )
            continue
        res.counts["speech_ms"] += int(round(speech_s * 1000))
        res.counts["clips_out"] += 1
        rows.append(
            {
                "clip_key": clip.clip_key,
                "sample_rate_hz": sr,
                "duration_s": duration,
                "speech_s": speech_s,
                "segment_start_s": [a for a, _ in got.segments],
                "segment_end_s": [b for _, b in got.segments],
                "front_end": cfg.features.name,
                "hop_ms": cfg.features.hop_ms,
                "n_frames": got.n_frames,
                "n_bins": got.n_bins,
                "features_f16": got.features_f16,
            }
        )
    write_table(pd.DataFrame(rows, columns=VOICE_FEATURES.schema.names), out, VOICE_FEATURES)
    return res
