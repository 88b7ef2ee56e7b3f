"""MTCNN's cascade (Zhang et al., IEEE SPL 2016) on facenet-pytorch's trained nets, without
importing facenet-pytorch or torchvision.

facenet-pytorch's ``detect_face`` is the field's MTCNN. Importing it pulls in torchvision (for
``batched_nms``), whose import costs ~1.7 CPU-s (``torch._dynamo`` through ``roi_align``) in
every process that detects faces: a third of the faces stage's start-up. This module defines
the three nets (the same layers as facenet-pytorch's ``PNet``, ``RNet``, ``ONet``), loads their
weights from the files the facenet-pytorch wheel ships (found with ``importlib``'s spec, which
does not run the package), and runs the cascade with the same arithmetic, so its boxes,
probabilities and landmarks equal ``detect_face``'s to the bit (``tests/test_facetrack.py``
compares them on synthetic and real footage):

1. **Proposal (P-Net)**: an image pyramid from ``12 / min_face`` of the frame down by ``factor``
   while the shorter side stays >= 12 px (area resampling); P-Net's 12-px windows with face
   probability >= ``thresholds[0]``; NMS (IoU 0.5) per level and frame, then (IoU 0.7) per frame;
   boxes refined by P-Net's regression and squared.
2. **Refinement (R-Net)**: each box cut from the frame, resampled to 24 x 24; kept above
   ``thresholds[1]``; NMS (IoU 0.7); refined and squared.
3. **Output (O-Net)**: 48 x 48 crops; kept above ``thresholds[2]``; five landmarks; refined; NMS
   with the intersection over the smaller box ("Min", 0.7).

Faster than ``detect_face`` on the CPU, the same numbers: max pooling runs on channels-last
memory (a maximum does not depend on the order it is taken in); the R-Net and O-Net crops are
resampled from a channels-first copy of the frames (area resampling takes the same sums in the
same order on either layout, and is 2-3x faster on contiguous rows) and handed to the nets in
the channels-last layout ``detect_face`` gives them (a convolution's last bits depend on it);
NMS is torchvision's greedy algorithm with IoUs computed as its kernel computes them (float32,
the same operations), compared in double precision as it compares them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.functional import interpolate

#: Above this many box coordinates torchvision's ``batched_nms`` runs NMS per frame instead of
#: offsetting each frame's boxes apart (its CPU threshold); the two round differently.
_PER_FRAME_NMS_NUMEL = 4000

AREA = "area"  # resampling by the mean over each output pixel's footprint (adaptive pooling)


def weights_dir() -> Path:
    """The folder of MTCNN's weight files in the installed facenet-pytorch (not imported)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "facenet-pytorch is not installed: MTCNN's weights come from its wheel "
            "(pip install facenet-pytorch==2.5.3)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


class _PoolChannelsLast(nn.MaxPool2d):
    """Max pooling on channels-last memory, returning the input's layout: the same maxima to the
    bit, 3-4x faster than NCHW pooling on the CPU for batches of small crops."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous(memory_format=torch.channels_last):
            pooled: torch.Tensor = super().forward(x)
            return pooled
        out: torch.Tensor = super().forward(x.contiguous(memory_format=torch.channels_last))
        return out.contiguous()


class PNet(nn.Module):
    """The proposal net: a fully convolutional 12-px window classifier and box regressor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = _PoolChannelsLast(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.softmax4_1 = nn.Conv2d(32, 2, 1), nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class RNet(nn.Module):
    """The refinement net on 24 x 24 crops: face probability and box regression."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = _PoolChannelsLast(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = _PoolChannelsLast(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.softmax5_1 = nn.Linear(128, 2), nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).contiguous()
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nn.Module):
    """The output net on 48 x 48 crops: face probability, box regression, five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = _PoolChannelsLast(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = _PoolChannelsLast(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = _PoolChannelsLast(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.softmax6_1 = nn.Linear(256, 2), nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


def load_nets() -> tuple[PNet, RNet, ONet]:
    """The three nets with facenet-pytorch's trained weights, in eval mode, on the CPU (the
    cascade between them runs on numpy)."""
    folder = weights_dir()
    nets = (PNet(), RNet(), ONet())
    for net, name in zip(nets, ("pnet", "rnet", "onet"), strict=True):
        path = folder / f"{name}.pt"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as e:
            raise RuntimeError(f"{path}: cannot load MTCNN weights: {e}") from e
        net.load_state_dict(state)
        net.eval()
    return nets


# ---------------------------------------------------------------- NMS


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS as torchvision's CPU kernel runs it: boxes by descending score, ties in index
    order (a stable sort: the order the kernel's sort gives, ``tests/test_mtcnn.py``); each kept
    box suppresses the boxes whose IoU with it exceeds ``threshold``. IoUs are float32, computed
    with the kernel's operations in its order; the comparison is in double, as the kernel's is.
    One kept box's IoUs at a time: memory grows with the boxes, not with their square (P-Net
    finds tens of thousands of windows on a large frame when small faces are searched for)."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64)
    x1, y1, x2, y2 = (boxes[:, k].contiguous().numpy() for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    order = scores.sort(dim=0, descending=True, stable=True)[1].numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        w = np.maximum(np.minimum(x2[i], x2) - np.maximum(x1[i], x1), np.float32(0))
        h = np.maximum(np.minimum(y2[i], y2) - np.maximum(y1[i], y1), np.float32(0))
        inter = w * h
        suppressed |= (inter / (areas[i] + areas - inter)).astype(np.float64) > threshold
    return torch.as_tensor(np.array(keep, dtype=np.int64))


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, frame: torch.Tensor, threshold: float
) -> torch.Tensor:
    """NMS within each frame, as torchvision's ``batched_nms`` does it on the CPU: frames' boxes
    offset apart by ``frame x (max coordinate + 1)``, or, above its size threshold, NMS per frame
    with the kept boxes ordered by descending score."""
    if boxes.numel() > _PER_FRAME_NMS_NUMEL:
        keep_mask = torch.zeros_like(scores, dtype=torch.bool)
        for f in torch.unique(frame):
            idx = torch.where(frame == f)[0]
            keep_mask[idx[nms(boxes[idx], scores[idx], threshold)]] = True
        kept = torch.where(keep_mask)[0]
        return kept[scores[kept].sort(descending=True)[1]]
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64)
    offsets = frame.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, threshold)


def nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """O-Net's NMS: overlap is the intersection over the smaller box (pixel-inclusive areas);
    boxes by ascending ``np.argsort`` taken from the end, as MTCNN's reference code does."""
    x1, y1, x2, y2 = (boxes[:, k].copy() for k in range(4))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    pick = []
    while order.size > 0:
        i, rest = order[-1], order[:-1]
        pick.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        overlap = w * h / np.minimum(area[i], area[rest])
        order = rest[np.where(overlap <= threshold)]
    return np.array(pick, dtype=np.int16)


def batched_nms_min(
    boxes: torch.Tensor, scores: torch.Tensor, frame: torch.Tensor, threshold: float
) -> torch.Tensor:
    """:func:`nms_min` within each frame (frames' boxes offset apart)."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64)
    offsets = frame.to(boxes) * (boxes.max() + 1)
    keep = nms_min((boxes + offsets[:, None]).numpy(), scores.numpy(), threshold)
    return torch.as_tensor(keep, dtype=torch.long)


# ---------------------------------------------------------------- box arithmetic


def _windows(
    reg: torch.Tensor, probs: torch.Tensor, scale: float, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """P-Net's windows above ``threshold`` at one pyramid level, in frame pixels: rows of
    (x1, y1, x2, y2, score, 4 regression offsets), and each row's frame."""
    reg = reg.permute(1, 0, 2, 3)
    mask = probs >= threshold
    where = mask.nonzero()
    cells = where[:, 1:].type(reg.dtype).flip(1)
    q1 = ((2 * cells + 1) / scale).floor()
    q2 = ((2 * cells + 12 - 1 + 1) / scale).floor()
    rows = torch.cat([q1, q2, probs[mask].unsqueeze(1), reg[:, mask].permute(1, 0)], dim=1)
    return rows, where[:, 0]


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Boxes moved by the nets' regression (offsets in units of the pixel-inclusive side)."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    moved = [boxes[:, k] + reg[:, k] * s for k, s in enumerate((w, h, w, h))]
    boxes[:, :4] = torch.stack(moved).permute(1, 0)
    return boxes


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Each box made square on its longer side, about its centre."""
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = torch.max(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side.repeat(2, 1).permute(1, 0)
    return boxes


def _crops(
    planar: torch.Tensor, boxes: torch.Tensor, frame: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each box cut from its frame (clipped to it, 1-based inclusive as MTCNN's reference code
    indexes) and area-resampled to ``size`` x ``size``, normalised, channels-last; and which boxes
    had a non-empty cut (the rows' boxes)."""
    h, w = planar.shape[2:4]
    b = boxes.trunc().int().numpy()
    x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    ex, ey = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    valid = torch.from_numpy((ey > y - 1) & (ex > x - 1))
    f = frame.numpy()
    cut = [
        interpolate(planar[f[k] : f[k] + 1, :, y[k] - 1 : ey[k], x[k] - 1 : ex[k]], size, mode=AREA)
        for k in np.flatnonzero(valid.numpy())
    ]
    if not cut:
        return torch.zeros(0, 3, size, size), valid
    data = torch.cat(cut, dim=0)
    return (data - 127.5) * 0.0078125, valid


def _in_chunks(net: nn.Module, data: torch.Tensor, chunk: int = 512) -> tuple[torch.Tensor, ...]:
    """``net`` over ``data`` in chunks of ``chunk`` crops (as MTCNN's reference code runs it)."""
    outs = [net(data[i : i + chunk]) for i in range(0, len(data), chunk)]
    return tuple(torch.cat(parts, dim=0) for parts in zip(*outs, strict=True))


# ---------------------------------------------------------------- the cascade


def detect(
    frames: torch.Tensor,
    min_face: int,
    nets: tuple[PNet, RNet, ONet],
    thresholds: tuple[float, float, float],
    factor: float,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Faces in each of ``frames`` ((N, H, W, 3) uint8 RGB): per frame (boxes (F, 5) float32
    x1 y1 x2 y2 probability, landmarks (F, 5, 2) float32 px). Call under ``torch.inference_mode``.
    Candidate boxes of all frames go through R-Net and O-Net together, so a frame's results can
    depend in the last bits on the frames it is passed with."""
    pnet, rnet, onet = nets
    imgs = frames.permute(0, 3, 1, 2).type(torch.float32)  # channels-last memory, as detect_face
    boxes, frame = _propose(imgs, min_face, pnet, thresholds[0], factor)
    points = torch.zeros(0, 5, 2)
    if len(boxes) > 0:
        planar = imgs.contiguous()  # the crops' source: rows contiguous (see the module doc)
        boxes, frame = _refine(planar, boxes, frame, rnet, thresholds[1])
        if len(boxes) > 0:
            boxes, frame, points = _output(planar, boxes, frame, onet, thresholds[2])
    b, p, f = boxes.numpy(), points.numpy(), frame.numpy()
    return [(b[f == i].copy(), p[f == i].copy()) for i in range(len(imgs))]


def _propose(
    imgs: torch.Tensor, min_face: int, pnet: PNet, threshold: float, factor: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1: P-Net over the pyramid; NMS per level and per frame; regressed, squared boxes."""
    h, w = imgs.shape[2:4]
    m = 12.0 / min_face
    side = min(h, w) * m
    scales = []
    scale = m
    while side >= 12:
        scales.append(scale)
        scale, side = scale * factor, side * factor
    if not scales:  # a frame smaller than the smallest face searched for holds none (facenet-
        # pytorch's detect_face fails here instead, concatenating an empty list)
        return torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)
    rows, frames, picks, offset = [], [], [], 0
    for scale in scales:
        level = interpolate(imgs, size=(int(h * scale + 1), int(w * scale + 1)), mode=AREA)
        reg, probs = pnet((level - 127.5) * 0.0078125)
        r, f = _windows(reg, probs[:, 1], scale, threshold)
        rows.append(r)
        frames.append(f)
        picks.append(batched_nms(r[:, :4], r[:, 4], f, 0.5) + offset)
        offset += r.shape[0]
    boxes, frame = torch.cat(rows)[torch.cat(picks)], torch.cat(frames)[torch.cat(picks)]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], frame, 0.7)
    boxes, frame = boxes[pick], frame[pick]
    regw = boxes[:, 2] - boxes[:, 0]
    regh = boxes[:, 3] - boxes[:, 1]
    moved = [boxes[:, k] + boxes[:, 5 + k] * s for k, s in enumerate((regw, regh, regw, regh))]
    return _square(torch.stack([*moved, boxes[:, 4]]).permute(1, 0)), frame


def _refine(
    planar: torch.Tensor, boxes: torch.Tensor, frame: torch.Tensor, rnet: RNet, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2: R-Net on 24 x 24 crops; kept above ``threshold``; NMS; regressed, squared."""
    data, valid = _crops(planar, boxes, frame, 24)
    boxes, frame = boxes[valid], frame[valid]
    if len(boxes) == 0:
        return boxes[:, :5], frame
    reg, prob = _in_chunks(rnet, data)
    score = prob[:, 1]
    keep = score > threshold
    boxes = torch.cat((boxes[keep, :4], score[keep].unsqueeze(1)), dim=1)
    frame, reg = frame[keep], reg[keep]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], frame, 0.7)
    return _square(_regress(boxes[pick], reg[pick])), frame[pick]


def _output(
    planar: torch.Tensor, boxes: torch.Tensor, frame: torch.Tensor, onet: ONet, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 3: O-Net on 48 x 48 crops; kept above ``threshold``; landmarks in frame pixels;
    regressed boxes; NMS by the smaller box ("Min")."""
    data, valid = _crops(planar, boxes, frame, 48)
    boxes, frame = boxes[valid], frame[valid]
    if len(boxes) == 0:
        return boxes[:, :5], frame, torch.zeros(0, 5, 2)
    reg, marks, prob = _in_chunks(onet, data)
    score = prob[:, 1]
    keep = score > threshold
    marks, reg, frame = marks[keep], reg[keep], frame[keep]
    boxes = torch.cat((boxes[keep, :4], score[keep].unsqueeze(1)), dim=1)
    w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    xs = w * marks[:, :5] + boxes[:, 0:1] - 1
    ys = h * marks[:, 5:10] + boxes[:, 1:2] - 1
    points = torch.stack((xs, ys), dim=2)
    boxes = _regress(boxes, reg)
    pick = batched_nms_min(boxes[:, :4], boxes[:, 4], frame, 0.7)
    return boxes[pick], frame[pick], points[pick]
