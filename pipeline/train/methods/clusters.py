"""Pieces shared by the clustering methods (``cmpc``, ``bipseudo``): a memory bank of embeddings,
faiss k-means on it, the memory-and-clustering machinery both methods build on
(:class:`ClusteredMemories`), and CMPC/PCL's per-cluster concentration.

Methods never import each other; both import these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class MemoryBank(nn.Module):
    """One L2-normalised row per item (video for CMPC, clip for bipseudo) and modality.

    ``update(rows, z)``: ``m ← normalise(momentum · m + (1 − momentum) · ẑ)`` for each row in the
    batch; several batch items of one row are averaged first (a one-hot matrix product, so it is
    deterministic on every device). Rows start as random unit vectors from ``seed``.
    """

    def __init__(self, rows: int, dim: int, momentum: float, seed: int) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"memory momentum must be in [0, 1), got {momentum}")
        g = torch.Generator().manual_seed(seed)
        self.momentum = momentum
        self.memory: torch.Tensor
        self.register_buffer("memory", F.normalize(torch.randn(rows, dim, generator=g), dim=1))

    @torch.no_grad()
    def update(self, rows: torch.Tensor, z: torch.Tensor) -> None:
        """rows: (B,) indices; z: (B, d) embeddings (any norm; normalised here)."""
        uniq, inverse = torch.unique(rows, return_inverse=True)  # (U,), (B,)
        onehot = F.one_hot(inverse, len(uniq)).T.to(z.dtype)  # (U, B)
        mean = (onehot @ F.normalize(z.detach(), dim=1)) / onehot.sum(1, keepdim=True)  # (U, d)
        old = self.memory[uniq]  # (U, d)
        self.memory[uniq] = F.normalize(self.momentum * old + (1 - self.momentum) * mean, dim=1)


@dataclass(frozen=True)
class Clustering:
    """One k-means result: ``centroids`` (K, d) L2-normalised, ``assign`` (N,) cluster per row,
    ``sq_dist`` (N,) squared distance of each row to its (un-normalised) k-means centroid."""

    centroids: torch.Tensor
    assign: torch.Tensor
    sq_dist: torch.Tensor


def kmeans(x: torch.Tensor, k: int, seed: int, iters: int) -> Clustering:
    """faiss k-means (exact L2 assignment) of the rows of ``x`` (N, d) into ``k`` clusters.

    Deterministic for a seed: faiss's CPU k-means sums each centroid in one thread. Returns
    tensors on ``x``'s device.
    """
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"cannot make {k} clusters of {n} rows")
    data = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
    faiss.omp_set_num_threads(torch.get_num_threads())  # as many threads as torch, no more
    km = faiss.Kmeans(
        d, k, niter=iters, seed=seed, verbose=False, min_points_per_centroid=1,
        max_points_per_centroid=max(256, n),
    )  # fmt: skip
    km.train(data)
    sq, idx = km.index.search(data, 1)  # (N, 1), (N, 1)
    assert km.centroids is not None
    return Clustering(
        centroids=F.normalize(torch.from_numpy(km.centroids.copy()), dim=1).to(x.device),
        assign=torch.from_numpy(idx[:, 0].astype(np.int64)).to(x.device),
        sq_dist=torch.from_numpy(np.maximum(sq[:, 0], 0.0)).to(x.device),
    )


def cluster_memories(
    banks: tuple[MemoryBank, ...], ks: tuple[int, ...], seed: int, iters: int
) -> list[list[Clustering]]:
    """k-means of each bank's memory at each K: ``out[bank][r]``. Seeds differ per bank and K
    (``seed + 10 r + bank``); callers vary ``seed`` per refresh."""
    return [
        [kmeans(bank.memory, k, seed + 10 * r + b, iters) for r, k in enumerate(ks)]
        for b, bank in enumerate(banks)
    ]


def concentration(c: Clustering, k: int, mean: float) -> torch.Tensor:
    """CMPC's (PCL's) per-cluster concentration, used as each prototype's temperature. (K,).

    ``φ_k = mean_{i∈k}(√dist_i) / log(n_k + 10)``; clusters of one member (or none) take the
    largest φ of the others; φ is clipped to its 10th–90th percentile and rescaled to mean
    ``mean`` (0.2 in the paper).
    """
    assign, dist = c.assign.cpu(), c.sq_dist.cpu().double().sqrt()
    n = torch.bincount(assign, minlength=k).double()  # (K,)
    total = torch.zeros(k, dtype=torch.float64).index_add_(0, assign, dist)
    many = n > 1
    if not bool(many.any()):
        return torch.full((k,), mean, dtype=torch.float32, device=c.centroids.device)
    phi = torch.where(many, total / n.clamp(min=1) / torch.log(n + 10), torch.zeros_like(n))
    phi[~many] = phi[many].max()
    lo, hi = np.percentile(phi.numpy(), [10, 90])
    phi = phi.clamp(float(lo), float(hi))
    if float(phi.mean()) <= 0.0:  # every member on its centroid: no spread to compare
        return torch.full((k,), mean, dtype=torch.float32, device=c.centroids.device)
    return (mean * phi / phi.mean()).float().to(c.centroids.device)


class MemorySchedule(Protocol):
    """The section fields of a clustering method that :class:`ClusteredMemories` reads."""

    @property
    def granularities(self) -> Sequence[int]: ...
    @property
    def start_epoch(self) -> int: ...
    @property
    def every_epochs(self) -> int: ...
    @property
    def memory_momentum(self) -> float: ...
    @property
    def kmeans_iters(self) -> int: ...


class ClusteredMemories(nn.Module):
    """What ``cmpc`` and ``bipseudo`` share: a :class:`MemoryBank` per modality (``memory_face``
    seeded ``seed``, ``memory_voice`` ``seed + 1``; one row per video or clip), updated after every
    training batch (:meth:`remember`); from epoch ``start_epoch`` and every ``every_epochs`` (the
    per-epoch hook), k-means of both memories at each K of ``granularities``, seeded ``seed + 1000 ·
    refreshes`` (:meth:`refresh`; ``refreshes`` is a buffer, so checkpoints carry it).

    A subclass says whether it uses clusters at all (:meth:`uses_clusters`) and keeps each
    refresh's result in its own buffers (:meth:`keep`).
    """

    def __init__(
        self, name: str, params: MemorySchedule, rows: int, what: str, dim: int, seed: int
    ) -> None:
        super().__init__()
        if max(params.granularities) > rows:
            raise ValueError(
                f"{name}.clusters {list(params.granularities)}: K cannot exceed the {rows} "
                f"training {what}; scale K with the data"
            )
        self.seed = seed
        self.ks = tuple(params.granularities)
        self.start_epoch, self.every_epochs = params.start_epoch, params.every_epochs
        self.kmeans_iters = params.kmeans_iters
        self.memory_face = MemoryBank(rows, dim, params.memory_momentum, seed)
        self.memory_voice = MemoryBank(rows, dim, params.memory_momentum, seed + 1)
        self.refreshes: torch.Tensor
        self.register_buffer("refreshes", torch.zeros((), dtype=torch.long))

    def bank(self, modality: str) -> MemoryBank:
        """``"face"`` or ``"voice"``'s memory."""
        return self.memory_face if modality == "face" else self.memory_voice

    def uses_clusters(self) -> bool:
        """False when the method's clustered parts are switched off (no k-means is run)."""
        return True

    def keep(self, modality: str, clusterings: list[Clustering]) -> None:
        """Store one refresh's clusterings of ``modality``'s memory (one per K)."""
        raise NotImplementedError

    @torch.no_grad()
    def refresh(self) -> None:
        """k-means on each modality's memory at every K; :meth:`keep` stores each result."""
        seed = self.seed + 1000 * int(self.refreshes)
        banks = (self.memory_face, self.memory_voice)
        for m, per_k in zip(
            ("face", "voice"),
            cluster_memories(banks, self.ks, seed, self.kmeans_iters),
            strict=True,
        ):
            self.keep(m, per_k)
        self.refreshes += 1

    def on_epoch_start(self, *, epoch: int, **_: Any) -> None:
        """Cluster at ``start_epoch`` and every ``every_epochs`` after it."""
        due = epoch >= self.start_epoch and (epoch - self.start_epoch) % self.every_epochs == 0
        if self.uses_clusters() and due:
            self.refresh()

    def remember(self, rows: torch.Tensor, face: torch.Tensor, voice: torch.Tensor) -> None:
        """In training mode, update both memories with the batch's embeddings at ``rows`` (B,)."""
        if self.training:
            self.memory_face.update(rows, face)
            self.memory_voice.update(rows, voice)
