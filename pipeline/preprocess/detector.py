"""Thin adapter around facenet-pytorch's MTCNN: batched detection on RGB frames.

facenet-pytorch's ``detect`` returns object arrays (``None`` where no face was found); this
adapter returns plain float arrays per frame instead. The MTCNN weights ship in the wheel, so no
download happens here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class DetectorConfig:
    """MTCNN settings (the field's: thresholds 0.6/0.7/0.7, factor 0.709)."""

    min_face_size_px: int
    thresholds: tuple[float, float, float]
    factor: float
    batch_size: int


@dataclass(frozen=True)
class Detections:
    """Faces of one frame: boxes (F, 4) x1 y1 x2 y2 px, probs (F,), landmarks (F, 5, 2) px."""

    boxes: np.ndarray
    probs: np.ndarray
    landmarks: np.ndarray


class FaceDetector:
    """MTCNN on the CPU or the device given; frames are (K, H, W, 3) uint8 RGB arrays."""

    def __init__(self, cfg: DetectorConfig, device: str = "cpu") -> None:
        from facenet_pytorch import MTCNN

        self.cfg = cfg
        self._mtcnn = MTCNN(
            min_face_size=cfg.min_face_size_px,
            thresholds=list(cfg.thresholds),
            factor=cfg.factor,
            keep_all=True,
            select_largest=False,
            post_process=False,
            device=device,
        )

    def detect(self, frames: np.ndarray) -> list[Detections]:
        """Detect faces in each frame (all frames must share one size)."""
        out: list[Detections] = []
        for i in range(0, len(frames), self.cfg.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(frames[i : i + self.cfg.batch_size]))
            with torch.inference_mode():
                boxes, probs, points = self._mtcnn.detect(batch, landmarks=True)
            for b, p, lm in zip(boxes, probs, points, strict=True):
                if b is None:
                    out.append(Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))))
                else:
                    out.append(
                        Detections(
                            np.asarray(b, dtype=np.float64).reshape(-1, 4),
                            np.asarray(p, dtype=np.float64).reshape(-1),
                            np.asarray(lm, dtype=np.float64).reshape(-1, 5, 2),
                        )
                    )
        return out
