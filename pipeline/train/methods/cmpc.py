"""``cmpc``: Zhu et al., IJCAI 2022, "cross-modal prototype contrast" (unsupervised).

The paper's equations (the default, ``published_code=False``):

- **Memory bank**: one row per training video and modality, ``m ← normalise(0.5 m + 0.5 ẑ)``
  after every batch (:class:`~pipeline.train.methods.clusters.MemoryBank`).
- **Clustering** (per-epoch hook): from epoch ``start_epoch`` and then every ``every_epochs``,
  faiss k-means on each modality's memory separately at R granularities ``clusters`` (the paper:
  500/1000/1500 for ~18k videos; ``multi_granularity: false`` keeps only the middle K, the
  paper's single-granularity ablation), with a concentration ``φ`` per cluster
  (:func:`~pipeline.train.methods.clusters.concentration`).
- **Instance contrast**: ``l_inst`` = the ``cid`` InfoNCE, the same code path
  (:func:`~pipeline.train.methods.common.cross_modal_info_nce`).
- **Cross-modal prototype contrast**: anchor ``â_i`` of modality A against the prototypes of
  modality B of the batch's items: ``l_proto,i = mean_r −log softmax_j(⟨â_i, c^B_{r,k(j)}⟩ /
  φ^B_{r,k(j)})[i]``, both directions.
- **Recalibration**: ``ρ_i = ⟨v̂_i, f̂_i⟩ − Σ_r ⟨c^v_{r,k_v(i)}, c^f_{r,k_f(i)}⟩``, a Gaussian with
  ``μ = mean(ρ) + δ·std(ρ)``, ``σ = std(ρ)·√κ``; ``w_i`` = the batch's cumulative Gaussian mass up
  to ``ρ_i``, normalised to end at 1 (:func:`recalibration_weights`). Per direction
  ``L = Σ w_i (l_inst,i + l_proto,i) / Σ w_i``; the loss is the mean of both directions, so with
  prototypes and recalibration off (or before the first clustering) it *is* ``cid``.
- Clusters are kept until the next refresh.

Choices where the paper is silent: ρ uses the L2-normalised centroids; several clips of one video
in a batch update its memory row with their mean (the released code: the last write wins); clips
of one video in a batch share their prototypes and are negatives of each other in the instance
term, as in the paper's per-sample formulation.

``published_code=True`` reproduces the loss and loop of the code released with the paper:

1. Clusters act on one batch per refresh: the released loop passes the clustering to the loss
   only on the batch where it was computed, so prototypes and weights then act only on the first
   batch after each refresh.
2. The prototype term accumulates over the granularities and divides the running sum by 4 (the
   number of entries of the released clustering result: assignments, centroids, distances,
   concentrations) inside the loop: ``P_0 = 0``, ``P_r = (P_{r−1} + l_r) / 4``, whatever R is.
3. In each prototype softmax the positive is moved to column 0 and the negatives ``j ≠ i`` follow
   in order, *then* column ``c`` is divided by ``φ_{k(c)}``, the concentration of the prototype of
   batch item ``c``: row i's positive takes item 0's φ and its negatives take shifted φs.
4. ρ uses un-normalised centroids: the mean of each cluster's memory rows at the refresh (what
   the released Lloyd iteration returns as the centroid of its returned assignment).
5. The two directions are summed, not averaged (so before the first clustering it is 2 × ``cid``).

Differences of the released code that are *not* reproduced: it clusters with keops Lloyd
iterations initialised at the first K rows rather than faiss (its prototypes are the normalised
member means, ours faiss's normalised centroids); its weights are NaN when every ρ of a batch is
equal (ours: 1); its argsort of ρ is not stable under ties.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from pipeline.params import CmpcSection
from pipeline.train.methods.clusters import ClusteredMemories, Clustering, concentration
from pipeline.train.methods.common import symmetric_info_nce, two_way_loss

if TYPE_CHECKING:
    from pipeline.params import TrainParams
    from pipeline.train.loop import TrainData

PUBLISHED_PROTO_DIVISOR = 4  # entries of the released code's clustering-result dict


def recalibration_weights(rho: torch.Tensor, delta: float, kappa: float) -> torch.Tensor:
    """CMPC's weights of the batch's instances from their ``ρ`` (B,) -> (B,) in (0, 1].

    Sort ``ρ``; evaluate the Gaussian density with ``μ = mean + δ·std``, ``σ = std·√κ`` (population
    std) at each sorted value; the weight of ``ρ_i`` is the cumulative sum of those densities up to
    and including ``ρ_i``, divided by the total. Instances far below the mean (unlearnable) get
    weights near 0, the rest near 1. A batch with no spread in ``ρ`` gets weights 1.
    """
    std = rho.std(unbiased=False)
    if float(std) == 0.0:
        return torch.ones_like(rho)
    mu = rho.mean() + delta * std
    sigma = std * math.sqrt(kappa)
    order = torch.argsort(rho, stable=True)
    density = torch.exp(-0.5 * ((rho[order] - mu) / sigma) ** 2)  # (B,), constant factor cancels
    cum = torch.cumsum(density, 0)
    w = torch.empty_like(rho)
    w[order] = cum / cum[-1]
    return w


class CMPC(ClusteredMemories):
    """The loss with its memory banks and clusters (all buffers, so checkpoints carry them)."""

    def __init__(self, params: CmpcSection, num_videos: int, dim: int, seed: int) -> None:
        super().__init__("cmpc", params, num_videos, "videos", dim, seed)
        self.params = params
        for m in ("face", "voice"):
            for r, k in enumerate(params.granularities):
                self.register_buffer(f"{m}_centroids_{r}", torch.zeros(k, dim))
                self.register_buffer(f"{m}_phi_{r}", torch.ones(k))
                self.register_buffer(f"{m}_assign_{r}", torch.zeros(num_videos, dtype=torch.long))
                if params.published_code:  # the un-normalised centroids for ρ
                    self.register_buffer(f"{m}_means_{r}", torch.zeros(k, dim))
        self.live: torch.Tensor  # 1 while the clusters act on batches
        self.register_buffer("live", torch.zeros((), dtype=torch.long))

    def clusters(self, modality: str, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(centroids (K, d), φ (K,), assignment per video (V,)) of granularity ``r``."""
        return (
            getattr(self, f"{modality}_centroids_{r}"),
            getattr(self, f"{modality}_phi_{r}"),
            getattr(self, f"{modality}_assign_{r}"),
        )

    def member_means(self, modality: str, r: int) -> torch.Tensor:
        """``published_code``: the mean memory row of each cluster at the last refresh. (K, d)."""
        means: torch.Tensor = getattr(self, f"{modality}_means_{r}")
        return means

    def uses_clusters(self) -> bool:
        return self.params.prototypes or self.params.recalibration

    def keep(self, modality: str, clusterings: list[Clustering]) -> None:
        """Centroids, assignments and φ per granularity (and, with ``published_code``, the
        un-normalised member means)."""
        p = self.params
        for r, (k, c) in enumerate(zip(p.granularities, clusterings, strict=True)):
            cent, phi, assign = self.clusters(modality, r)
            cent.copy_(c.centroids)
            phi.copy_(concentration(c, k, p.phi_mean))
            assign.copy_(c.assign)
            if p.published_code:
                memory = self.bank(modality).memory
                total = torch.zeros(k, memory.shape[1], dtype=memory.dtype, device=memory.device)
                total.index_add_(0, c.assign, memory)
                count = torch.bincount(c.assign, minlength=k).clamp(min=1)
                self.member_means(modality, r).copy_(total / count[:, None].to(memory.dtype))

    @torch.no_grad()
    def refresh(self) -> None:
        """k-means on each modality's memory at every granularity; the clusters act from now."""
        super().refresh()
        self.live.fill_(1)

    def prototype_contrast(
        self, anchor: torch.Tensor, other: str, video: torch.Tensor
    ) -> torch.Tensor:
        """Per-anchor ``mean_r −log softmax_j(⟨â_i, c_{r,k(j)}⟩ / φ_{r,k(j)})[i]`` against modality
        ``other``'s prototypes of the batch's videos. anchor (B, d), video (B,) -> (B,)."""
        a = F.normalize(anchor, dim=1)  # (B, d)
        if self.params.published_code:
            return self.published_prototype_contrast(a, other, video)
        target = torch.arange(len(a), device=a.device)
        terms = []
        for r in range(len(self.params.granularities)):
            cent, phi, assign = self.clusters(other, r)
            k = assign[video]  # (B,)
            logits = (a @ cent[k].T) / phi[k][None, :]  # (B, B)
            terms.append(F.cross_entropy(logits, target, reduction="none"))
        return torch.stack(terms).mean(0)

    def published_prototype_contrast(
        self, a: torch.Tensor, other: str, video: torch.Tensor
    ) -> torch.Tensor:
        """The released code's prototype term (module docstring, items 2 and 3). a: (B, d)
        normalised anchors, video (B,) -> (B,)."""
        b = len(a)
        cols = torch.arange(b, device=a.device)
        off = ~torch.eye(b, dtype=torch.bool, device=a.device)
        # Row i: column 0 = i (the positive), then every j ≠ i in increasing order.
        order = torch.cat([cols[:, None], cols.expand(b, b)[off].view(b, b - 1)], dim=1)
        target = torch.zeros(b, dtype=torch.long, device=a.device)
        out = torch.zeros(b, dtype=a.dtype, device=a.device)
        for r in range(len(self.params.granularities)):
            cent, phi, assign = self.clusters(other, r)
            k = assign[video]  # (B,)
            proto = F.normalize(cent[k], dim=1)  # as the released code (ours are unit already)
            logits = (a @ proto.T).gather(1, order) / phi[k][None, :]  # φ of item c on column c
            out = (out + F.cross_entropy(logits, target, reduction="none")) / (
                PUBLISHED_PROTO_DIVISOR
            )
        return out

    def rho(self, face: torch.Tensor, voice: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """``ρ_i = ⟨v̂_i, f̂_i⟩ − Σ_r ⟨c^v_{r,k_v(i)}, c^f_{r,k_f(i)}⟩`` (detached; with
        ``published_code`` the centroids are the un-normalised member means). -> (B,)."""
        pair = (F.normalize(voice.detach(), dim=1) * F.normalize(face.detach(), dim=1)).sum(1)
        proto = torch.zeros_like(pair)
        for r in range(len(self.params.granularities)):
            cv, _, av = self.clusters("voice", r)
            cf, _, af = self.clusters("face", r)
            if self.params.published_code:  # un-normalised centroids
                cv, cf = self.member_means("voice", r), self.member_means("face", r)
            proto = proto + (cv[av[video]] * cf[af[video]]).sum(1)
        return pair - proto

    def loss_terms(
        self, face: torch.Tensor, voice: torch.Tensor, video: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """face, voice: (B, d); video: (B,) memory rows -> loss terms (scalars)."""
        p = self.params
        inst_vf, inst_fv = symmetric_info_nce(face, voice, p.tau)  # (B,), (B,)
        zero = torch.zeros_like(inst_vf)
        use = bool(self.live)
        proto_vf = self.prototype_contrast(voice, "face", video) if use and p.prototypes else zero
        proto_fv = self.prototype_contrast(face, "voice", video) if use and p.prototypes else zero
        w = None
        if use and p.recalibration:
            w = recalibration_weights(self.rho(face, voice, video), p.delta, p.kappa)
        loss = two_way_loss(inst_vf + proto_vf, inst_fv + proto_fv, w)
        if p.published_code:
            loss = 2.0 * loss  # the sum of both directions (2 × their mean, exactly)
        self.remember(video, face, voice)
        if self.training and p.published_code:
            self.live.fill_(0)
        return {
            "loss": loss,
            "instance": 0.5 * (inst_vf + inst_fv).mean().detach(),
            "prototype": 0.5 * (proto_vf + proto_fv).mean().detach(),
            "weight_mean": torch.ones(()) if w is None else w.mean().detach(),
        }

    def forward(
        self, face: torch.Tensor, voice: torch.Tensor, batch: Any
    ) -> dict[str, torch.Tensor]:
        """Training-loop entry: ``batch.video`` (B,) are the memory rows."""
        return self.loss_terms(face, voice, batch.video)


def build(params: CmpcSection, train: TrainParams, data: TrainData, seed: int) -> CMPC:
    """The registry's builder: one memory row per training video."""
    return CMPC(params, len(data.videos), train.embed_dim, seed)
