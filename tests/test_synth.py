"""The synthetic corpus generator: people, voice, face, and rendered clips (real decoding)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.preprocess.media import read_audio, read_frames
from pipeline.synth.corpus import face_look, plan_corpus, scene_of
from pipeline.synth.face import mouth_window, render_face
from pipeline.synth.people import (
    BEARD_P,
    FACE_PARAM_COLUMNS,
    HAIR_STYLE_P,
    HAIR_STYLES,
    MAKEUP_P,
    VOICE_PARAM_COLUMNS,
    sample_identities,
)
from pipeline.synth.voice import Channel, VoiceParams, synthesize
from tests.helpers import CAL, render_corpus, small_spec

# ------------------------------------------------------------------ people


def test_identities_are_deterministic_and_complete() -> None:
    a = sample_identities(50, np.random.default_rng(3), CAL)
    b = sample_identities(50, np.random.default_rng(3), CAL)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.identity[:2]) == ["id00001", "id00002"]
    assert set(a.gender) == {"m", "f"}
    for c in (*FACE_PARAM_COLUMNS, *VOICE_PARAM_COLUMNS):
        assert a[c].notna().all(), c


def test_gender_shows_in_both_modalities() -> None:
    ids = sample_identities(400, np.random.default_rng(0), CAL)
    male = ids.gender == "m"
    assert ids.f0_log2[male].mean() < ids.f0_log2[~male].mean() - 0.5  # > 0.5 octave lower
    assert ids.jaw_width[male].mean() > ids.jaw_width[~male].mean() + 1.0


def test_hair_style_follows_gender_as_in_real_footage() -> None:
    """Most women long-haired, no bald women, most men short-haired or bald (within 4 binomial
    standard errors of HAIR_STYLE_P on 4,000 identities)."""
    ids = sample_identities(4000, np.random.default_rng(1), CAL)
    for g in ("m", "f"):
        styles = ids.hair_style[ids.gender == g]
        for style, p in zip(HAIR_STYLES, HAIR_STYLE_P[g], strict=True):
            share = float((styles == style).mean())
            assert abs(share - p) <= 4 * np.sqrt(p * (1 - p) / len(styles)) + 1e-9, (g, style)
    assert not ((ids.gender == "f") & (ids.hair_style == "bald")).any()
    assert (ids.hair_style[ids.gender == "f"] == "long").mean() > 0.6
    assert ids.hair_style[ids.gender == "m"].isin(["short", "bald"]).mean() > 0.6


def test_makeup_and_beard_follow_gender_and_move_no_other_draw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Make-up on most women and no men, a beard on many men and no women (within 4 binomial
    standard errors on 4,000 identities); drawn apart from ``rng``, so turning them off leaves
    every other column, and the generator's next draw, as they were."""
    ids = sample_identities(4000, np.random.default_rng(1), CAL)
    for col, p in (("makeup", MAKEUP_P), ("beard", BEARD_P)):
        for g in ("m", "f"):
            share = float(ids[col][ids.gender == g].mean())
            n = int((ids.gender == g).sum())
            assert abs(share - p[g]) <= 4 * np.sqrt(p[g] * (1 - p[g]) / n) + 1e-9, (col, g)
    assert not ids.makeup[ids.gender == "m"].any() and not ids.beard[ids.gender == "f"].any()
    assert ids.makeup[ids.gender == "f"].mean() > 0.9 and ids.beard[ids.gender == "m"].mean() > 0.3

    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    a = sample_identities(300, rng_a, CAL)
    monkeypatch.setattr("pipeline.synth.people.MAKEUP_P", {"f": 0.0, "m": 0.0})
    monkeypatch.setattr("pipeline.synth.people.BEARD_P", {"f": 0.0, "m": 0.0})
    b = sample_identities(300, rng_b, CAL)
    assert a.makeup.any() and not b.makeup.any() and not b.beard.any()
    rest = [c for c in a.columns if c not in ("makeup", "beard")]
    pd.testing.assert_frame_equal(a[rest], b[rest])
    assert rng_a.random() == rng_b.random()


def test_identities_need_a_positive_count() -> None:
    with pytest.raises(ValueError, match="at least one identity"):
        sample_identities(0, np.random.default_rng(0), CAL)


# ------------------------------------------------------------------ voice

VOICE = VoiceParams(120.0, 17.5, 0.0, 0.0, 0.01, 0.2, 1.0, 0.0)
CHANNEL = Channel(noise_dbfs=-60.0, level_dbfs=-20.0, eq_low_db=0.0)


def _f0_estimate(x: np.ndarray, sr: int) -> float:
    """Median autocorrelation pitch over voiced 40 ms frames."""
    est = []
    n = int(0.04 * sr)
    for i in range(0, len(x) - n, n):
        f = x[i : i + n] - x[i : i + n].mean()
        if np.sqrt(np.mean(f**2)) < 0.02:
            continue
        ac = np.correlate(f, f, "full")[n - 1 :]
        lo, hi = sr // 400, sr // 60
        est.append(sr / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(est))


def test_voice_shape_and_truth() -> None:
    u = synthesize(VOICE, CHANNEL, 3.0, np.random.default_rng(1))
    assert u.audio.shape == (48000,) and u.audio.dtype == np.float32
    assert np.abs(u.audio).max() <= 1.0
    assert 0.2 < u.speech_fraction < 0.95
    assert not u.speech[:1600].any(), "clips start with silence"
    assert u.envelope.min() >= 0.0 and u.envelope.max() <= 1.0
    # Leading silence holds only the channel's noise floor (-60 dBFS); speech sits at -20 dBFS.
    lead = int(np.argmax(u.speech)) - 800  # stay clear of the STFT's 32 ms smearing
    rms_speech = np.sqrt(np.mean(u.audio[u.speech] ** 2))
    rms_sil = np.sqrt(np.mean(u.audio[:lead] ** 2))
    assert 20 * np.log10(rms_speech) == pytest.approx(-20, abs=1.5)
    assert 20 * np.log10(rms_sil) == pytest.approx(-60, abs=3)


def test_voice_pitch_follows_f0() -> None:
    low = synthesize(VOICE, CHANNEL, 3.0, np.random.default_rng(2))
    high = synthesize(
        VoiceParams(220.0, 14.5, 0, 0, 0.01, 0.2, 1.0, 0.0), CHANNEL, 3.0, np.random.default_rng(2)
    )
    assert abs(_f0_estimate(low.audio, 16000) - 120) < 20
    assert abs(_f0_estimate(high.audio, 16000) - 220) < 35


def test_vocal_tract_length_moves_formants() -> None:
    def centroid(vtl: float) -> float:
        u = synthesize(
            VoiceParams(150.0, vtl, 0, 0, 0.01, 0.0, 1.0, 0.0),
            CHANNEL,
            3.0,
            np.random.default_rng(5),
        )
        spec = np.abs(np.fft.rfft(u.audio[u.speech]))
        f = np.fft.rfftfreq(int(u.speech.sum()), 1 / 16000)
        band = (f > 200) & (f < 4000)
        return float((spec[band] * f[band]).sum() / spec[band].sum())

    assert centroid(14.0) > centroid(19.0) * 1.08  # shorter tract, higher formants


# ------------------------------------------------------------------ face


@pytest.fixture(scope="module")
def look_scene() -> tuple[object, object]:
    spec = small_spec()
    ids, videos, _ = plan_corpus(spec)
    return face_look(ids.iloc[0]), scene_of(videos.iloc[0])


def test_mouth_window_render_matches_full_frame(look_scene: tuple[object, object]) -> None:
    look, scene = look_scene
    full = render_face(look, scene, 0.7, size=240, seed=11)  # type: ignore[arg-type]
    y0, y1, x0, x1 = mouth_window(look, scene, 240)  # type: ignore[arg-type]
    win = render_face(look, scene, 0.7, size=240, seed=11, window=(y0, y1, x0, x1))  # type: ignore[arg-type]
    np.testing.assert_allclose(win, full[y0:y1, x0:x1], atol=1e-6)


def test_mouth_opening_changes_only_the_mouth(look_scene: tuple[object, object]) -> None:
    look, scene = look_scene
    closed = render_face(look, scene, 0.0, seed=3)  # type: ignore[arg-type]
    opened = render_face(look, scene, 1.0, seed=3)  # type: ignore[arg-type]
    y0, y1, x0, x1 = mouth_window(look, scene, 240)  # type: ignore[arg-type]
    diff = np.abs(opened - closed).sum(-1)
    assert diff[y0:y1, x0:x1].max() > 0.3
    outside = diff.copy()
    outside[y0:y1, x0:x1] = 0
    assert outside.max() == 0


def _look_with(ids: pd.DataFrame, **params: float) -> object:
    row = ids.iloc[0].copy()
    row["makeup"] = row["beard"] = False  # the face parameters' own effect, unhidden
    for k, v in params.items():
        row[k] = v
    return face_look(row)


def test_face_width_changes_proportions_not_size() -> None:
    """The face stage's square crop normalises head size away: build must show as shape."""
    from pipeline.synth.face import _layout

    ids = sample_identities(5, np.random.default_rng(0), CAL)
    scene = scene_of(plan_corpus(small_spec())[1].iloc[0])
    thin = _layout(_look_with(ids, face_width=-2.0), scene, 240)  # type: ignore[arg-type]
    wide = _layout(_look_with(ids, face_width=2.0), scene, 240)  # type: ignore[arg-type]
    assert thin.ry == wide.ry  # same height, same eye/nose/mouth layout ...
    assert wide.rx / wide.ry > thin.rx / thin.ry + 0.2  # ... but a much wider head


@pytest.mark.parametrize(
    ("param", "low", "high", "rows"),
    [("stubble", -2.0, 2.0, (150, 185)), ("wrinkles", -2.0, 2.0, (115, 135))],
)
def test_parameters_darken_their_region(
    param: str, low: float, high: float, rows: tuple[int, int]
) -> None:
    """A beard shadow darkens the lower face; wrinkles (eye bags, folds) the mid face."""
    ids = sample_identities(5, np.random.default_rng(0), CAL)
    scene = scene_of(plan_corpus(small_spec())[1].iloc[0])
    a = render_face(_look_with(ids, **{param: low}), scene, 0.0, seed=1)  # type: ignore[arg-type]
    b = render_face(_look_with(ids, **{param: high}), scene, 0.0, seed=1)  # type: ignore[arg-type]
    r0, r1 = rows
    assert b[r0:r1, 90:150].mean() < a[r0:r1, 90:150].mean() - 0.02


def _looks(**changes: object) -> tuple[object, object]:
    """Two looks of one identity, the second with ``changes`` (FaceLook fields)."""
    import dataclasses

    ids = sample_identities(5, np.random.default_rng(0), CAL)
    base = dataclasses.replace(
        _look_with(ids),  # type: ignore[type-var]
        hair_rgb=(0.07, 0.05, 0.04),
        grey=0.0,
        stubble=0.0,
        hair_style="short",
        makeup=False,
        beard=False,
    )
    return base, dataclasses.replace(base, **changes)  # type: ignore[type-var]


def _render_pair(changes: dict[str, object]) -> tuple[np.ndarray, np.ndarray]:
    scene = scene_of(plan_corpus(small_spec())[1].iloc[0])
    a, b = _looks(**changes)
    return (
        render_face(a, scene, 0.0, seed=1),  # type: ignore[arg-type]
        render_face(b, scene, 0.0, seed=1),  # type: ignore[arg-type]
    )


def test_makeup_reddens_lips_and_shades_eyes_and_nothing_else() -> None:
    plain, made_up = _render_pair({"makeup": True})
    lips = (slice(150, 157), slice(108, 132))  # 240 px canvas: mouth at y ~ 153
    redness = lambda img: float((img[lips][..., 0] - img[lips][..., 1]).mean())  # noqa: E731
    assert redness(made_up) > redness(plain) + 0.1
    eyes = (slice(104, 116), slice(90, 150))  # the upper lids and liner
    assert made_up[eyes].mean() < plain[eyes].mean() - 0.02
    assert np.array_equal(made_up[:80], plain[:80])  # forehead and hair untouched
    assert np.array_equal(made_up[175:], plain[175:])  # chin, neck, clothes untouched


def test_a_beard_covers_the_lower_face_only() -> None:
    shaven, bearded = _render_pair({"beard": True})
    chin = (slice(165, 185), slice(105, 135))
    assert bearded[chin].mean() < shaven[chin].mean() - 0.1
    assert np.array_equal(bearded[:110], shaven[:110])  # eyes and above untouched


def test_long_hair_frames_the_face() -> None:
    """Long hair falls beside the cheeks, inside the face stage's crop, not only behind the head."""
    short, long = _render_pair({"hair_style": "long"})
    cheek_edges = (slice(120, 160), np.r_[72:82, 158:168])
    assert np.abs(long[cheek_edges] - short[cheek_edges]).mean() > 0.1


# ------------------------------------------------------------------ rendered clips


@pytest.fixture(scope="module")
def corpus(
    small_corpus: tuple[Path, pd.DataFrame, pd.DataFrame],
) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    return small_corpus


def test_layout_is_voxceleb2(corpus: tuple[Path, pd.DataFrame, pd.DataFrame]) -> None:
    root, clips, _ = corpus
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.mp4"))
    assert files == sorted(clips.path)
    assert all(re.fullmatch(r"mp4/id\d{5}/[A-Za-z0-9_-]{11}/\d{5}\.mp4", f) for f in files)
    assert not list(root.rglob("*.tmp*")), "no temporary files left behind"


def test_clips_decode_with_expected_properties(
    corpus: tuple[Path, pd.DataFrame, pd.DataFrame],
) -> None:
    import decord

    root, clips, _ = corpus
    for clip in clips.itertuples():
        vr = decord.VideoReader(str(root / clip.path))
        assert round(vr.get_avg_fps()) == 25
        assert vr[0].shape == (224, 224, 3)
        assert abs(len(vr) - clip.duration_s * 25) <= 1
        audio = read_audio(root / clip.path, 16000)
        assert abs(len(audio) / 16000 - clip.duration_s) < 0.1


def test_rendering_is_deterministic(
    corpus: tuple[Path, pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    root, clips, _ = corpus
    render_corpus(tmp_path, small_spec())
    for path in clips.path[:3]:
        _, fa = read_frames(root / path, 5.0)
        _, fb = read_frames(tmp_path / path, 5.0)
        np.testing.assert_array_equal(fa, fb)
        np.testing.assert_array_equal(read_audio(root / path), read_audio(tmp_path / path))


def test_another_seed_gives_another_corpus() -> None:
    a = plan_corpus(small_spec(seed=1))[2]
    b = plan_corpus(small_spec(seed=2))[2]
    assert list(a.path) != list(b.path)


@pytest.mark.slow
def test_mtcnn_finds_one_face_and_vad_finds_speech(
    corpus: tuple[Path, pd.DataFrame, pd.DataFrame],
) -> None:
    from pipeline.preprocess.detector import DetectorConfig, FaceDetector
    from pipeline.preprocess.vad import VadConfig, frame_decisions

    root, clips, _ = corpus
    det = FaceDetector(DetectorConfig(40, (0.6, 0.7, 0.7), 0.709, 32))
    vad = VadConfig(2, 30, 0, 35.0)
    one = total = 0
    diffs = []
    for clip in clips.itertuples():
        _, frames = read_frames(root / clip.path, 2.0)
        n = [len(d.probs) for d in det.detect(frames)]
        one += sum(k == 1 for k in n)
        total += len(n)
        flags = frame_decisions(read_audio(root / clip.path), 16000, vad)
        assert flags.any(), f"no speech found in {clip.path}"
        diffs.append(abs(flags.mean() - clip.speech_fraction))
    assert one / total >= 0.95, f"one face in {one}/{total} frames"
    assert np.mean(diffs) <= 0.10


def test_the_large_preset_plans_over_ten_thousand_distinct_clips() -> None:
    """params.yaml's scale preset (issue: a synthetic corpus of >= 10,000 clips): planned, not
    rendered; every clip has its own key and every identity its own gender and voice."""
    from pipeline.params import load_params
    from tests.conftest import REPO

    large = load_params(REPO / "params.yaml").synth.presets["large"]
    spec = small_spec(
        identities=large.identities, videos=large.videos_per_identity,
        utts=large.utterances_per_video, dur=large.min_duration_s,
    )  # fmt: skip
    identities, videos, clips = plan_corpus(spec)
    assert len(clips) >= 10_000 and clips["path"].is_unique
    assert len(identities) == large.identities and identities["identity"].is_unique
    assert len(videos) == large.identities * large.videos_per_identity
    assert set(identities["gender"]) == {"m", "f"}
