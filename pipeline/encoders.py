"""Face and voice encoders into a d-dimensional embedding space. No loss code here.

- ``face_cnn`` / ``voice_cnn``: small CNNs that train on a 2-core CPU in minutes (the defaults):
  faces as (B, 3, S, S) crops, voices as (B, n_mels, T) log-mel crops.
- ``face_resnet34``: torchvision's ResNet-34 (random init) with an embedding head, CMPC's face
  encoder. ``voice_resnet34`` / ``voice_thin_resnet34``: ResNet-34 block layout over the
  log-mel "image", full width (CMPC) or thin (channels 32-256, Wen's voice encoder).

Tensors follow their inputs' device; nothing here assumes CUDA.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
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
    """Four stride-2 conv blocks, global average pooling, linear head. (B, 3, S, S) -> (B, d)."""

    def __init__(self, dim: int, width: int = 32) -> None:
        super().__init__()
        self.body = _tower(3, width)
        self.head = nn.Linear(8 * width, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.body(x).mean(dim=(2, 3)))  # (B, d)
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


FACE_ENCODERS = ("face_cnn", "face_resnet34")
VOICE_ENCODERS = ("voice_cnn", "voice_resnet34", "voice_thin_resnet34")


def build_face_encoder(name: str, dim: int) -> nn.Module:
    if name == "face_cnn":
        return FaceCNN(dim)
    if name == "face_resnet34":
        return face_resnet34(dim)
    raise ValueError(f"unknown face encoder {name!r}; expected one of {FACE_ENCODERS}")


def build_voice_encoder(name: str, dim: int) -> nn.Module:
    if name == "voice_cnn":
        return VoiceCNN(dim)
    if name == "voice_resnet34":
        return VoiceResNet34(dim, (64, 128, 256, 512))
    if name == "voice_thin_resnet34":
        return VoiceResNet34(dim, (32, 64, 128, 256))
    raise ValueError(f"unknown voice encoder {name!r}; expected one of {VOICE_ENCODERS}")
