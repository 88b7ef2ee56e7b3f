"""Encoders: output shapes, parameter counts in the expected range, determinism under a seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.train.encoders import (
    FrozenFaceNet,
    build_face_encoder,
    build_voice_encoder,
    facenet_weights_path,
)


@pytest.mark.parametrize(("name", "size"), [("face_cnn", 64), ("face_resnet34", 112)])
def test_face_encoders(name: str, size: int) -> None:
    torch.manual_seed(0)
    net = build_face_encoder(name, 128).eval()
    assert net(torch.randn(2, 3, size, size)).shape == (2, 128)


@pytest.mark.parametrize(
    "name", ["voice_tdnn", "voice_cnn", "voice_resnet34", "voice_thin_resnet34"]
)
def test_voice_encoders(name: str) -> None:
    net = build_voice_encoder(name, 64).eval()
    assert net(torch.randn(2, 64, 100)).shape == (2, 64)


def test_tdnn_reads_other_mel_counts_and_pools_over_time() -> None:
    """Features of another bin count are resampled to the network's 64 bins (a 64-bin input
    passes unchanged); the pooled statistics make the output independent of the crop length
    up to its content: a crop repeated twice gives nearly the same embedding (mean and standard
    deviation over time barely move; only the edges of the strided convolutions differ)."""
    torch.manual_seed(0)
    net = build_voice_encoder("voice_tdnn", 32).eval()
    x = torch.randn(3, 64, 96)
    assert net(torch.randn(3, 80, 96)).shape == (3, 32)
    x80 = torch.nn.functional.interpolate(
        x.transpose(1, 2), size=80, mode="linear", align_corners=True
    ).transpose(1, 2)
    back = torch.nn.functional.interpolate(
        x80.transpose(1, 2), size=64, mode="linear", align_corners=True
    ).transpose(1, 2)
    with torch.no_grad():
        assert torch.allclose(net(x80), net(back), atol=1e-5)
        one, two = net(x), net(torch.cat([x, x], dim=2))
        other = x.clone()
        other[:, :32] += 2.0  # another spectral envelope: louder low bins
        third = net(other)
    cos = torch.nn.functional.cosine_similarity
    assert cos(one, two).min() > 0.95
    assert cos(one, third).max() < cos(one, two).min()


def test_sizes_and_errors() -> None:
    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert count(build_face_encoder("face_cnn", 128)) < 500_000  # trains on a CPU in minutes
    assert count(build_voice_encoder("voice_tdnn", 128)) < 400_000
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


def test_frozen_facenet_front_end_without_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The front end's plumbing on a randomly initialised InceptionResnetV1 (the VGGFace2 weights
    are never downloaded in tests); a missing weights file is an error naming its path."""
    from facenet_pytorch import InceptionResnetV1

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("VOXFACE_NO_DOWNLOAD", "1")
    with pytest.raises(FileNotFoundError, match=r"20180402-114759-vggface2\.pt"):
        build_face_encoder("face_facenet_frozen", 16)
    net = FrozenFaceNet(16, InceptionResnetV1(pretrained=None))
    net.train()
    assert not net.backbone.training  # the frozen backbone keeps its BN statistics
    out = net(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 16)
    out.sum().backward()
    assert all(p.grad is None for p in net.backbone.parameters())
    assert all(p.grad is not None for p in net.head.parameters())

    # A weights file in facenet's place (here a random one, with the classifier keys the real
    # file carries) is loaded into the backbone exactly.
    ref = InceptionResnetV1(pretrained=None)
    state = {
        **ref.state_dict(),
        "logits.weight": torch.zeros(3, 512),
        "logits.bias": torch.zeros(3),
    }
    facenet_weights_path().parent.mkdir(parents=True)
    torch.save(state, facenet_weights_path())
    loaded = build_face_encoder("face_facenet_frozen", 16)
    assert isinstance(loaded, FrozenFaceNet)
    for k, v in ref.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[k], v), k
