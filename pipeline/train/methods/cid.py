"""``cid``: cross-modal instance discrimination, the baseline every paper compares with.

Symmetric InfoNCE between the modalities with in-batch negatives
(the instance-discrimination baseline of CMPC, IJCAI 2022):
``l_i(v→f) = −log softmax_j(⟨v̂_i, f̂_j⟩/τ)[i]``, likewise ``f→v``; the loss is the mean of both
directions over the batch. No labels are used. τ = 0.03 in CMPC's setting. CMPC with its
prototype and recalibration parts switched off reduces to this same code path
(:func:`pipeline.train.methods.common.info_nce_loss`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pipeline.params import CidSection
from pipeline.train.methods.common import info_nce_loss

if TYPE_CHECKING:
    from pipeline.params import TrainParams
    from pipeline.train.loop import TrainData


class CID(torch.nn.Module):
    """The loss; no parameters of its own and no per-epoch hook."""

    def __init__(self, params: CidSection) -> None:
        super().__init__()
        self.params = params

    def forward(
        self, face: torch.Tensor, voice: torch.Tensor, batch: object = None
    ) -> dict[str, torch.Tensor]:
        """face, voice: (B, D) embeddings of B pairs -> {"loss", "instance"} scalars. ``batch``
        (identities, videos) is not used: cid needs no labels."""
        loss = info_nce_loss(face, voice, self.params.tau)
        return {"loss": loss, "instance": loss.detach()}


def build(params: CidSection, train: TrainParams, data: TrainData, seed: int) -> CID:
    """The registry's builder (:mod:`pipeline.train.methods.registry`)."""
    return CID(params)
