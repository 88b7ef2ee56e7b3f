"""Identities of the synthetic corpus: shared latent attributes and what they do to face and voice.

Every identity draws *shared* latents (gender, age, nationality, build) that shape both modalities,
plus *face-only* and *voice-only* nuisances. Face and voice rendering parameters are linear in the
latents plus independent per-modality noise; the two noise scales are the corpus's calibration
knobs (they set how much of a face is predictable from a voice, i.e. the oracle's ceiling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Fictional nationality groups with unequal sizes, like VoxCeleb's (USA-heavy) distribution.
NATIONALITIES: tuple[str, ...] = ("Norland", "Sudmark", "Estoria", "Westerra", "Kaloria")
NATIONALITY_WEIGHTS: tuple[float, ...] = (0.42, 0.22, 0.16, 0.12, 0.08)
#: Per group: skin luminance (0 dark .. 1 light), skin warmth, accent shifts of F1 and F2 (ratio).
_GROUP_SKIN_LUM = np.array([0.78, 0.62, 0.45, 0.70, 0.30], dtype=np.float64)
_GROUP_SKIN_WARM = np.array([0.40, 0.62, 0.55, 0.30, 0.50], dtype=np.float64)
_GROUP_F1_SHIFT = np.array([0.00, 0.07, -0.06, 0.04, -0.03], dtype=np.float64)
_GROUP_F2_SHIFT = np.array([0.00, -0.08, 0.06, 0.09, -0.05], dtype=np.float64)
_GROUP_NOSE = np.array([0.0, 0.4, -0.3, -0.5, 0.6], dtype=np.float64)

#: Columns that the oracle sees on each side (continuous rendering parameters).
FACE_PARAM_COLUMNS: tuple[str, ...] = (
    "face_width",
    "jaw_width",
    "brow_thickness",
    "brow_height",
    "wrinkles",
    "grey_hair",
    "skin_lum",
    "skin_warm",
    "nose_width",
    "lip_fullness",
    "stubble",
)
VOICE_PARAM_COLUMNS: tuple[str, ...] = (
    "f0_log2",
    "vtl_cm",
    "f1_shift",
    "f2_shift",
    "jitter",
    "breathiness",
)

#: Hair styles and their probabilities by gender (a face-only nuisance that shows gender).
HAIR_STYLES: tuple[str, ...] = ("short", "long", "bald", "curly")
HAIR_STYLE_P: dict[str, tuple[float, float, float, float]] = {
    "f": (0.10, 0.70, 0.00, 0.20),
    "m": (0.60, 0.08, 0.12, 0.20),
}

#: Grooming drawn by gender, as in talking-face footage (most women on camera wear make-up, many
#: men a beard): face-only cues that make gender plain in the face crop, as real faces do.
MAKEUP_P: dict[str, float] = {"f": 0.95, "m": 0.0}
BEARD_P: dict[str, float] = {"f": 0.0, "m": 0.4}

_FIRST_NAMES = ("Ari", "Bel", "Cas", "Dor", "Eli", "Fen", "Gal", "Hal", "Ivo", "Jun", "Kit", "Lev")
_LAST_NAMES = ("Morr", "Tesk", "Varn", "Lund", "Okaf", "Pell", "Quen", "Rask", "Sorv", "Thal")


@dataclass(frozen=True)
class Calibration:
    """Noise scales of the identity model, in units of each parameter's latent-driven spread.

    ``face_noise`` / ``voice_noise`` scale the identity-specific noise that is not explained by the
    shared latents; ``gender_strength`` scales how strongly gender shows in both modalities.
    """

    face_noise: float
    voice_noise: float
    gender_strength: float


def sample_identities(n: int, rng: np.random.Generator, cal: Calibration) -> pd.DataFrame:
    """Draw ``n`` identities; one row each, with latents and face/voice rendering parameters.

    Returns a frame with columns ``identity`` (``id00001``…), ``name``, ``gender`` (``m``/``f``),
    ``age_years``, ``nationality``, ``build`` (z-score), face-only nuisances (``hair_*``,
    ``eye_color``, ``glasses``; ``makeup`` and ``beard``, drawn by gender), voice-only nuisances
    (``speech_rate``, ``tilt_db``) and the
    :data:`FACE_PARAM_COLUMNS` and :data:`VOICE_PARAM_COLUMNS`.
    """
    if n < 1:
        raise ValueError(f"need at least one identity, got n={n}")
    female = rng.random(n) < 0.45  # VoxCeleb1: 561 f / 690 m
    g = np.where(female, -1.0, 1.0) * cal.gender_strength  # + male, - female
    age = rng.uniform(20.0, 75.0, n)
    a = (age - 47.5) / 16.0  # ~unit spread
    nat = rng.choice(len(NATIONALITIES), size=n, p=np.array(NATIONALITY_WEIGHTS))
    build = rng.normal(0.0, 1.0, n)

    def fnoise() -> np.ndarray:
        return rng.normal(0.0, cal.face_noise, n)

    def vnoise() -> np.ndarray:
        return rng.normal(0.0, cal.voice_noise, n)

    # Face parameters: dimensionless, roughly z-scored; the renderer maps them to geometry.
    face = {
        "face_width": 0.6 * build + 0.25 * g + fnoise(),
        "jaw_width": 0.8 * g + 0.4 * build + fnoise(),
        "brow_thickness": 0.8 * g + fnoise(),
        "brow_height": -0.6 * g + 0.3 * a + fnoise(),
        "wrinkles": 1.0 * a + fnoise(),
        "grey_hair": 1.0 * a + fnoise(),
        "skin_lum": (_GROUP_SKIN_LUM[nat] - 0.6) / 0.15 + fnoise(),
        "skin_warm": (_GROUP_SKIN_WARM[nat] - 0.45) / 0.1 + fnoise(),
        "nose_width": _GROUP_NOSE[nat] + 0.4 * build + 0.3 * g + fnoise(),
        "lip_fullness": -0.5 * g - 0.3 * a + fnoise(),
        "stubble": 0.9 * g + fnoise(),
    }
    # Voice parameters: physical units where they have one.
    voice = {
        # log2 f0: males ~115 Hz, females ~205 Hz; lower with build, female f0 falls with age.
        "f0_log2": np.log2(155.0) - 0.42 * g - 0.08 * build - 0.05 * a + 0.12 * vnoise(),
        "vtl_cm": 16.0 + 0.9 * g + 0.5 * build + 0.1 * a + 0.5 * vnoise(),
        "f1_shift": _GROUP_F1_SHIFT[nat] + 0.02 * vnoise(),
        "f2_shift": _GROUP_F2_SHIFT[nat] + 0.02 * vnoise(),
        "jitter": np.clip(0.010 + 0.006 * a + 0.004 * vnoise(), 0.002, 0.05),
        "breathiness": np.clip(0.25 + 0.08 * a - 0.05 * g + 0.06 * vnoise(), 0.02, 0.8),
    }
    # Hair style follows gender as in real talking-face footage (most women long, most men
    # short or bald): a face-only cue that makes gender plain in the face crop, as real faces do.
    # One uniform per identity (the draws after it, and so every other attribute, do not move).
    u = rng.random(n)
    cum = np.cumsum([HAIR_STYLE_P["f"], HAIR_STYLE_P["m"]], axis=1)[np.where(female, 0, 1)]
    style_index = (cum <= u[:, None]).sum(axis=1).clip(max=len(HAIR_STYLES) - 1)
    hair_style = np.asarray(HAIR_STYLES)[style_index]
    # Make-up and beard: from a child generator, so every draw of ``rng`` (and so the rest of the
    # corpus) is the same as without them.
    groom = rng.spawn(1)[0].random((n, 2))
    p_makeup = np.where(female, MAKEUP_P["f"], MAKEUP_P["m"])
    p_beard = np.where(female, BEARD_P["f"], BEARD_P["m"])
    frame = pd.DataFrame(
        {
            "identity": [f"id{i + 1:05d}" for i in range(n)],
            "name": [
                f"{_FIRST_NAMES[int(rng.integers(len(_FIRST_NAMES)))]}_"
                f"{_LAST_NAMES[int(rng.integers(len(_LAST_NAMES)))]}_{i + 1}"
                for i in range(n)
            ],
            "gender": np.where(female, "f", "m"),
            "age_years": age,
            "nationality": [NATIONALITIES[k] for k in nat],
            "build": build,
            "hair_style": hair_style,
            "hair_darkness": rng.uniform(0.0, 1.0, n),
            "hair_red": rng.uniform(0.0, 1.0, n),
            "eye_color": rng.choice(["brown", "blue", "green", "grey"], size=n),
            "glasses": rng.random(n) < 0.2,
            "makeup": groom[:, 0] < p_makeup,
            "beard": groom[:, 1] < p_beard,
            "speech_rate": rng.uniform(0.8, 1.25, n),
            "tilt_db": rng.uniform(-4.0, 4.0, n),
            **face,
            **voice,
        }
    )
    return frame
