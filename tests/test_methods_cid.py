"""The shared InfoNCE and the cid baseline, against a plain loop written from the formula."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.params import CidSection
from pipeline.train.methods.cid import CID
from pipeline.train.methods.common import cross_modal_info_nce, symmetric_info_nce


def plain_loop_cid(face: list[list[float]], voice: list[list[float]], tau: float) -> float:
    """l_i(v→f) = −log( exp(⟨v̂_i, f̂_i⟩/τ) / Σ_j exp(⟨v̂_i, f̂_j⟩/τ) ), likewise f→v; mean of both."""

    def unit(x: list[float]) -> list[float]:
        n = math.sqrt(sum(t * t for t in x))
        return [t / n for t in x]

    def dot(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    f = [unit(x) for x in face]
    v = [unit(x) for x in voice]
    b = len(f)
    total = 0.0
    for anchors, others in ((v, f), (f, v)):
        for i in range(b):
            denom = sum(math.exp(dot(anchors[i], others[j]) / tau) for j in range(b))
            total += -math.log(math.exp(dot(anchors[i], others[i]) / tau) / denom)
    return total / (2 * b)


def test_cid_matches_the_plain_loop() -> None:
    g = torch.Generator().manual_seed(0)
    face = torch.randn(6, 5, generator=g, dtype=torch.float64)
    voice = torch.randn(6, 5, generator=g, dtype=torch.float64)
    for tau in (0.03, 0.5, 2.0):
        got = CID(CidSection(tau=tau))(face, voice)["loss"].item()
        assert got == pytest.approx(plain_loop_cid(face.tolist(), voice.tolist(), tau), rel=1e-9)


def test_closed_form_cases() -> None:
    # Orthogonal perfect pairs: ⟨v̂_i, f̂_j⟩ = δ_ij, so l = −log(e^{1/τ} / (e^{1/τ} + (B−1))).
    b, tau = 4, 0.5
    eye = torch.eye(b, dtype=torch.float64)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + b - 1))
    for direction in symmetric_info_nce(eye, eye, tau):
        assert direction.tolist() == pytest.approx([expected] * b)
    # Identical embeddings everywhere: every candidate equally likely, l = log B.
    same = torch.ones(b, 3, dtype=torch.float64)
    assert cross_modal_info_nce(same, same, tau).tolist() == pytest.approx([math.log(b)] * b)


def test_gradient_check() -> None:
    g = torch.Generator().manual_seed(1)
    face = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    voice = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda f, v: CID(CidSection(tau=0.3))(f, v)["loss"], (face, voice)
    )


def test_validation() -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        CidSection(tau=0.0)
    with pytest.raises(ValueError, match="one shape"):
        cross_modal_info_nce(torch.zeros(3, 4), torch.zeros(2, 4), 0.1)
