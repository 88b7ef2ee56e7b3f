"""A small numpy face renderer: a shaded head with hair, eyes, brows, nose and a talking mouth.

Not a photo, but realistic enough for MTCNN (trained on real faces) to find it reliably: skin
tones, Lambert shading of an ellipsoid head, dark eyes with white sclera, eyebrows, a nose shadow
and lips. Per-video parameters (:class:`Scene`) set lighting, background, clothing and camera.

The identity's face parameters (:mod:`pipeline.synth.people`, mapped to :class:`FaceLook` by
:func:`pipeline.synth.corpus.face_look`) show as *shape and proportion*, not only as absolute
size, because the face stage crops a square around the detected face and resizes it, which
normalises the head's size away. The head's height is fixed and the inner features (eyes, nose,
mouth) are laid out in units of it, so what a parameter does survives the crop:

- ``face_width`` (build, some gender): the width-to-height ratio of the head, i.e. how much cheek
  lies outside the eyes; ``fullness`` (the same parameter): how little the lower face tapers
  (round cheeks), the neck's width relative to the face, broad shoulders and a double chin;
- ``jaw_width`` (gender, some build): the chin's shape, from a pointed V (0) to a square, wide jaw
  with corners (1);
- ``brow_thickness`` (gender): thick, dark brows and a brow ridge that shades the eye sockets;
  ``brow_height`` (gender, age): the gap between eye and brow and the brow's arch;
- ``stubble`` (gender): a beard shadow over jaw, chin and upper lip;
- ``lip_fullness`` (gender, age): lip height and colour (full, red lips at 1);
- ``wrinkles`` (age): forehead lines, under-eye bags, hooded lids, nasolabial and marionette folds
  and sagging jowls; ``grey`` (age): grey in hair, brows and beard;
- ``skin_rgb`` (nationality) and ``nose_width`` (nationality, build): skin colour, nose width.

Hair colour, eye colour and glasses are face-only nuisances. The hair style, make-up (lipstick,
eye shadow and liner, blush) and a full beard are face-only cues drawn by gender, as in real
talking-face footage (mostly long hair and make-up for women; short hair or bald, and often a
beard, for men): with them gender is plain in the crop, as it is in real faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

F32 = np.float32

EYE_COLORS: dict[str, tuple[float, float, float]] = {
    "brown": (0.35, 0.20, 0.10),
    "blue": (0.25, 0.45, 0.70),
    "green": (0.30, 0.50, 0.30),
    "grey": (0.45, 0.48, 0.50),
}

#: Head half-height as a fraction of the canvas (at zoom 1): every face is this tall.
HEAD_HALF_HEIGHT = 0.28
_BEARD_DARK = np.asarray((0.10, 0.09, 0.09), F32)
_LIPSTICK_RGB = np.asarray((0.70, 0.08, 0.20), F32)
_SHADOW_RGB = np.asarray((0.32, 0.20, 0.30), F32)
_BLUSH_RGB = np.asarray((0.90, 0.40, 0.45), F32)


@dataclass(frozen=True)
class FaceLook:
    """Identity-level appearance, in renderer units (derived from the face parameters).

    Lengths are fractions of the head's half-height unless marked px (at a 240 px canvas).
    """

    face_width: float  # head half-width / half-height, ~0.62 (narrow, long) .. 0.88 (wide, round)
    fullness: float  # 0..1: cheek fullness (less taper), neck width, shoulders, double chin
    jaw_width: float  # 0 (pointed V chin) .. 1 (square, wide jaw)
    brow_thickness: float  # px at 240; thick brows also get a shading brow ridge
    brow_height: float  # eye-to-brow gap; high brows are also arched
    wrinkles: float  # 0..1: lines, eye bags, hooded lids, folds, sagging jowls
    grey: float  # 0..1 share of grey in hair, brows and stubble
    skin_rgb: tuple[float, float, float]
    nose_width: float  # nose half-width
    lip_fullness: float  # 0..1: lip height and redness
    stubble: float  # 0..1 beard-shadow strength
    hair_rgb: tuple[float, float, float]
    hair_style: str
    eye_rgb: tuple[float, float, float]
    glasses: bool
    makeup: bool = False  # lipstick, eye shadow and liner, blush
    beard: bool = False  # a full beard and moustache (over the stubble shadow)


@dataclass(frozen=True)
class Scene:
    """Video-level conditions: lighting, background, clothing, framing."""

    light_dir: tuple[float, float, float]  # unit vector, z towards camera
    light_gain: float  # overall brightness multiplier
    warmth: float  # -1 cool .. +1 warm colour cast
    bg_top: tuple[float, float, float]
    bg_bottom: tuple[float, float, float]
    cloth_rgb: tuple[float, float, float]
    scale: float  # zoom, ~1
    tilt_rad: float  # in-plane head roll


def _sig(d: np.ndarray) -> np.ndarray:
    """Soft inside-mask from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - d, 0.0, 1.0)


def _ellipse_d(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float
) -> np.ndarray:
    """Approximate signed distance (px) to an axis-aligned ellipse."""
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return (r - 1.0) * min(rx, ry)


def _segment_d(
    x: np.ndarray, y: np.ndarray, a: tuple[float, float], b: tuple[float, float]
) -> np.ndarray:
    """Distance (px) to the segment from ``a`` to ``b``."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    t = np.clip(((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    out: np.ndarray = np.hypot(x - ax - t * dx, y - ay - t * dy)
    return out


def _blend(
    img: np.ndarray, rgb: tuple[float, float, float] | np.ndarray, alpha: np.ndarray
) -> None:
    """In place: img = img * (1 - alpha) + rgb * alpha. ``rgb`` may be a colour or an image."""
    a = alpha[..., None]
    img *= 1.0 - a
    img += a * np.asarray(rgb, dtype=F32)


@dataclass(frozen=True)
class _Layout:
    """Pixel geometry of one head on one canvas (before the in-plane roll)."""

    rx: float  # head half-width at the cheeks
    ry: float  # head half-height
    mouth_y: float
    mouth_w: float  # mouth half-width
    lip_h: float  # closed lips' half-height
    open_h: float  # extra opening at mouth_open = 1


def _layout(look: FaceLook, scene: Scene, size: int) -> _Layout:
    ry = HEAD_HALF_HEIGHT * size * scene.scale
    return _Layout(
        rx=look.face_width * ry,
        ry=ry,
        mouth_y=ry * 0.50,
        mouth_w=ry * 0.27,
        lip_h=ry * (0.03 + 0.05 * look.lip_fullness),
        open_h=ry * 0.13,
    )


def mouth_window(look: FaceLook, scene: Scene, size: int) -> tuple[int, int, int, int]:
    """Pixel box ``(y0, y1, x0, x1)`` that contains everything the mouth opening changes."""
    g = _layout(look, scene, size)
    cx, cy = size / 2.0, size * 0.50
    mx_img = cx - np.sin(scene.tilt_rad) * g.mouth_y
    my_img = cy + np.cos(scene.tilt_rad) * g.mouth_y
    # Soft ellipse edges reach past the lips' half-width by up to 0.5 px per px of half-height.
    hw, hh = g.mouth_w * 1.5 + 6, g.lip_h + g.open_h * 0.55 + 6
    y0, y1 = max(0, int(my_img - hh)), min(size, int(np.ceil(my_img + hh)))
    x0, x1 = max(0, int(mx_img - hw)), min(size, int(np.ceil(mx_img + hw)))
    return y0, y1, x0, x1


def render_face(
    look: FaceLook,
    scene: Scene,
    mouth_open: float,
    size: int = 240,
    seed: int = 0,
    window: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Render one frame, float32 RGB in [0, 1], shape (size, size, 3).

    ``mouth_open`` in [0, 1] opens the mouth; ``seed`` fixes hair/stubble texture so that frames of
    one video differ only where they should. With ``window = (y0, y1, x0, x1)`` only that part of
    the frame is rendered (shape (y1 - y0, x1 - x0, 3)), identical to the same pixels of the full
    frame: used to re-render just the mouth for each opening level.
    """
    s = size / 240.0 * scene.scale
    y0, y1, x0, x1 = window if window is not None else (0, size, 0, size)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(F32)
    cx, cy = size / 2.0, size * 0.50
    # In-plane roll: rotate the sampling grid about the face centre.
    c, si = np.cos(scene.tilt_rad), np.sin(scene.tilt_rad)
    x = c * (xx - cx) + si * (yy - cy)
    y = -si * (xx - cx) + c * (yy - cy)
    tex_rng = np.random.default_rng(seed)
    g = _layout(look, scene, size)
    rx, ry = g.rx, g.ry
    full, jaw, wr = look.fullness, look.jaw_width, look.wrinkles

    # Background: vertical gradient with soft blobs.
    t = (yy / size)[..., None]
    img = (1 - t) * np.asarray(scene.bg_top, F32) + t * np.asarray(scene.bg_bottom, F32)
    img = img.astype(F32)

    # Shoulders and neck: broader and thicker with fullness.
    shoulder = ry * (1.45 + 0.5 * full)
    _blend(img, scene.cloth_rgb, _sig(_ellipse_d(x, y, 0, ry * 2.05, shoulder, ry * 0.85)))
    skin = np.asarray(look.skin_rgb, F32)
    neck_w = ry * (0.26 + 0.2 * full)
    neck = _sig(np.maximum(np.abs(x) - neck_w, -(y - ry * 0.4)) * 1.0)
    neck *= _sig(y - ry * 1.45)
    _blend(img, skin * 0.78, neck)
    # Double chin: a shaded fold under the chin of full faces.
    dchin = float(np.clip((full - 0.45) / 0.55, 0.0, 1.0))
    if dchin > 0:
        lobe = _ellipse_d(x, y, 0, ry * 0.97, rx * (0.3 + 0.25 * dchin), ry * (0.04 + 0.12 * dchin))
        _blend(img, skin * 0.7, _sig(lobe))

    hair = np.asarray(look.hair_rgb, F32)
    grey_rgb = np.asarray((0.78, 0.78, 0.76), F32)
    hair_col = hair * (1 - look.grey) + grey_rgb * look.grey
    hair_tex = 1.0 + 0.12 * tex_rng.standard_normal((size, size)).astype(F32)[y0:y1, x0:x1]
    if look.hair_style == "long":
        back = _sig(_ellipse_d(x, y, 0, ry * 0.25, rx * 1.22, ry * 1.15))
        back *= _sig(y - ry * 1.0)
        _blend(img, hair_col[None, None, :] * hair_tex[..., None] * 0.8, back)

    # Ears.
    for side in (-1.0, 1.0):
        _blend(
            img,
            skin * 0.85,
            _sig(_ellipse_d(x, y, side * rx * 0.98, -ry * 0.02, ry * 0.12, ry * 0.2)),
        )

    # Head: an ellipse whose lower half tapers towards the chin (less for a wide jaw or full
    # cheeks), with a superellipse chin from pointed (jaw 0) to square (jaw 1), and jowls that
    # sag out just above the jaw line with age.
    yn = y / ry
    low = np.clip(yn, 0.0, 1.0)
    taper = 0.56 - 0.36 * jaw - 0.14 * full
    narrow = 1.0 - low**2 * taper + 0.07 * wr * np.exp(-(((yn - 0.75) / 0.12) ** 2))
    p = np.where(yn > 0, 1.6 + 2.4 * jaw, 2.0)
    ax = np.abs(x / (rx * narrow))
    head_r = (ax**p + np.abs(yn) ** p) ** (1.0 / p)
    head = _sig((head_r - 1.0) * rx)
    # Lambert shading of an ellipsoid.
    nx = np.clip(x / (rx * narrow), -1, 1)
    ny = np.clip(yn, -1, 1)
    nz = np.sqrt(np.clip(1.0 - nx**2 - ny**2, 0.0, 1.0))
    lx, ly, lz = scene.light_dir
    shade = 0.55 + 0.55 * np.clip(nx * lx + ny * ly + nz * lz, 0.0, 1.0)
    face_rgb = skin[None, None, :] * shade[..., None]
    _blend(img, face_rgb, head)

    # Eye, nose and mouth layout (units of the head's height: independent of its width).
    ey, ex = -ry * 0.08, ry * 0.31
    erx, ery = ry * 0.15, ry * 0.075
    if look.makeup:  # blush on the cheeks
        for side in (-1.0, 1.0):
            cheek = _sig(_ellipse_d(x, y, side * ex * 1.1, ry * 0.2, ry * 0.16, ry * 0.1))
            _blend(img, _BLUSH_RGB, cheek * head * 0.35)
    nw = ry * look.nose_width
    my, mw = g.mouth_y, g.mouth_w

    # Age: forehead lines, under-eye bags, nasolabial and marionette folds.
    if wr > 0.02:
        for k in range(3):
            yl = -ry * (0.42 + 0.09 * k)
            d = np.abs(y - yl - 0.04 * (x**2) / rx) - 0.9 * s
            m = _sig(d) * (np.abs(x) < rx * 0.5) * head * wr * 0.45
            _blend(img, skin * 0.55, m)
        for side in (-1.0, 1.0):
            bag = _sig(_ellipse_d(x, y, side * ex, ey + ery * 1.8, erx * 0.95, ery * 1.2))
            _blend(img, skin * 0.65, bag * wr * 0.45)
            fold = _segment_d(x, y, (side * nw * 1.1, ry * 0.22), (side * (mw + ry * 0.06), my))
            _blend(
                img, skin * 0.55, np.clip(1.0 - fold / (1.0 * s + 3.5 * s * wr), 0, 1) * wr * 0.6
            )
            mar = _segment_d(
                x,
                y,
                (side * (mw + ry * 0.02), my + ry * 0.04),
                (side * (mw + ry * 0.06), my + ry * 0.25),
            )
            _blend(img, skin * 0.6, np.clip(1.0 - mar / (1.0 * s + 2.5 * s * wr), 0, 1) * wr * 0.5)

    # Beard shadow over jaw, chin and upper lip (not the cheeks).
    if look.stubble > 0.02:
        sides = np.clip((ax - 0.55) / 0.2, 0.0, 1.0) * np.clip((yn - 0.02) / 0.2, 0.0, 1.0)
        chin = np.clip((y - ry * 0.33) / (ry * 0.12), 0.0, 1.0)
        lip = _sig(_ellipse_d(x, y, 0, ry * 0.385, ry * 0.3, ry * 0.075))
        beard = np.maximum(np.maximum(sides, chin), lip) * head
        grain = tex_rng.random((size, size)).astype(F32)[y0:y1, x0:x1]
        beard_rgb = 0.55 * _BEARD_DARK + 0.45 * hair_col
        _blend(img, beard_rgb, beard * (0.75 + 0.25 * grain) * look.stubble * 0.85)

    # Full beard and moustache: opaque hair over jaw, chin and upper lip, bulging under the chin.
    if look.beard:
        jaw_sides = np.clip((ax - 0.45) / 0.15, 0.0, 1.0) * np.clip((yn - 0.05) / 0.15, 0.0, 1.0)
        chin = np.clip((y - ry * 0.28) / (ry * 0.08), 0.0, 1.0)
        moustache = _sig(_ellipse_d(x, y, 0, ry * 0.39, ry * 0.33, ry * 0.085))
        bulk = _sig(_ellipse_d(x, y, 0, ry * 0.9, rx * 0.62, ry * 0.22))
        full_beard = np.maximum(np.maximum(jaw_sides, chin) * head, np.maximum(moustache, bulk))
        beard_col = (0.4 * _BEARD_DARK + 0.6 * hair_col)[None, None, :] * hair_tex[..., None]
        _blend(img, beard_col, full_beard * 0.92)

    # Eyes, with lids that droop (hood) with age, and brows over a brow ridge.
    ridge = float(np.clip((look.brow_thickness - 2.0) / 7.0, 0.0, 1.0))
    brow_rgb = (0.5 * hair + 0.5 * _BEARD_DARK) * (1 - look.grey) + grey_rgb * look.grey
    for side in (-1.0, 1.0):
        xe = side * ex
        by = ey - ry * look.brow_height
        socket = _sig(_ellipse_d(x, y, xe, ey - ery * 0.6, erx * 1.4, ery * 1.6 + (ey - by) * 0.5))
        _blend(img, skin * 0.62, socket * (0.25 + 0.45 * ridge))
        if look.makeup:  # eye shadow on the upper lid
            lid_shadow = _sig(_ellipse_d(x, y, xe, ey - ery * 0.9, erx * 1.15, ery * 1.5))
            _blend(img, _SHADOW_RGB, lid_shadow * 0.6)
        sclera = _sig(_ellipse_d(x, y, xe, ey, erx, ery))
        _blend(img, (0.93, 0.92, 0.90), sclera)
        iris = _sig(_ellipse_d(x, y, xe, ey, ery * 1.05, ery * 1.05)) * sclera
        _blend(img, look.eye_rgb, iris)
        pupil = _sig(_ellipse_d(x, y, xe, ey, ery * 0.5, ery * 0.5)) * sclera
        _blend(img, (0.03, 0.03, 0.03), pupil)
        hood = sclera * _sig(y - (ey - ery * (1.0 - 0.75 * wr)))
        _blend(img, skin * 0.8, hood)
        liner = (2.2 if look.makeup else 1.0) * s  # eye liner: a thicker, darker lid line
        lid = _sig(np.abs(_ellipse_d(x, y, xe, ey, erx, ery)) - liner) * (y < ey + ery * 0.3)
        _blend(img, (0.06, 0.04, 0.04) if look.makeup else (0.1, 0.07, 0.06), lid)
        # Eyebrow: an arc, arched more the higher it sits.
        arch = ry * (0.005 + 0.3 * max(look.brow_height - 0.07, 0.0))
        u = (x - xe) / (erx * 1.3)
        arc = (
            np.abs(y - by + arch * (1 - u**2) - 0.3 * arch * side * u) - look.brow_thickness * s / 2
        )
        brow = _sig(arc) * (np.abs(x - xe) < erx * 1.3)
        _blend(img, brow_rgb, brow * 0.9)

    # Nose: a shadow on the lit side's opposite, the tip, the wings and two nostrils.
    side_shadow = -1.0 if lx > 0 else 1.0
    nr = _sig(np.abs(x - side_shadow * nw * 0.45) - 1.2 * s) * (y > ey + ery) * (y < ry * 0.25)
    _blend(img, skin * 0.62, nr * 0.6)
    tip = _sig(_ellipse_d(x, y, 0, ry * 0.26, nw * 0.6, ry * 0.07))
    _blend(img, skin * 0.8, tip * 0.5)
    for side in (-1.0, 1.0):
        wing = _sig(_ellipse_d(x, y, side * nw * 0.8, ry * 0.27, nw * 0.3, ry * 0.06))
        _blend(img, skin * 0.68, wing * 0.7)
        nos = _sig(_ellipse_d(x, y, side * nw * 0.4, ry * 0.30, nw * 0.2, ry * 0.028))
        _blend(img, skin * 0.3, nos)

    # Mouth: lips, and a dark opening whose height follows the speech envelope.
    lip_h = g.lip_h
    open_h = g.open_h * float(np.clip(mouth_open, 0.0, 1.0))
    lips = _sig(_ellipse_d(x, y, 0, my, mw, lip_h + open_h * 0.55))
    lf = look.lip_fullness
    lip_rgb = skin * np.asarray((0.85, 0.55, 0.55), F32) * (1 - 0.7 * lf) + 0.7 * lf * (
        np.asarray((0.62, 0.16, 0.2), F32) * (0.55 + 0.45 * float(skin.mean()))
    )
    if look.makeup:  # lipstick
        lip_rgb = 0.25 * lip_rgb + 0.75 * _LIPSTICK_RGB
    _blend(img, lip_rgb, lips)
    gap = _sig(_ellipse_d(x, y, 0, my, mw * 0.82, max(open_h * 0.5, 0.6 * s)))
    _blend(img, (0.12, 0.04, 0.05), gap)
    if open_h > 2:
        teeth = gap * (y < my - open_h * 0.2)
        _blend(img, (0.85, 0.84, 0.8), teeth * 0.8)

    # Hair on top of the head.
    if look.hair_style != "bald":
        volume = {"short": 1.06, "long": 1.08, "curly": 1.14}[look.hair_style]
        cap = _sig(_ellipse_d(x, y, 0, -ry * 0.05, rx * volume, ry * volume * 1.02))
        hairline = -ry * (0.52 if look.hair_style != "curly" else 0.48) + 0.25 * (x**2) / rx
        cap *= _sig(y - hairline)
        tex = (
            hair_tex
            if look.hair_style != "curly"
            else 1.0 + 0.3 * np.sin(x * 0.9) * np.sin(y * 0.9)
        )
        if look.hair_style == "long":  # locks that frame the face down to the jaw
            sides = _sig(rx * 0.8 - np.abs(x)) * _sig(np.abs(x) - rx * 1.22)
            cap = np.maximum(cap, sides * _sig(-(y + ry * 0.6)) * _sig(y - ry * 0.8))
        _blend(img, hair_col[None, None, :] * tex[..., None] * (0.7 + 0.3 * shade[..., None]), cap)
    else:
        _blend(img, skin * 1.05, head * _sig(y + ry * 0.5) * 0.3)

    # Glasses: two frames and a bridge.
    if look.glasses:
        for side in (-1.0, 1.0):
            ring = _sig(np.abs(_ellipse_d(x, y, side * ex, ey, erx * 1.35, ery * 2.6)) - 1.3 * s)
            _blend(img, (0.08, 0.08, 0.08), ring)
        bridge = _sig(np.abs(y - ey + ery) - 1.0 * s) * (np.abs(x) < ex - erx * 1.3)
        _blend(img, (0.08, 0.08, 0.08), bridge)

    # Global light: gain, colour cast and a soft gradient across the frame.
    cast = np.asarray((1 + 0.08 * scene.warmth, 1.0, 1 - 0.08 * scene.warmth), F32)
    grad = 1.0 + 0.15 * (lx * (xx - cx) / size - ly * (yy - cy) / size)
    img *= (scene.light_gain * grad)[..., None] * cast
    out: np.ndarray = np.clip(img, 0.0, 1.0)
    return out
