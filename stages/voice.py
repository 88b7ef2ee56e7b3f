"""DVC stage ``voice``: speech segments and log-mel features of every clip, as Parquet shards.

Decodes each clip's audio to 16 kHz mono with decord, finds speech with webrtcvad plus an
energy gate and padded hysteresis, and computes the front end's features over the speech only,
all three in an isolated child process (timeout) per shard thread. Audio-only inputs (VoxCeleb1
wav, m4a) take this path alone.
"""

from __future__ import annotations

# isort: off
import stages._pinned  # noqa: F401  (first: pins numpy's and torch's kernels before they load)

# isort: on
import time
from typing import Any

from prefect import flow

from pipeline.params import VoiceStageParams
from pipeline.preprocess.filterbank import SPEECH_PRELOAD, FeatureConfig
from pipeline.preprocess.vad import VadConfig
from pipeline.preprocess.voice_features import VoiceConfig, voice_shard
from pipeline.schema import VOICE_FEATURES
from stages._runtime import run_main
from stages._shards import failure_summary, fan_out, run_stage


def voice_config(p: VoiceStageParams) -> VoiceConfig:
    return VoiceConfig(
        sample_rate_hz=p.sample_rate_hz,
        vad=VadConfig(
            p.vad_aggressiveness,
            p.vad_frame_ms,
            p.vad_padding_ms,
            p.energy_gate_db,
            p.vad_on_percent,
            p.vad_off_percent,
            p.energy_reference_percentile,
        ),
        features=FeatureConfig(p.front_end, p.n_mels, p.win_ms, p.hop_ms, p.normalize),
        min_speech_s=p.min_speech_s,
    )


@flow(name="voice")
def voice_flow(manifest: str, root: str, params: VoiceStageParams, out: str) -> dict[str, Any]:
    """Process every clip of the manifest into ``out``; returns the stage report."""
    t0 = time.perf_counter()
    counts, failures, _, work = fan_out(
        "voice",
        voice_shard,
        manifest,
        params.shard_clips,
        root,
        voice_config(params),
        out,
        VOICE_FEATURES,
    )
    wall = time.perf_counter() - t0
    audio_s = counts["audio_ms"] / 1000
    speech_s = counts["speech_ms"] / 1000
    report = {
        "clips_in": counts["clips_in"],
        "clips_out": counts["clips_out"],
        "audio_s": round(audio_s, 2),
        "speech_s": round(speech_s, 2),
        "speech_fraction": round(speech_s / max(audio_s, 1e-9), 4),
        **failure_summary(failures, counts["clips_in"]),
        "wall_s": round(wall, 1),
        "clips_per_s": round(work["clips_processed"] / max(wall, 1e-9), 1),
        **work,
    }
    print(
        f"voice: {report['clips_out']}/{report['clips_in']} clips, {speech_s:.0f} s of speech in "
        f"{audio_s:.0f} s, {report['failures']} failures ({wall:.1f} s, "
        f"{report['clips_per_s']} clips/s; {work['shards_written']} shards written, "
        f"{work['shards_reused']} reused)"
    )
    return report


def main(argv: list[str] | None = None) -> None:
    run_stage(__doc__ or "", "voice", "voice", voice_flow, argv, preload=SPEECH_PRELOAD)


if __name__ == "__main__":
    run_main(main)
