"""A small numpy face renderer: a shaded head with hair, eyes, brows, nose and a talking mouth.

Not a photo, but realistic enough for MTCNN (trained on real faces) to find it reliably: skin
tones, Lambert shading of an ellipsoid head, dark eyes with white sclera, eyebrows, a nose shadow
and lips. Face parameters (see :mod:`pipeline.synth.people`) move geometry and colour; per-video
parameters set lighting, background, clothing and camera.
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


@dataclass(frozen=True)
class FaceLook:
    """Identity-level appearance, in renderer units (derived from the face parameters)."""

    face_width: float  # head half-width as a fraction of the canvas, ~0.20-0.25
    jaw_width: float  # 0 (pointed) .. 1 (square)
    brow_thickness: float  # px at 224
    brow_height: float  # fraction of head height above the eyes
    wrinkles: float  # 0..1
    grey: float  # 0..1 share of grey in hair and brows
    skin_rgb: tuple[float, float, float]
    nose_width: float  # fraction of head width
    lip_fullness: float  # 0..1
    stubble: float  # 0..1
    hair_rgb: tuple[float, float, float]
    hair_style: str
    eye_rgb: tuple[float, float, float]
    glasses: bool


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


def _blend(
    img: np.ndarray, rgb: tuple[float, float, float] | np.ndarray, alpha: np.ndarray
) -> None:
    """In place: img = img * (1 - alpha) + rgb * alpha. ``rgb`` may be a colour or an image."""
    a = alpha[..., None]
    img *= 1.0 - a
    img += a * np.asarray(rgb, dtype=F32)


def mouth_window(look: FaceLook, scene: Scene, size: int) -> tuple[int, int, int, int]:
    """Pixel box ``(y0, y1, x0, x1)`` that contains everything the mouth opening changes."""
    rx = look.face_width * size * scene.scale
    ry = rx * 1.32
    my = ry * 0.50
    cx, cy = size / 2.0, size * 0.50
    mx_img = cx - np.sin(scene.tilt_rad) * my
    my_img = cy + np.cos(scene.tilt_rad) * my
    hw, hh = rx * 0.5 + 6, ry * 0.25 + 6
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

    # Background: vertical gradient with soft blobs.
    t = (yy / size)[..., None]
    img = (1 - t) * np.asarray(scene.bg_top, F32) + t * np.asarray(scene.bg_bottom, F32)
    img = img.astype(F32)

    rx = look.face_width * size * scene.scale
    ry = rx * 1.32
    # Shoulders and neck.
    _blend(img, scene.cloth_rgb, _sig(_ellipse_d(x, y, 0, ry * 2.05, rx * 2.3, ry * 0.85)))
    skin = np.asarray(look.skin_rgb, F32)
    neck = _sig(np.maximum(np.abs(x) - rx * 0.55, -(y - ry * 0.4)) * 1.0)
    neck *= _sig(y - ry * 1.45)
    _blend(img, skin * 0.78, neck)

    hair = np.asarray(look.hair_rgb, F32)
    hair_tex = 1.0 + 0.12 * tex_rng.standard_normal((size, size)).astype(F32)[y0:y1, x0:x1]
    if look.hair_style == "long":
        back = _sig(_ellipse_d(x, y, 0, ry * 0.25, rx * 1.22, ry * 1.15))
        back *= _sig(y - ry * 1.0)
        _blend(img, hair[None, None, :] * hair_tex[..., None] * 0.8, back)

    # Ears.
    for side in (-1.0, 1.0):
        _blend(
            img,
            skin * 0.85,
            _sig(_ellipse_d(x, y, side * rx * 0.98, -ry * 0.02, rx * 0.16, ry * 0.2)),
        )

    # Head: ellipse whose lower half narrows towards the chin depending on jaw width.
    yn = y / ry
    narrow = 1.0 - np.clip(yn, 0.0, 1.0) ** 2 * (0.45 - 0.3 * look.jaw_width)
    head_d = (np.sqrt((x / (rx * narrow)) ** 2 + yn**2) - 1.0) * rx
    head = _sig(head_d)
    # Lambert shading of an ellipsoid.
    nx = np.clip(x / (rx * narrow), -1, 1)
    ny = np.clip(yn, -1, 1)
    nz = np.sqrt(np.clip(1.0 - nx**2 - ny**2, 0.0, 1.0))
    lx, ly, lz = scene.light_dir
    shade = 0.55 + 0.55 * np.clip(nx * lx + ny * ly + nz * lz, 0.0, 1.0)
    face_rgb = skin[None, None, :] * shade[..., None]
    _blend(img, face_rgb, head)

    # Wrinkles: forehead lines and nasolabial folds.
    if look.wrinkles > 0.05:
        for k in range(3):
            yl = -ry * (0.42 + 0.09 * k)
            d = np.abs(y - yl - 0.04 * (x**2) / rx) - 0.8 * s
            m = _sig(d) * (np.abs(x) < rx * 0.45) * head * look.wrinkles * 0.35
            _blend(img, skin * 0.55, m)
        for side in (-1.0, 1.0):
            d = np.abs((x - side * rx * 0.22) - side * 0.35 * (y - ry * 0.15)) - 0.8 * s
            m = _sig(d) * (y > ry * 0.05) * (y < ry * 0.42) * look.wrinkles * 0.4
            _blend(img, skin * 0.6, m)

    # Stubble on the lower face.
    if look.stubble > 0.05:
        low = np.clip((y - ry * 0.2) / (ry * 0.2), 0.0, 1.0) * head
        low *= 1.0 - _sig(_ellipse_d(x, y, 0, ry * 0.36, rx * 0.32, ry * 0.14))
        grain = tex_rng.random((size, size)).astype(F32)[y0:y1, x0:x1] < 0.5
        _blend(img, hair * 0.9, low * grain * look.stubble * 0.55)

    # Eyes.
    ey = -ry * 0.08
    ex = rx * 0.40
    erx, ery = rx * 0.20, ry * 0.075
    for side in (-1.0, 1.0):
        xe = side * ex
        socket = _sig(_ellipse_d(x, y, xe, ey - ery * 0.3, erx * 1.35, ery * 2.0))
        _blend(img, skin * 0.7, socket * 0.5)
        sclera = _sig(_ellipse_d(x, y, xe, ey, erx, ery))
        _blend(img, (0.93, 0.92, 0.90), sclera)
        iris = _sig(_ellipse_d(x, y, xe, ey, ery * 1.05, ery * 1.05)) * sclera
        _blend(img, look.eye_rgb, iris)
        pupil = _sig(_ellipse_d(x, y, xe, ey, ery * 0.5, ery * 0.5)) * sclera
        _blend(img, (0.03, 0.03, 0.03), pupil)
        lid = _sig(np.abs(_ellipse_d(x, y, xe, ey, erx, ery)) - 1.0 * s) * (y < ey)
        _blend(img, (0.1, 0.07, 0.06), lid)
        # Eyebrow: a thick arc.
        by = ey - ry * look.brow_height
        arc = (
            np.abs(y - by + 0.35 * ery * (1 - ((x - xe) / (erx * 1.3)) ** 2))
            - look.brow_thickness * s / 2
        )
        brow = _sig(arc) * (np.abs(x - xe) < erx * 1.3)
        brow_rgb = hair * (1 - look.grey) + np.asarray((0.75, 0.75, 0.75), F32) * look.grey
        _blend(img, brow_rgb * 0.8, brow)

    # Nose: a shadow on the lit side's opposite and two nostrils.
    nw = rx * look.nose_width
    side_shadow = -1.0 if lx > 0 else 1.0
    ridge = _sig(np.abs(x - side_shadow * nw * 0.45) - 1.2 * s) * (y > ey + ery) * (y < ry * 0.25)
    _blend(img, skin * 0.62, ridge * 0.6)
    tip = _sig(_ellipse_d(x, y, 0, ry * 0.26, nw * 0.75, ry * 0.07))
    _blend(img, skin * 0.8, tip * 0.5)
    for side in (-1.0, 1.0):
        nos = _sig(_ellipse_d(x, y, side * nw * 0.38, ry * 0.30, nw * 0.2, ry * 0.028))
        _blend(img, skin * 0.3, nos)

    # Mouth: lips, and a dark opening whose height follows the speech envelope.
    my = ry * 0.50
    mw = rx * 0.36
    lip_h = ry * (0.045 + 0.035 * look.lip_fullness)
    open_h = ry * 0.13 * float(np.clip(mouth_open, 0.0, 1.0))
    lips = _sig(_ellipse_d(x, y, 0, my, mw, lip_h + open_h * 0.55))
    lip_rgb = skin * np.asarray((0.85, 0.55, 0.55), F32)
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
        hair_col = hair * (1 - look.grey) + np.asarray((0.78, 0.78, 0.76), F32) * look.grey
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
