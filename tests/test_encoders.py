"""Encoders: output shapes, parameter counts in the expected range, determinism under a seed."""

from __future__ import annotations

import pytest
import torch

from pipeline.encoders import build_face_encoder, build_voice_encoder


@pytest.mark.parametrize(("name", "size"), [("face_cnn", 64), ("face_resnet34", 112)])
def test_face_encoders(name: str, size: int) -> None:
    torch.manual_seed(0)
    net = build_face_encoder(name, 128).eval()
    assert net(torch.randn(2, 3, size, size)).shape == (2, 128)


@pytest.mark.parametrize("name", ["voice_cnn", "voice_resnet34", "voice_thin_resnet34"])
def test_voice_encoders(name: str) -> None:
    net = build_voice_encoder(name, 64).eval()
    assert net(torch.randn(2, 64, 100)).shape == (2, 64)


def test_sizes_and_errors() -> None:
    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert count(build_face_encoder("face_cnn", 128)) < 500_000  # trains on a CPU in minutes
    assert 21_000_000 < count(build_face_encoder("face_resnet34", 512)) < 22_000_000
    thin, full = (
        build_voice_encoder("voice_thin_resnet34", 512),
        build_voice_encoder("voice_resnet34", 512),
    )
    assert count(thin) < count(full) / 3
    with pytest.raises(ValueError, match="unknown face encoder"):
        build_face_encoder("vgg", 128)
    with pytest.raises(ValueError, match="unknown voice encoder"):
        build_voice_encoder("x", 128)


def test_same_seed_same_weights() -> None:
    torch.manual_seed(3)
    a = build_voice_encoder("voice_cnn", 32).state_dict()
    torch.manual_seed(3)
    b = build_voice_encoder("voice_cnn", 32).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
