"""Pieces shared by the clustering methods (``cmpc``, ``bipseudo``): a memory bank of embeddings,
faiss k-means on it, and CMPC/PCL's per-cluster concentration.

Methods never import each other; both import these.
"""

from __future__ import annotations

from dataclasses import dataclass

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
