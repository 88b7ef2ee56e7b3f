"""``bipseudo``: bi-pseudo-label self-supervision, Zhu M. et al., JCRD 2023 (unsupervised).

**A reconstruction from the paper's description: no public code exists.** It follows
the paper's Section 3 (JCRD 2023); where the paper leaves a choice open, the choice made
here is stated.

- **Cross-modal weighted residual network**: both encoders end in one residual block whose
  weights are shared by the two modalities, ``ẑ = normalise(z + α ⊙ g(z))``, ``g`` = FC–BN–ReLU–FC,
  ``α`` a learned per-channel weight (:class:`pipeline.train.encoders.SharedResidual`, selected by
  :attr:`BiPseudo.head`; evaluation embeds through it too).
- **Bi-pseudo labels**: from epoch ``start_epoch`` and every ``every_epochs``, faiss k-means on
  each modality's embeddings at several K (``clusters``). Choice: the embeddings are a per-clip
  memory bank (``m ← normalise(μ m + (1 − μ) ẑ)``, as CMPC's), so clustering costs no extra
  forward pass. The *voice* clusters supervise the *face* branch and vice versa, as a prototype
  classification (choice: prototypes = the other modality's normalised centroids, temperature
  ``proto_tau``):
  ``L_pseudo = mean_r ½ [CE(f̂_i·C^v_r/τ_p, y^v_r(i)) + CE(v̂_i·C^f_r/τ_p, y^f_r(i))]``.
- **Auxiliary losses**: ``L_pull = mean_i (1 − ⟨f̂_i, v̂_i⟩)`` pulls a clip's face and voice
  together; ``L_push`` = the in-batch cross-modal InfoNCE (``cid``'s, temperature ``tau``) pushes
  different clips apart.
- ``loss = w_pseudo·L_pseudo + w_pull·L_pull + w_push·L_push``; before the first clustering the
  pseudo-label term is 0. K and the schedule are analogous to CMPC's (Self-Lifting, the closest
  published relative, uses faiss k-means with K = 1000).

The paper's ablation switches (``bipseudo`` params, default on): ``shared_residual`` (off: no
head, the encoders' outputs are the embeddings), ``pseudo_labels`` (off: no k-means, no
pseudo-label term), ``pull``, ``push``. A term switched off leaves the loss whatever its weight.
With only ``push`` on and no shared head the loss is ``cid``'s in-batch contrast (equal in exact
arithmetic: ``cid`` averages each direction, this the per-pair mean of both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from pipeline.params import BipseudoSection
from pipeline.train.methods.clusters import ClusteredMemories, Clustering
from pipeline.train.methods.common import symmetric_info_nce

if TYPE_CHECKING:
    from pipeline.params import TrainParams
    from pipeline.train.loop import TrainData


class BiPseudo(ClusteredMemories):
    """The loss with its per-clip memory banks and pseudo-labels (buffers, checkpointed)."""

    def __init__(self, params: BipseudoSection, num_clips: int, dim: int, seed: int) -> None:
        super().__init__("bipseudo", params, num_clips, "clips", dim, seed)
        self.params = params
        for m in ("face", "voice"):
            for r, k in enumerate(params.clusters):
                self.register_buffer(f"{m}_centroids_{r}", torch.zeros(k, dim))
                self.register_buffer(f"{m}_labels_{r}", torch.zeros(num_clips, dtype=torch.long))

    def pseudo(self, modality: str, r: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised centroids (K, d), pseudo-label per clip (N,)) of ``modality`` at ``r``."""
        return getattr(self, f"{modality}_centroids_{r}"), getattr(self, f"{modality}_labels_{r}")

    def uses_clusters(self) -> bool:
        return self.params.pseudo_labels and self.params.weight_pseudo > 0

    def keep(self, modality: str, clusterings: list[Clustering]) -> None:
        for r, c in enumerate(clusterings):
            cent, labels = self.pseudo(modality, r)
            cent.copy_(c.centroids)
            labels.copy_(c.assign)

    def pseudo_label_loss(
        self, face: torch.Tensor, voice: torch.Tensor, clips: torch.Tensor
    ) -> torch.Tensor:
        """Per-sample ``mean_r ½ [CE(f̂·C^v_r/τ_p, y^v_r) + CE(v̂·C^f_r/τ_p, y^f_r)]``. -> (B,)."""
        f, v = F.normalize(face, dim=1), F.normalize(voice, dim=1)  # (B, d)
        terms = []
        for r in range(len(self.params.clusters)):
            cv, yv = self.pseudo("voice", r)
            cf, yf = self.pseudo("face", r)
            ce_f = F.cross_entropy(f @ cv.T / self.params.proto_tau, yv[clips], reduction="none")
            ce_v = F.cross_entropy(v @ cf.T / self.params.proto_tau, yf[clips], reduction="none")
            terms.append(0.5 * (ce_f + ce_v))
        return torch.stack(terms).mean(0)

    def loss_terms(
        self, face: torch.Tensor, voice: torch.Tensor, clips: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """face, voice: (B, d) common embeddings; clips: (B,) memory rows -> terms (scalars)."""
        p = self.params
        pull = (1 - (F.normalize(face, dim=1) * F.normalize(voice, dim=1)).sum(1)).mean()
        push_vf, push_fv = symmetric_info_nce(face, voice, p.tau)
        push = (0.5 * (push_vf + push_fv)).mean()
        pseudo = (
            self.pseudo_label_loss(face, voice, clips).mean()
            if int(self.refreshes) > 0 and self.uses_clusters()
            else torch.zeros((), device=face.device)
        )
        self.remember(clips, face, voice)
        terms = [
            (p.pseudo_labels, p.weight_pseudo, pseudo),
            (p.pull, p.weight_pull, pull),
            (p.push, p.weight_push, push),
        ]
        loss = sum((w * t for on, w, t in terms if on), torch.zeros((), device=face.device))
        return {
            "loss": loss,
            "pseudo": pseudo.detach(),
            "pull": pull.detach(),
            "push": push.detach(),
        }

    def forward(
        self, face: torch.Tensor, voice: torch.Tensor, batch: Any
    ) -> dict[str, torch.Tensor]:
        """Training-loop entry: ``batch.clips`` (B,) are the memory rows."""
        return self.loss_terms(face, voice, batch.clips)


def build(params: BipseudoSection, train: TrainParams, data: TrainData, seed: int) -> BiPseudo:
    """The registry's builder: one memory row per training clip."""
    return BiPseudo(params, len(data), train.embed_dim, seed)


def head(params: BipseudoSection) -> str:
    """The head both encoders end in: the shared weighted residual block unless switched off."""
    return "shared_residual" if params.shared_residual else "none"
