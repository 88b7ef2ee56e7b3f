"""MTCNN's cascade without facenet-pytorch's driver: its NMS against torchvision's and
facenet-pytorch's, its weights against facenet-pytorch's nets, and what it imports. The cascade's
detections against ``detect_face`` are checked to the bit in ``tests/test_facetrack.py``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.preprocess import mtcnn
from tests.conftest import REPO


def _boxes(n: int, seed: int, frames: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Overlapping boxes with many tied scores (MTCNN's probabilities saturate at 1.0)."""
    g = np.random.default_rng(seed)
    xy = g.uniform(0, 200, (n, 2))
    side = g.uniform(10, 80, (n, 1))
    boxes = torch.from_numpy(np.hstack([xy, xy + side]).astype(np.float32))
    scores = torch.from_numpy(g.choice([1.0, 0.99, 0.9, 0.75], n).astype(np.float32))
    scores[::3] = torch.from_numpy(g.uniform(0.6, 1.0, len(scores[::3])).astype(np.float32))
    return boxes, scores, torch.from_numpy(g.integers(0, frames, n))


@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_nms_keeps_what_torchvision_keeps_in_its_order(threshold: float) -> None:
    from torchvision.ops import nms

    for seed in range(20):
        boxes, scores, _ = _boxes(150, seed)
        want = nms(boxes, scores, threshold)
        assert torch.equal(mtcnn.nms(boxes, scores, threshold), want), seed


@pytest.mark.parametrize("n", [300, 1200])  # below and above torchvision's per-frame switch
def test_batched_nms_matches_torchvision_either_side_of_its_size_switch(n: int) -> None:
    from torchvision.ops import batched_nms

    assert (n * 4 > mtcnn._PER_FRAME_NMS_NUMEL) == (n == 1200)
    for seed in range(5):
        boxes, scores, frame = _boxes(n, seed)
        got = mtcnn.batched_nms(boxes, scores, frame, 0.7)
        assert torch.equal(got, batched_nms(boxes, scores, frame, 0.7)), seed


def test_min_nms_matches_facenet_pytorchs() -> None:
    from facenet_pytorch.models.utils.detect_face import batched_nms_numpy

    for seed in range(20):
        boxes, scores, frame = _boxes(60, seed)
        want = batched_nms_numpy(boxes, scores, frame, 0.7, "Min")
        assert torch.equal(mtcnn.batched_nms_min(boxes, scores, frame, 0.7), want), seed
    empty = torch.zeros(0, 4)
    assert len(mtcnn.batched_nms(empty, torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)) == 0


def test_the_nets_carry_facenet_pytorchs_weights() -> None:
    from facenet_pytorch import MTCNN

    theirs = MTCNN()
    for ours, net in zip(mtcnn.load_nets(), (theirs.pnet, theirs.rnet, theirs.onet), strict=True):
        mine, want = ours.state_dict(), net.state_dict()
        assert mine.keys() == want.keys()
        assert all(torch.equal(mine[k], want[k]) for k in want)
        assert not ours.training


def test_detection_imports_neither_torchvision_nor_facenet_pytorch() -> None:
    """The point of the module: a faces stage process does not pay torchvision's import."""
    code = (
        "import sys, numpy as np\n"
        "from pipeline.preprocess.detector import DetectorConfig, FaceDetector\n"
        "d = FaceDetector(DetectorConfig(40, (0.6, 0.7, 0.7), 0.709, 32))\n"
        "d.detect(np.zeros((2, 120, 160, 3), np.uint8))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torchvision', "
        "'facenet_pytorch')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_missing_facenet_pytorch_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mtcnn.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="facenet-pytorch is not installed"):
        mtcnn.weights_dir()


@pytest.mark.parametrize(
    "shape",
    [
        (3, 96, 128, 3),  # a blank frame: P-Net finds no candidate window
        (2, 32, 48, 3),  # shorter side 32 px, faces from 40 px: no pyramid level fits
    ],
)
def test_a_frame_without_a_face_to_find_has_no_faces(shape: tuple[int, ...]) -> None:
    frames = torch.full(shape, 128, dtype=torch.uint8)
    with torch.inference_mode():
        found = mtcnn.detect(frames, 40, mtcnn.load_nets(), (0.6, 0.7, 0.7), 0.709)
    assert [(b.shape, p.shape) for b, p in found] == [((0, 5), (0, 5, 2))] * shape[0]
