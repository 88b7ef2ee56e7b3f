"""``lowshot``: the fine-tuning loss of CMPC's low-shot supervision setting (IJCAI 2022, §4.4;
described in the paper, not in its code).

A trained (unsupervised) model is fine-tuned with identity labels for a small fraction of the
training identities. The loss on a batch of labelled clips is a bias-free classifier ``W``
(C_labelled × d) shared by both modalities, ``½ mean_i [CE(W f_i, y_i) + CE(W v_i, y_i)]``, plus
the ``cid`` InfoNCE on the same batch (so the pairing the model learned keeps being trained).
Every method is fine-tuned the same way, which is what the setting compares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.train.methods.common import info_nce_loss


@dataclass(frozen=True)
class LowShotParams:
    tau: float
    labelled_identities: int

    def __post_init__(self) -> None:
        if self.tau <= 0:
            raise ValueError(f"lowshot.tau must be positive, got {self.tau}")
        if self.labelled_identities < 2:
            raise ValueError("lowshot needs labels for at least 2 identities")


class LowShot(nn.Module):
    def __init__(self, params: LowShotParams, dim: int) -> None:
        super().__init__()
        self.params = params
        self.classifier = nn.Linear(dim, params.labelled_identities, bias=False)  # W

    def forward(
        self, face: torch.Tensor, voice: torch.Tensor, batch: Any
    ) -> dict[str, torch.Tensor]:
        """face, voice: (B, d); ``batch.identity`` (B,) in [0, C_labelled)."""
        y = batch.identity
        ce = 0.5 * (
            F.cross_entropy(self.classifier(face), y) + F.cross_entropy(self.classifier(voice), y)
        )
        inst = info_nce_loss(face, voice, self.params.tau)
        return {"loss": ce + inst, "identity_ce": ce.detach(), "instance": inst.detach()}
