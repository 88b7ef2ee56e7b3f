"""The faces stage's detector: MTCNN (facenet-pytorch's trained weights) on batches of RGB frames.

The cascade is :mod:`pipeline.preprocess.mtcnn`; this module holds its settings and returns
plain float arrays per frame. The MTCNN weights ship in the facenet-pytorch wheel, so no download
happens here. torch loads when a detector is made, not on import (a stage starts its Prefect
server meanwhile).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pipeline.params import FaceStageParams


@dataclass(frozen=True)
class DetectorConfig:
    """MTCNN settings (the field's: thresholds 0.6/0.7/0.7, factor 0.709, min face 20 px).

    ``min_face_fraction`` raises the smallest face searched for to that share of the frame's
    shorter side (``max(min_face_size_px, fraction x side)``): in a face track the face fills much
    of the frame, and MTCNN's image pyramid starts at ``12 / min_face`` of the frame, so its
    largest (costliest) levels look only for faces smaller than any the track can hold.
    """

    min_face_size_px: int
    thresholds: tuple[float, float, float]
    factor: float
    batch_size: int
    min_face_fraction: float = 0.0

    @classmethod
    def of(cls, p: FaceStageParams) -> DetectorConfig:
        """The detector settings of the ``face`` params section."""
        return cls(p.min_face_size_px, p.thresholds, p.factor, p.batch_size, p.min_face_fraction)

    def min_face_for(self, height: int, width: int) -> int:
        """The smallest face side (px) searched for in frames of this size."""
        return max(self.min_face_size_px, int(self.min_face_fraction * min(height, width)))


@dataclass(frozen=True)
class Detections:
    """Faces of one frame: boxes (F, 4) x1 y1 x2 y2 px, probs (F,), landmarks (F, 5, 2) px."""

    boxes: np.ndarray
    probs: np.ndarray
    landmarks: np.ndarray


class FaceDetector:
    """MTCNN on the CPU; frames are (K, H, W, 3) uint8 RGB arrays (the cascade sorts and
    filters candidate boxes with numpy between its nets, so it runs where numpy does).

    Runs :func:`pipeline.preprocess.mtcnn.detect` (facenet-pytorch's trained nets, its
    ``detect_face`` arithmetic, neither facenet-pytorch nor torchvision imported) with the
    smallest face for the frames' size; one detector may serve several threads."""

    def __init__(self, cfg: DetectorConfig) -> None:
        from pipeline.preprocess import mtcnn

        self.cfg = cfg
        self._nets = mtcnn.load_nets()

    def detect(self, frames: np.ndarray) -> list[Detections]:
        """Detect faces in each frame (all frames must share one size), ``cfg.batch_size`` frames
        per MTCNN call. A frame's detections depend on the frames it is batched with in the last
        float bits (candidate boxes of the whole batch go through R-Net and O-Net together), so
        callers that need a clip's results to be its own pass one clip at a time."""
        import torch

        from pipeline.preprocess import mtcnn

        out: list[Detections] = []
        min_face = self.cfg.min_face_for(*frames.shape[1:3])
        for i in range(0, len(frames), self.cfg.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(frames[i : i + self.cfg.batch_size]))
            with torch.inference_mode():
                found = mtcnn.detect(
                    batch, min_face, self._nets, self.cfg.thresholds, self.cfg.factor
                )
            for b, lm in found:
                b = b.astype(np.float64).reshape(-1, 5)
                out.append(
                    Detections(
                        np.ascontiguousarray(b[:, :4]),
                        b[:, 4].copy(),
                        lm.astype(np.float64).reshape(-1, 5, 2),
                    )
                )
        return out
