"""Face and voice encoders into a d-dimensional embedding space. No loss code here.

- ``face_cnn`` / ``voice_cnn``: small CNNs that train on a 2-core CPU in minutes: faces as
  (B, 3, S, S) crops, voices as (B, n_mels, T) log-mel crops (the 2-D CNN reads the log-mel
  plane as an image).
- ``voice_tdnn`` (the default): a 1-D time-delay network over the log-mel frames, the mel bins as
  channels, with mean and standard-deviation pooling over time: the x-vector layout of speaker
  recognition (Snyder et al., "X-vectors: robust DNN embeddings for speaker recognition",
  ICASSP 2018) at a small width. About 4x fewer operations than ``voice_cnn`` for the same crop.
- ``face_resnet34``: torchvision's ResNet-34 (random init) with an embedding head, CMPC's face
  encoder. ``voice_resnet34`` / ``voice_thin_resnet34``: ResNet-34 block layout over the
  log-mel "image", full width (CMPC) or thin (channels 32-256, Wen's voice encoder).
- ``face_facenet_frozen``: the optional frozen-embedding front end, facenet-pytorch's
  InceptionResnetV1 with VGGFace2 weights (frozen) and a trainable MLP head. The weights are
  downloaded on first use by facenet-pytorch; with ``VOXFACE_NO_DOWNLOAD=1`` (or offline) a
  missing weights file is an error that names the path to put it at.
- Heads shared by both modalities after the encoders: ``none`` or ``shared_residual``
  (:class:`SharedResidual`, bipseudo's cross-modal weighted residual block).

Tensors follow their inputs' device; nothing here assumes CUDA.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, stride: int, kernel: int = 3, dims: int = 2) -> nn.Sequential:
    """Convolution (no bias, "same" padding), batch norm, ReLU; 2-D images or 1-D sequences."""
    conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv1d, nn.BatchNorm1d)
    return nn.Sequential(
        conv(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        norm(cout),
        nn.ReLU(inplace=True),
    )


def _tower(cin: int, w: int) -> nn.Sequential:
    """Four stride-2 conv blocks of widths w, 2w, 4w, 8w."""
    return nn.Sequential(
        _conv_bn(cin, w, 2),
        _conv_bn(w, 2 * w, 2),
        _conv_bn(2 * w, 4 * w, 2),
        _conv_bn(4 * w, 8 * w, 2),
    )


class FaceCNN(nn.Module):
    """Four stride-2 conv blocks, global average pooling, linear head. (B, 3, S, S) -> (B, d).

    Convolutions run in the channels-last memory layout (about 15 % faster on CPU with oneDNN).
    """

    def __init__(self, dim: int, width: int = 32) -> None:
        super().__init__()
        self.body = _tower(3, width).to(memory_format=torch.channels_last)
        self.head = nn.Linear(8 * width, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x.contiguous(memory_format=torch.channels_last))
        out: torch.Tensor = self.head(h.mean(dim=(2, 3)))  # (B, d)
        return out


class VoiceCNN(nn.Module):
    """Conv blocks over the (mel, time) plane, mean over both, linear head.
    (B, n_mels, T) -> (B, d)."""

    def __init__(self, dim: int, width: int = 32) -> None:
        super().__init__()
        self.body = _tower(1, width)
        self.head = nn.Linear(8 * width, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.body(x[:, None]).mean(dim=(2, 3)))  # (B, d)
        return out


class VoiceTDNN(nn.Module):
    """Four 1-D conv blocks over time (mel bins as input channels; strides 1, 2, 2, 2), mean and
    standard deviation over time, linear head. (B, n_mels, T) -> (B, d).

    Built for ``n_mels`` bins (the voice stage's default 64); features with another number of
    bins are resampled along the mel axis to ``n_mels`` (linear interpolation).
    """

    def __init__(self, dim: int, n_mels: int = 64, width: int = 64) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.body = nn.Sequential(
            _conv_bn(n_mels, width, 1, kernel=5, dims=1),
            _conv_bn(width, 2 * width, 2, dims=1),
            _conv_bn(2 * width, 2 * width, 2, dims=1),
            _conv_bn(2 * width, 4 * width, 2, dims=1),
        )
        self.head = nn.Linear(8 * width, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.n_mels:
            x = torch.nn.functional.interpolate(
                x.transpose(1, 2), size=self.n_mels, mode="linear", align_corners=True
            ).transpose(1, 2)
        h = self.body(x)  # (B, 4w, T / 8)
        stats = torch.cat([h.mean(dim=2), (h.var(dim=2, unbiased=False) + 1e-5).sqrt()], dim=1)
        out: torch.Tensor = self.head(stats)
        return out


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.skip(x))


class VoiceResNet34(nn.Module):
    """ResNet-34 layout (3, 4, 6, 3 basic blocks) over the log-mel plane; ``widths`` 64-512 is
    the full network, 32-256 the "thin" one. (B, n_mels, T) -> (B, d)."""

    def __init__(self, dim: int, widths: tuple[int, int, int, int]) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(1, widths[0], 1)]
        cin = widths[0]
        for i, (n, w) in enumerate(zip((3, 4, 6, 3), widths, strict=True)):
            for k in range(n):
                layers.append(_Basic(cin, w, 2 if (k == 0 and i > 0) else 1))
                cin = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.body(x[:, None]).mean(dim=(2, 3)))
        return out


def face_resnet34(dim: int) -> nn.Module:
    """torchvision ResNet-34, random init (CMPC trains from scratch), fc -> dim."""
    from torchvision.models import resnet34

    net: nn.Module = resnet34(weights=None)
    net.fc = nn.Linear(512, dim)
    return net


class FrozenFaceNet(nn.Module):
    """Frozen InceptionResnetV1 (512-d, 160x160 input) + trainable MLP head 512 -> 512 -> dim.

    (B, 3, S, S) in [0, 1] -> resized to 160 and scaled as facenet expects -> (B, dim). The
    backbone stays in eval mode and gets no gradients.
    """

    def __init__(self, dim: int, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone.eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.head = nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, dim))

    def train(self, mode: bool = True) -> FrozenFaceNet:
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(
            x, size=(160, 160), mode="bilinear", align_corners=False
        )
        with torch.no_grad():
            e = self.backbone((x - 0.5) / (128.0 / 255.0))  # (B, 512)
        out: torch.Tensor = self.head(e)
        return out


def facenet_weights_path() -> Path:
    """Where facenet-pytorch keeps the VGGFace2 weights (``$TORCH_HOME/checkpoints``)."""
    from facenet_pytorch.models.inception_resnet_v1 import get_torch_home

    return Path(get_torch_home()) / "checkpoints" / "20180402-114759-vggface2.pt"


def face_facenet_frozen(dim: int) -> nn.Module:
    """The frozen front end with VGGFace2 weights (downloaded by facenet-pytorch if missing,
    unless ``VOXFACE_NO_DOWNLOAD=1``)."""
    from facenet_pytorch import InceptionResnetV1

    path = facenet_weights_path()
    if not path.is_file():
        if os.environ.get("VOXFACE_NO_DOWNLOAD") == "1":
            raise FileNotFoundError(
                f"{path}: facenet VGGFace2 weights not found (face_encoder face_facenet_frozen); "
                "put the file there or allow the download (unset VOXFACE_NO_DOWNLOAD)"
            )
        try:
            return FrozenFaceNet(dim, InceptionResnetV1(pretrained="vggface2"))
        except Exception as e:  # urllib raises many types when offline
            raise FileNotFoundError(
                f"{path}: facenet VGGFace2 weights missing and the download failed ({e})"
            ) from e
    net = InceptionResnetV1(pretrained=None, classify=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    # The file carries the VGGFace2 classifier too; the embedding network is everything else.
    net.load_state_dict({k: v for k, v in state.items() if not k.startswith("logits.")})
    return FrozenFaceNet(dim, net)


class SharedResidual(nn.Module):
    """bipseudo's cross-modal weighted residual block, one instance for both modalities:
    ``normalise(z + α ⊙ g(z))``, ``g`` = FC–BN–ReLU–FC, ``α`` (d,) learned, starting at 0.5.
    The FC weights and α are shared; each modality keeps its own BatchNorm statistics (one
    shared BN would mix the two modalities' running statistics). (B, d) -> (B, d)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.bn = nn.ModuleDict({"face": nn.BatchNorm1d(dim), "voice": nn.BatchNorm1d(dim)})
        self.alpha = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, z: torch.Tensor, modality: str) -> torch.Tensor:
        g = self.fc2(torch.relu(self.bn[modality](self.fc1(z))))
        return torch.nn.functional.normalize(z + self.alpha * g, dim=1)


class NoHead(nn.Module):
    """The identity head: embeddings are the encoders' outputs."""

    def forward(self, z: torch.Tensor, modality: str) -> torch.Tensor:
        return z


HEADS = ("none", "shared_residual")


def build_head(name: str, dim: int) -> nn.Module:
    if name == "none":
        return NoHead()
    if name == "shared_residual":
        return SharedResidual(dim)
    raise ValueError(f"unknown head {name!r}; expected one of {HEADS}")


FACE_ENCODERS = ("face_cnn", "face_resnet34", "face_facenet_frozen")
VOICE_ENCODERS = ("voice_tdnn", "voice_cnn", "voice_resnet34", "voice_thin_resnet34")


def build_face_encoder(name: str, dim: int) -> nn.Module:
    if name == "face_cnn":
        return FaceCNN(dim)
    if name == "face_resnet34":
        return face_resnet34(dim)
    if name == "face_facenet_frozen":
        return face_facenet_frozen(dim)
    raise ValueError(f"unknown face encoder {name!r}; expected one of {FACE_ENCODERS}")


def build_voice_encoder(name: str, dim: int) -> nn.Module:
    if name == "voice_tdnn":
        return VoiceTDNN(dim)
    if name == "voice_cnn":
        return VoiceCNN(dim)
    if name == "voice_resnet34":
        return VoiceResNet34(dim, (64, 128, 256, 512))
    if name == "voice_thin_resnet34":
        return VoiceResNet34(dim, (32, 64, 128, 256))
    raise ValueError(f"unknown voice encoder {name!r}; expected one of {VOICE_ENCODERS}")
