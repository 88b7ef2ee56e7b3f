"""JPEG bytes <-> RGB arrays for the face crops in the ``faces`` shards.

A module of its own so that readers of the shards (training pairs, the report) need not import
the face stage's detector stack (torch).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes at ``quality``."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> (H, W, 3) uint8 RGB."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
