"""Log-mel front ends and the voice stage's shard function."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.preprocess.filterbank import FeatureConfig, log_mel, speech_features
from pipeline.preprocess.shards import ClipRef
from pipeline.preprocess.vad import VadConfig, read_speech
from pipeline.preprocess.voice_features import VoiceConfig, voice_shard
from pipeline.schema import VOICE_FEATURES, features_of, read_table
from tests.helpers import write_silent_audio
from tests.test_media import _video_only

FBANK = FeatureConfig("fbank", 64, 25.0, 10.0, True)
VCFG = VoiceConfig(16000, VadConfig(2, 30, 300, 35.0), FBANK, 0.3)


def test_fbank_shape_and_normalisation() -> None:
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    f = log_mel(x, 16000, FBANK)
    assert f.shape == (1 + (16000 - 400) // 160, 64)  # Kaldi framing, snip_edges
    np.testing.assert_allclose(f.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(f.std(0), 1, atol=1e-2)


def test_fbank_tracks_a_tone() -> None:
    t = np.arange(16000) / 16000
    low = log_mel(
        (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32),
        16000,
        FeatureConfig("fbank", 64, 25, 10, False),
    )
    high = log_mel(
        (0.3 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32),
        16000,
        FeatureConfig("fbank", 64, 25, 10, False),
    )
    assert np.argmax(low.mean(0)) < np.argmax(high.mean(0)) - 10


def test_melspec_front_end_and_short_input() -> None:
    cfg = FeatureConfig("melspec", 40, 25.0, 10.0, False)
    f = log_mel(np.zeros(8000, np.float32) + 0.01, 16000, cfg)
    assert f.shape[1] == 40 and abs(f.shape[0] - 51) <= 1
    assert log_mel(np.zeros(100, np.float32), 16000, FBANK).shape == (0, 64)
    with pytest.raises(ValueError, match="front_end"):
        FeatureConfig("mfcc", 40, 25.0, 10.0, False)


def _silent_audio(path: Path) -> Path:
    return write_silent_audio(path)


def test_voice_shard_with_bad_files(
    small_corpus: tuple[Path, pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    root, clips, _ = small_corpus
    refs = [ClipRef(p[4:-4], p, "video", None) for p in clips.path]
    (tmp_path / "zero.mp4").write_bytes(b"")
    bad = [
        ClipRef("zz/zero", str(tmp_path / "zero.mp4"), "video", None),
        ClipRef("zz/noaudio", str(_video_only(tmp_path / "noaudio.mp4")), "video", None),
        ClipRef("zz/silent", str(_silent_audio(tmp_path / "silent.mp4")), "video", None),
    ]
    out = tmp_path / "voice-00000.parquet"
    res = voice_shard(refs + bad, root, VCFG, out, timeout_s=30)
    table = read_table(out, VOICE_FEATURES)
    assert list(table.clip_key) == sorted(r.clip_key for r in refs)
    assert {f["clip_key"]: f["reason"] for f in res.failures} == {
        "zz/zero": "decode",
        "zz/noaudio": "no_audio",
        "zz/silent": "no_speech",
    }
    row = table.iloc[0]
    feats = features_of(row)
    assert feats.shape == (row.n_frames, 64) and row.front_end == "fbank64"
    assert abs(row.speech_s - row.n_frames * 0.01) < 0.1
    # VAD segments cover the generator's truth (padding makes them a little longer).
    truth = clips.set_index(clips.path.str[4:-4]).loc[row.clip_key]
    assert row.speech_s >= 0.8 * truth.speech_fraction * truth.duration_s


@pytest.mark.realdata
@pytest.mark.slow
def test_the_decoder_child_gives_the_features_computed_here(
    small_corpus: tuple[Path, pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    """The voice stage decodes, cuts and computes features in its decoder child: its rows hold
    the bytes that decoding, VAD and :func:`log_mel` give in this process (one torch thread, as
    the child runs), and a clip with too little speech gets no features."""
    import torch

    root, clips, _ = small_corpus
    refs = [ClipRef(p[4:-4], p, "video", None) for p in clips.path[:4]]
    out = tmp_path / "voice.parquet"
    voice_shard(refs, root, VCFG, out, timeout_s=30)
    table = read_table(out, VOICE_FEATURES).set_index("clip_key")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for ref in refs:
            n, segs, speech = read_speech(str(root / ref.media_path), 16000, VCFG.vad)
            row = table.loc[ref.clip_key]
            assert row.features_f16 == log_mel(speech, 16000, FBANK).astype("<f2").tobytes()
            assert list(row.segment_start_s) == [a for a, _ in segs]
            assert row.duration_s == n / 16000 and row.speech_s == len(speech) / 16000
        got = speech_features(str(root / refs[0].media_path), 16000, VCFG.vad, FBANK, 1e6)
        assert got.features_f16 is None and got.speech_samples > 0
    finally:
        torch.set_num_threads(threads)


def test_real_clips_give_features_or_a_clear_failure(realdata: Path, tmp_path: Path) -> None:
    """Every real clip (FLV/VP6, MP3, MPEG-1, MPEG-4, H.264) yields features or a failure row."""
    from pipeline.preprocess.detector import DetectorConfig
    from pipeline.preprocess.face_tracks import FaceConfig, face_shard
    from pipeline.schema import FACE_FRAMES

    with open(realdata / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    refs = [
        ClipRef(f"{i:03d}", r["file"], "video" if r["has_video"] == "True" else "audio", None)
        for i, r in enumerate(rows)
    ]
    res = voice_shard(refs, realdata, VCFG, tmp_path / "v.parquet", timeout_s=60)
    voice = read_table(tmp_path / "v.parquet", VOICE_FEATURES)
    assert len(voice) + len(res.failures) == len(refs)
    assert len(voice) == len(refs), res.failures  # all of them have speech
    face_cfg = FaceConfig(1.0, DetectorConfig(40, (0.6, 0.7, 0.7), 0.709, 32), 0.8, 0.2, 112, 90)
    fres = face_shard(refs, realdata, face_cfg, tmp_path / "f.parquet", timeout_s=60)
    faces = read_table(tmp_path / "f.parquet", FACE_FRAMES)
    videos = {r.clip_key for r in refs if r.media_kind == "video"}
    assert set(faces.clip_key) | {f["clip_key"] for f in fres.failures} == videos
    assert fres.counts["clips_audio_only"] == len(refs) - len(videos)
    vox2 = [r.clip_key for r in refs if r.media_path.startswith("pcavs_voxceleb2")]
    for key in vox2:
        assert (faces.clip_key == key).sum() >= 3
