"""Plan and render the synthetic talking-face corpus in VoxCeleb2's layout.

:func:`plan_corpus` makes every random draw up front from one seed (identities, videos, utterances,
and one integer seed per video for the rendering), so that rendering can be sharded across any
number of workers and still give identical files. :func:`render_video` writes all utterances of
one video as ``mp4/<identity>/<video_id>/<utt:05d>.mp4`` (H.264 + AAC at 16 kHz mono);
:func:`render_jobs` gives its arguments for each video of a plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pandas as pd

from pipeline.atomic import atomic_path
from pipeline.cpu_pin import pin_ffmpeg
from pipeline.synth.face import EYE_COLORS, FaceLook, Scene, mouth_window, render_face
from pipeline.synth.people import Calibration, sample_identities
from pipeline.synth.voice import HOP, Channel, VoiceParams, synthesize

_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
CANVAS_PAD = 8  # px of head-motion room on each side of the rendered canvas
MOUTH_LEVELS = 6


@dataclass(frozen=True)
class CorpusSpec:
    """What to generate (one ``synth`` params preset)."""

    n_identities: int
    videos_per_identity: int
    utterances_per_video: int
    min_duration_s: float
    max_duration_s: float
    frame_size_px: int
    fps: int
    sample_rate_hz: int
    seed: int
    calibration: Calibration


def _sig(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def face_look(row: pd.Series) -> FaceLook:
    """Map an identity's face parameters (z-score-like) to renderer units.

    Each parameter moves what :mod:`pipeline.synth.face` describes, over a range wide enough to
    show in a 16 px crop: ``face_width`` sets both the head's width-to-height ratio and its
    ``fullness`` (cheeks, neck, double chin); ``jaw_width`` the chin's shape; ``brow_thickness``
    the brows and brow ridge; ``brow_height`` the brows' height and arch; ``wrinkles`` the lines,
    folds, eye bags, hooded lids and jowls; ``grey_hair`` the grey of hair, brows and stubble;
    ``lip_fullness`` the lips' height and redness; ``stubble`` the beard shadow; ``skin_lum`` /
    ``skin_warm`` the skin colour; ``nose_width`` the nose. Nothing else about the identity (its
    gender, age, nationality or build) is read: those show only through these parameters and the
    hair style, make-up and beard, which :func:`pipeline.synth.people.sample_identities` draws
    by gender.
    """
    lum = float(np.clip(0.62 + 0.1 * row.skin_lum, 0.32, 0.95))
    warm = float(np.clip(0.45 + 0.1 * row.skin_warm, 0.0, 1.0))
    skin = (min(lum * 1.08, 1.0), lum * (0.84 - 0.14 * warm), lum * (0.74 - 0.22 * warm))
    dark, red = float(row.hair_darkness), float(row.hair_red)
    light_hair = np.array([0.78, 0.62, 0.36]) * (1 - red) + np.array([0.6, 0.24, 0.1]) * red
    hair = tuple(float(c) for c in light_hair * (1 - dark) + np.array([0.07, 0.05, 0.04]) * dark)
    return FaceLook(
        face_width=float(np.clip(0.75 + 0.065 * row.face_width, 0.6, 0.9)),
        fullness=float(np.clip(0.5 + 0.25 * row.face_width, 0.0, 1.0)),
        jaw_width=_sig(1.3 * row.jaw_width),
        brow_thickness=float(np.clip(4.0 + 1.6 * row.brow_thickness, 1.5, 9.0)),
        brow_height=float(np.clip(0.15 + 0.035 * row.brow_height, 0.07, 0.26)),
        wrinkles=float(np.clip(0.35 + 0.3 * row.wrinkles, 0.0, 1.0)),
        grey=float(np.clip(0.3 + 0.3 * row.grey_hair, 0.0, 0.95)),
        skin_rgb=skin,
        nose_width=float(np.clip(0.21 + 0.035 * row.nose_width, 0.13, 0.31)),
        lip_fullness=_sig(1.2 * row.lip_fullness),
        stubble=float(np.clip(0.5 * (row.stubble + 0.4), 0.0, 1.0)),
        hair_rgb=hair,  # type: ignore[arg-type]
        hair_style=str(row.hair_style),
        eye_rgb=EYE_COLORS[str(row.eye_color)],
        glasses=bool(row.glasses),
        makeup=bool(row.makeup),
        beard=bool(row.beard),
    )


def voice_params(row: pd.Series, f0_factor: float = 1.0) -> VoiceParams:
    """An identity's voice parameters in synthesiser units."""
    return VoiceParams(
        f0_hz=float(2.0**row.f0_log2) * f0_factor,
        vtl_cm=float(row.vtl_cm),
        f1_shift=float(row.f1_shift),
        f2_shift=float(row.f2_shift),
        jitter=float(row.jitter),
        breathiness=float(row.breathiness),
        speech_rate=float(row.speech_rate),
        tilt_db=float(row.tilt_db),
    )


def plan_corpus(spec: CorpusSpec) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """All random draws of the corpus: (identities, videos, clips) frames.

    ``videos`` holds the per-video scene, channel and render seed; ``clips`` one row per utterance
    with its relative path, duration and pitch offset.
    """
    rng = np.random.default_rng(spec.seed)
    ids = sample_identities(spec.n_identities, rng, spec.calibration)
    vid_rows = []
    clip_rows = []
    for ident in ids.identity:
        for _ in range(spec.videos_per_identity):
            vid = "".join(_ID_CHARS[k] for k in rng.integers(0, len(_ID_CHARS), 11))
            az, el = rng.uniform(-0.8, 0.8), rng.uniform(-0.5, 0.2)
            light = np.array([np.sin(az), el, np.cos(az)])
            # Not np.linalg.norm: numpy sends it to OpenBLAS, whose dot kernel is chosen by the CPU
            # (AVX-512 machines sum with FMA, AVX2 ones do not: 11 % of such norms differ in the
            # last bit, enough to flip a rendered pixel). Plain IEEE sums, left to right.
            light /= np.sqrt(light[0] * light[0] + light[1] * light[1] + light[2] * light[2])
            bg = rng.uniform(0.05, 0.85, 3)
            vid_rows.append(
                {
                    "identity": ident,
                    "video_id": vid,
                    "render_seed": int(rng.integers(2**31)),
                    "light_x": light[0],
                    "light_y": light[1],
                    "light_z": light[2],
                    "light_gain": rng.uniform(0.85, 1.15),
                    "warmth": rng.uniform(-1, 1),
                    "bg_top_r": bg[0],
                    "bg_top_g": bg[1],
                    "bg_top_b": bg[2],
                    "bg_shade": rng.uniform(0.4, 1.0),
                    "cloth_r": rng.uniform(0.05, 0.8),
                    "cloth_g": rng.uniform(0.05, 0.8),
                    "cloth_b": rng.uniform(0.05, 0.8),
                    "zoom": rng.uniform(0.95, 1.05),
                    "tilt_rad": rng.uniform(-0.06, 0.06),
                    "motion_px": rng.uniform(1.0, 4.0),
                    "camera_noise": rng.uniform(1.5, 5.0),
                    "noise_dbfs": rng.uniform(-62.0, -48.0),
                    "level_dbfs": rng.uniform(-26.0, -18.0),
                    "eq_low_db": rng.uniform(-4.0, 4.0),
                }
            )
            for u in range(spec.utterances_per_video):
                clip_rows.append(
                    {
                        "identity": ident,
                        "video_id": vid,
                        "utterance": u + 1,
                        "path": f"mp4/{ident}/{vid}/{u + 1:05d}.mp4",
                        "duration_s": round(
                            rng.uniform(spec.min_duration_s, spec.max_duration_s), 2
                        ),
                        "f0_factor": float(2 ** (rng.normal(0, 0.6) / 12)),
                    }
                )
    return ids, pd.DataFrame(vid_rows), pd.DataFrame(clip_rows)


def scene_of(video: pd.Series) -> Scene:
    bg = np.array([video.bg_top_r, video.bg_top_g, video.bg_top_b])
    return Scene(
        light_dir=(float(video.light_x), float(video.light_y), float(video.light_z)),
        light_gain=float(video.light_gain),
        warmth=float(video.warmth),
        bg_top=tuple(float(c) for c in bg),  # type: ignore[arg-type]
        bg_bottom=tuple(float(c) for c in bg * video.bg_shade),  # type: ignore[arg-type]
        cloth_rgb=(float(video.cloth_r), float(video.cloth_g), float(video.cloth_b)),
        scale=float(video.zoom),
        tilt_rad=float(video.tilt_rad),
    )


def channel_of(video: pd.Series) -> Channel:
    return Channel(
        noise_dbfs=float(video.noise_dbfs),
        level_dbfs=float(video.level_dbfs),
        eq_low_db=float(video.eq_low_db),
    )


def _mouth_sprites(
    look: FaceLook, scene: Scene, canvas: int, seed: int
) -> tuple[np.ndarray, list[np.ndarray], tuple[int, int, int, int]]:
    base = render_face(look, scene, 0.0, size=canvas, seed=seed)
    win = mouth_window(look, scene, canvas)
    sprites = [
        render_face(look, scene, k / (MOUTH_LEVELS - 1), size=canvas, seed=seed, window=win)
        for k in range(MOUTH_LEVELS)
    ]
    return base, sprites, win


def rgb_to_yuv420p(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB -> (T, H * 3 // 2, W) uint8 planar YUV 4:2:0 (BT.601, limited
    range), in integer arithmetic. Left to swscale, the conversion's rounding depends on the SIMD
    kernel the CPU gets (C, SSE, AVX2 ... give different bytes); integers give the same on all."""
    t, h, w, _ = frames.shape
    out = np.empty((t, h * 3 // 2, w), dtype=np.uint8)
    c = frames.astype(np.uint16)  # 66 R + 129 G + 25 B + 16.5 * 256 < 2**16
    y = 66 * c[..., 0] + 129 * c[..., 1]
    y += 25 * c[..., 2] + (128 + (16 << 8))
    out[:, :h] = y >> 8
    # Chroma of each 2x2 block from its summed RGB (linear, so the same as the mean of the four
    # pixels' chroma): /256 for BT.601's scale and /4 for the mean, rounded.
    q = (c[:, 0::2, 0::2] + c[:, 1::2, 0::2] + c[:, 0::2, 1::2] + c[:, 1::2, 1::2]).astype(np.int32)
    r, g, b = q[..., 0], q[..., 1], q[..., 2]
    half = 512 + (128 << 10)
    out[:, h : h + h // 4] = ((-38 * r - 74 * g + 112 * b + half) >> 10).reshape(t, h // 4, w)
    out[:, h + h // 4 :] = ((112 * r - 94 * g - 18 * b + half) >> 10).reshape(t, h // 4, w)
    return out


def _write_mp4(path: Path, frames: np.ndarray, audio: np.ndarray, fps: int, sr: int) -> None:
    """Encode (T, H, W, 3) uint8 frames and (N,) float32 audio into one MP4, atomically.

    Deterministic across machines: frames reach x264 as YUV already (no swscale), x264 runs one
    thread (its asm is bit-exact to its C), FFmpeg's AAC encoder runs its C code
    (:func:`pipeline.cpu_pin.pin_ffmpeg`), and ``bitexact`` keeps version strings out of the file.
    """
    pin_ffmpeg("av")
    bitexact = {"fflags": "+bitexact"}
    with (
        atomic_path(path) as tmp,
        av.open(str(tmp), mode="w", format="mp4", container_options=bitexact) as out,
    ):
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        vs.pix_fmt = "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "23", "threads": "1", "flags": "+bitexact"}
        as_ = out.add_stream("aac", rate=sr, layout="mono")
        as_.options = {"flags": "+bitexact"}
        for k, img in enumerate(frames):  # one frame at a time: its temporaries stay in cache
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(img[None])[0], format="yuv420p")
            frame.pts = k
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        chunk = 1024
        for i in range(0, len(audio), chunk):
            a = audio[i : i + chunk][None, :]
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(a), format="fltp", layout="mono")
            af.sample_rate = sr
            af.pts = i
            for pkt in as_.encode(af):
                out.mux(pkt)
        for pkt in as_.encode():
            out.mux(pkt)


def render_jobs(
    root: Path,
    spec: CorpusSpec,
    identities: pd.DataFrame,
    videos: pd.DataFrame,
    clips: pd.DataFrame,
) -> list[tuple[Path, pd.Series, pd.Series, pd.DataFrame, CorpusSpec]]:
    """The :func:`render_video` arguments of each row of ``videos`` (a plan's tables, or parts of
    them), in order."""
    by_id = identities.set_index("identity", drop=False)
    jobs = []
    for row in videos.itertuples(index=False):
        v = pd.Series(row._asdict())
        jobs.append((root, by_id.loc[v.identity], v, clips[clips.video_id == v.video_id], spec))
    return jobs


def render_video(
    root: Path,
    identity: pd.Series,
    video: pd.Series,
    clips: pd.DataFrame,
    spec: CorpusSpec,
) -> list[dict[str, object]]:
    """Render every utterance of one video under ``root``; returns one truth row per clip."""
    rng = np.random.default_rng(int(video.render_seed))
    size = spec.frame_size_px
    canvas = size + 2 * CANVAS_PAD
    look = face_look(identity)
    scene = scene_of(video)
    base, sprites, (y0, y1, x0, x1) = _mouth_sprites(look, scene, canvas, int(video.render_seed))
    base_u8 = base * 255.0
    sprites_u8 = [s * 255.0 for s in sprites]
    noise_bank = rng.normal(0, float(video.camera_noise), (8, size, size, 3)).astype(np.float32)
    rows: list[dict[str, object]] = []
    for clip in clips.itertuples():
        utt = synthesize(
            voice_params(identity, float(clip.f0_factor)),
            channel_of(video),
            float(clip.duration_s),
            rng,
            sr=spec.sample_rate_hz,
        )
        n_frames = int(round(float(clip.duration_s) * spec.fps))
        hops_per_frame = spec.sample_rate_hz // spec.fps // HOP
        env = utt.envelope
        # Mouth opening per video frame: mean speech envelope over the frame, quantised.
        per_frame = np.array(
            [
                env[k * hops_per_frame : (k + 1) * hops_per_frame].mean()
                if k * hops_per_frame < len(env)
                else 0.0
                for k in range(n_frames)
            ]
        )
        levels = np.clip(
            np.round(np.sqrt(per_frame) * (MOUTH_LEVELS - 1) * 1.2), 0, MOUTH_LEVELS - 1
        ).astype(int)
        # Head motion: smooth random walk in pixels, within the canvas padding.
        t = np.arange(n_frames) / spec.fps
        ph = rng.uniform(0, 2 * np.pi, 4)
        fr = rng.uniform(0.2, 0.8, 4)
        amp = float(video.motion_px)
        dx = np.round(
            amp
            * (np.sin(2 * np.pi * fr[0] * t + ph[0]) + 0.5 * np.sin(2 * np.pi * fr[1] * t + ph[1]))
            / 1.5
        )
        dy = np.round(
            amp
            * (np.sin(2 * np.pi * fr[2] * t + ph[2]) + 0.5 * np.sin(2 * np.pi * fr[3] * t + ph[3]))
            / 1.5
        )
        dx = np.clip(dx, -CANVAS_PAD, CANVAS_PAD).astype(int)
        dy = np.clip(dy, -CANVAS_PAD, CANVAS_PAD).astype(int)
        frames = np.empty((n_frames, size, size, 3), dtype=np.uint8)
        full = base_u8.copy()
        current = -1
        for k in range(n_frames):
            if levels[k] != current:
                current = int(levels[k])
                full[y0:y1, x0:x1] = sprites_u8[current]
            oy, ox = CANVAS_PAD + dy[k], CANVAS_PAD + dx[k]
            crop = full[oy : oy + size, ox : ox + size] + noise_bank[int(rng.integers(8))]
            np.clip(crop, 0, 255, out=crop)
            frames[k] = crop
        _write_mp4(root / str(clip.path), frames, utt.audio, spec.fps, spec.sample_rate_hz)
        starts, ends = _segments(utt.speech, spec.sample_rate_hz)
        rows.append(
            {
                "path": str(clip.path),
                "speech_fraction": utt.speech_fraction,
                "speech_start_s": starts,
                "speech_end_s": ends,
                "n_frames": n_frames,
                "mouth_open_mean": float(levels.mean() / (MOUTH_LEVELS - 1)),
            }
        )
    return rows


def _segments(mask: np.ndarray, sr: int) -> tuple[list[float], list[float]]:
    """Start/end times (s) of the runs of True in a sample mask."""
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    starts = np.flatnonzero(d == 1) / sr
    ends = np.flatnonzero(d == -1) / sr
    return [round(float(x), 4) for x in starts], [round(float(x), 4) for x in ends]
