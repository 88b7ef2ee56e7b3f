"""``cid``: cross-modal instance discrimination, the baseline every paper compares with.

Symmetric InfoNCE between the modalities with in-batch negatives
(the instance-discrimination baseline of CMPC, IJCAI 2022):
``l_i(v→f) = −log softmax_j(⟨v̂_i, f̂_j⟩/τ)[i]``, likewise ``f→v``; the loss is the mean of both
directions over the batch. No labels are used. τ = 0.03 in CMPC's setting. CMPC with its
prototype and recalibration parts switched off reduces to this same code path
(:func:`pipeline.methods.common.cross_modal_info_nce` and
:func:`~pipeline.methods.common.two_way_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.methods.common import cross_modal_info_nce, two_way_loss


@dataclass(frozen=True)
class CIDParams:
    tau: float

    def __post_init__(self) -> None:
        if self.tau <= 0:
            raise ValueError(f"cid.tau must be positive, got {self.tau}")


class CID(torch.nn.Module):
    """The loss; no parameters of its own and no per-epoch hook."""

    def __init__(self, params: CIDParams) -> None:
        super().__init__()
        self.params = params

    def forward(
        self, face: torch.Tensor, voice: torch.Tensor, batch: object = None
    ) -> dict[str, torch.Tensor]:
        """face, voice: (B, D) embeddings of B pairs -> {"loss", "instance"} scalars. ``batch``
        (identities, videos) is not used: cid needs no labels."""
        tau = self.params.tau
        loss = two_way_loss(
            cross_modal_info_nce(voice, face, tau), cross_modal_info_nce(face, voice, tau)
        )
        return {"loss": loss, "instance": loss.detach()}
