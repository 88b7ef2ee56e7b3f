"""Pieces shared by the association methods (each method imports these, never another method).

Notation of the method modules: a batch of ``B`` (face, voice) pairs from the same clip, embeddings
``f, v`` of shape (B, D), ``x̂ = x / ‖x‖``, temperature ``τ``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_modal_info_nce(anchor: torch.Tensor, other: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-anchor InfoNCE with in-batch negatives, anchors in one modality, candidates in the other.

    ``l_i = −log softmax_j(⟨â_i, ô_j⟩ / τ)[i]``. anchor, other: (B, D) -> (B,).
    """
    if anchor.shape != other.shape or anchor.ndim != 2:
        raise ValueError(
            f"expected two (B, D) tensors of one shape, got {anchor.shape}, {other.shape}"
        )
    if tau <= 0:
        raise ValueError(f"temperature must be positive, got {tau}")
    logits = F.normalize(anchor, dim=1) @ F.normalize(other, dim=1).T / tau  # (B, B)
    target = torch.arange(anchor.shape[0], device=anchor.device)
    return F.cross_entropy(logits, target, reduction="none")  # (B,)


def symmetric_info_nce(
    face: torch.Tensor, voice: torch.Tensor, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The symmetric cross-modal InfoNCE every method uses (the one place it is written): both
    directions' per-anchor terms ``(l_i(v→f), l_i(f→v))``, each (B,), from (B, D), (B, D).

    Methods reduce them their own way: :func:`info_nce_loss` (``cid``, the low-shot loss) and CMPC
    average each direction over the batch (:func:`two_way_loss`), bipseudo averages the per-pair
    mean ``½ (l_i(v→f) + l_i(f→v))``; equal in exact arithmetic, not in the last float bit.
    """
    return cross_modal_info_nce(voice, face, tau), cross_modal_info_nce(face, voice, tau)


def info_nce_loss(face: torch.Tensor, voice: torch.Tensor, tau: float) -> torch.Tensor:
    """``cid``'s loss: the mean of both directions' batch means of :func:`symmetric_info_nce`.
    (B, D), (B, D) -> scalar."""
    return two_way_loss(*symmetric_info_nce(face, voice, tau))


def two_way_loss(
    v2f: torch.Tensor, f2v: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The mean of both directions' (weighted) batch means: ``½ (Σ w l(v→f) / Σ w + Σ w l(f→v) /
    Σ w)``; ``weights=None`` is the plain mean (cid, and CMPC before clustering). (B,), (B,) ->
    scalar."""
    if weights is None:
        return 0.5 * (v2f.mean() + f2v.mean())
    return 0.5 * ((weights * v2f).sum() + (weights * f2v).sum()) / weights.sum()
