"""Thin adapter around facenet-pytorch's MTCNN: batched detection on RGB frames.

facenet-pytorch's ``detect`` returns object arrays (``None`` where no face was found); this
adapter returns plain float arrays per frame instead. The MTCNN weights ship in the wheel, so no
download happens here. torch and facenet-pytorch load when a detector is made, not on import (a
stage starts its Prefect server meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
    """MTCNN on the CPU or the device given; frames are (K, H, W, 3) uint8 RGB arrays.

    Calls facenet-pytorch's ``detect_face`` (what ``MTCNN.detect`` runs) with the smallest face
    for the frames' size; one detector may serve several threads."""

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
        for net in (self._mtcnn.pnet, self._mtcnn.rnet, self._mtcnn.onet):
            _pool_channels_last(net)

    def detect(self, frames: np.ndarray) -> list[Detections]:
        """Detect faces in each frame (all frames must share one size), ``cfg.batch_size`` frames
        per MTCNN call. A frame's detections depend on the frames it is batched with in the last
        float bits (candidate boxes of the whole batch go through R-Net and O-Net together), so
        callers that need a clip's results to be its own pass one clip at a time."""
        import torch
        from facenet_pytorch.models.utils.detect_face import detect_face

        out: list[Detections] = []
        m = self._mtcnn
        min_face = self.cfg.min_face_for(*frames.shape[1:3])  # not set on m: threads share it
        for i in range(0, len(frames), self.cfg.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(frames[i : i + self.cfg.batch_size]))
            with torch.inference_mode():
                boxes, points = detect_face(
                    batch, min_face, m.pnet, m.rnet, m.onet, m.thresholds, m.factor, m.device
                )
            for b, lm in zip(boxes, points, strict=True):
                b = np.asarray(b, dtype=np.float64).reshape(-1, 5)
                out.append(
                    Detections(
                        np.ascontiguousarray(b[:, :4]),
                        b[:, 4].copy(),
                        np.asarray(lm, dtype=np.float64).reshape(-1, 5, 2),
                    )
                )
        return out


def _pool_channels_last(net: Any) -> None:
    """Run each max-pooling layer of ``net`` on channels-last memory: the same maxima to the bit
    (a maximum does not depend on the order it is taken in), 3-4x faster than torch's NCHW
    pooling on the CPU for R-Net's and O-Net's batches of candidate crops, where pooling took
    about a third of MTCNN's time. The output keeps the input's layout, so every later layer
    runs the kernels it ran before (a convolution's last bits depend on the layout: P-Net's
    input, a view of the frames, is channels-last already and is left as it is)."""
    import torch
    from torch import nn

    def channels_last(pool: nn.MaxPool2d) -> Callable[[torch.Tensor], torch.Tensor]:
        plain = pool.forward

        def forward(x: torch.Tensor) -> torch.Tensor:
            if x.is_contiguous(memory_format=torch.channels_last):
                out: torch.Tensor = plain(x)
                return out
            out = plain(x.contiguous(memory_format=torch.channels_last))
            return out.contiguous()

        return forward

    for layer in net.modules():
        if isinstance(layer, nn.MaxPool2d):
            layer.forward = channels_last(layer)  # type: ignore[method-assign,assignment]
