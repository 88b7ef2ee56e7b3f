"""Evaluation metrics of the field (Nagrani et al. 2018): 1:N matching, verification, retrieval.

Every evaluation number goes through these functions, so that every method is scored by the same
code on the same trials. They are pure numpy (and faiss for retrieval): embeddings in, figures
out; no file, no model, no randomness. Embeddings are L2-normalised float rows and the score of a
pair is their inner product (the cosine); nothing here normalises for the caller.

Ties are resolved by one rule throughout: the *expected* value of the figure under a uniformly
random order of the tied items. A matching trial whose true candidate ties with ``t`` impostors
scores ``1/(t+1)``; ROC AUC counts a tied (positive, negative) pair ½; AP averages over the orders
of each group of tied gallery items (McSherry & Najork, ECIR 2008). Results are therefore
deterministic and independent of any sort's or faiss's internal order.

The chance levels of retrieval are exact (:func:`expected_random_ap`), so a reported mAP can be
set beside the mAP of a random ranking on the very same gallery.
"""

from __future__ import annotations

import math

import faiss
import numpy as np


def _check_embeddings(name: str, x: np.ndarray) -> None:
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be a float array, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has non-finite values")


def _check_labels(name: str, labels: np.ndarray, n: int) -> None:
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {labels.shape}")


# --- 1:N matching -----------------------------------------------------------------------------


def matching_credit(probe: np.ndarray, candidates: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """Per trial, the credit of 1:N matching for N = 2..K, on stored trials.

    probe: (P, D) embeddings of the probe modality; candidates: (C, D) embeddings of the other
    modality; trials: (T, 1 + K) integer rows ``[probe, true candidate, impostor_1, ...,
    impostor_{K-1}]`` (row indices into ``probe`` and ``candidates``), K >= 2.

    A trial is right at N when its true candidate's score beats those of the first N - 1
    impostors. A true score tied with ``t`` of them (and above the rest) counts ``1/(t+1)``, the
    expected accuracy of a random tie-break. Scores are computed in float64.

    Returns (T, K - 1) float64 credits in [0, 1]: column ``N - 2`` is trial's credit at N.
    """
    _check_embeddings("probe", probe)
    _check_embeddings("candidates", candidates)
    if probe.shape[1] != candidates.shape[1]:
        raise ValueError(
            f"probe and candidates differ in dimension: {probe.shape[1]} vs {candidates.shape[1]}"
        )
    if trials.ndim != 2 or trials.shape[0] == 0 or trials.shape[1] < 3:
        raise ValueError(
            f"trials must be a (T, 1 + K) array with T >= 1 and K >= 2, got shape {trials.shape}"
        )
    if not np.issubdtype(trials.dtype, np.integer):
        raise ValueError(f"trials must hold integer indices, got dtype {trials.dtype}")
    p_idx, c_idx = trials[:, 0], trials[:, 1:]  # (T,), (T, K)
    if p_idx.min() < 0 or p_idx.max() >= probe.shape[0]:
        raise ValueError(f"probe index out of range [0, {probe.shape[0]}) in trials column 0")
    if c_idx.min() < 0 or c_idx.max() >= candidates.shape[0]:
        raise ValueError(
            f"candidate index out of range [0, {candidates.shape[0]}) in trials columns 1..K"
        )
    p = probe[p_idx].astype(np.float64)  # (T, D)
    # One candidate column at a time: memory (T, D), never (T, K, D).
    scores = np.stack(
        [
            np.einsum("td,td->t", p, candidates[c_idx[:, j]].astype(np.float64))
            for j in range(c_idx.shape[1])
        ],
        axis=1,
    )  # (T, K)
    true, imp = scores[:, :1], scores[:, 1:]  # (T, 1), (T, K - 1)
    above = np.cumsum(imp > true, axis=1)  # (T, K - 1): impostors among the first N - 1 above
    tied = np.cumsum(imp == true, axis=1)  # (T, K - 1)
    credit: np.ndarray = np.where(above == 0, 1.0 / (tied + 1), 0.0)  # (T, K - 1)
    return credit


def matching_curve(probe: np.ndarray, candidates: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """Accuracy of 1:N matching for N = 2..K, on stored trials: the mean over trials of
    :func:`matching_credit` (see there for the arguments and the tie rule).

    Returns (K - 1,) float64 accuracies in [0, 1] for N = 2..K; ``[0]`` is 1:2 matching, whose
    chance level is 1/2 (1/N at N).
    """
    out: np.ndarray = matching_credit(probe, candidates, trials).mean(axis=0)
    return out


# --- Verification -----------------------------------------------------------------------------


def _binary(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated (N,) float64 scores and (N,) bool labels with both classes present."""
    if scores.ndim != 1 or scores.shape[0] == 0:
        raise ValueError(f"scores must be a non-empty (N,) array, got shape {scores.shape}")
    _check_labels("labels", labels, scores.shape[0])
    s = scores.astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError("scores has non-finite values")
    if labels.dtype != np.bool_ and not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be bool or 0/1")
    y = labels.astype(bool)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.shape[0]:
        raise ValueError(
            f"labels hold one class only ({n_pos} positives of {y.shape[0]}); need both"
        )
    return s, y


def _roc_counts(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M + 1,) int64 false and true positive counts at "accept if score >= threshold", for the
    M distinct scores taken as thresholds from the highest down, after a leading (0, 0)."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # last row of each tied block
    tp = np.cumsum(y_sorted)[last]
    fp = np.cumsum(~y_sorted)[last]
    return np.r_[0, fp].astype(np.int64), np.r_[0, tp].astype(np.int64)


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC of a verification list: (fpr, tpr), each (M + 1,) float64 for M distinct scores.

    scores: (N,) pair scores (cosine); labels: (N,) bool or 0/1, True = same identity. A pair is
    accepted when its score >= the threshold; the thresholds are the distinct scores from the
    highest down, after +inf, so tied scores make one step. The curve starts at (0, 0) and ends
    at (1, 1). ValueError if only one class is present.
    """
    s, y = _binary(scores, labels)
    fp, tp = _roc_counts(s, y)
    n_pos = int(y.sum())
    return fp / (y.shape[0] - n_pos), tp / n_pos


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC, in [0, 1]: P(positive scores above negative), ties counting ½.

    scores: (N,) pair scores; labels: (N,) bool or 0/1. Computed in the Mann–Whitney form from
    mid-ranks; it equals the trapezoid area under :func:`roc_curve`. Chance is 0.5.
    """
    s, y = _binary(scores, labels)
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    start = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # first row of each block
    end = np.r_[start[1:], s.shape[0]]  # one past the last row
    ranks = np.empty(s.shape[0], dtype=np.float64)
    ranks[order] = np.repeat((start + end + 1) / 2.0, end - start)  # 1-based mid-ranks
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def equal_error_rate(scores: np.ndarray, labels: np.ndarray) -> float:
    """Equal error rate, in [0, 1]: the rate at which false accepts equal false rejects.

    scores: (N,) pair scores; labels: (N,) bool or 0/1. Along the ROC points of
    :func:`roc_curve`, FAR = fpr rises and FRR = 1 - tpr falls, and FAR - FRR strictly increases
    from -1 to 1. EER is where it crosses 0: at a point where FAR = FRR exactly, that value;
    otherwise on the straight segment between the last point with FAR < FRR and the first with
    FAR > FRR, at ``λ = -g0 / (g1 - g0)`` of the way (``g = FAR - FRR`` at its two ends), where
    FAR and FRR, both linear along the segment, are equal. Chance is 0.5.
    """
    s, y = _binary(scores, labels)
    fp, tp = _roc_counts(s, y)
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    # g = FAR - FRR scaled by n_pos * n_neg: exact integers, so the sign test is exact.
    g = fp * n_pos - (n_pos - tp) * n_neg  # (M + 1,), strictly increasing
    i = int(np.argmax(g >= 0))  # g[-1] = n_pos * n_neg > 0, g[0] < 0, so 0 < i <= M
    far = fp / n_neg
    if g[i] == 0:
        return float(far[i])
    lam = -g[i - 1] / (g[i] - g[i - 1])
    return float(far[i - 1] + lam * (far[i] - far[i - 1]))


# --- Retrieval --------------------------------------------------------------------------------


def _label_codes(probe_labels: np.ndarray, gallery_labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Shared int32 codes for the two label arrays: (P,), (G,)."""
    _, codes = np.unique(np.concatenate([probe_labels, gallery_labels]), return_inverse=True)
    codes = codes.reshape(-1).astype(np.int32)
    return codes[: probe_labels.shape[0]], codes[probe_labels.shape[0] :]


def _tied_ap(dist: np.ndarray, rel: np.ndarray) -> float:
    """AP of one ranked list with ties, expected over random orders within each tied block.

    dist: (G,) scores sorted descending; rel: (G,) bool, same order, at least one True. A block
    of n tied items at ranks o+1..o+n holding a relevant items, with c relevant items above it,
    puts a relevant item at its i-th place with probability a/n, and then holds in expectation
    c + 1 + (i-1)(a-1)/(n-1) relevant items up to it (hypergeometric).
    """
    g = dist.shape[0]
    start = np.flatnonzero(np.r_[True, dist[1:] != dist[:-1]])  # (M,) block starts = o
    size = np.diff(np.r_[start, g])  # (M,) n
    n_rel = np.add.reduceat(rel.astype(np.int64), start)  # (M,) a
    above = np.cumsum(n_rel) - n_rel  # (M,) c
    keep = n_rel > 0
    o, n, a, c = start[keep], size[keep], n_rel[keep], above[keep]
    blk = np.repeat(np.arange(o.shape[0]), n)  # block of each expanded place
    i = np.arange(blk.shape[0]) - np.repeat(np.cumsum(n) - n, n) + 1  # 1-based place in block
    hits = c[blk] + 1 + (i - 1) * (a[blk] - 1) / np.maximum(n[blk] - 1, 1)
    w = a[blk] / n[blk] * hits / (o[blk] + i)
    return float(w.sum() / rel.sum())


def retrieval_ap(
    probe: np.ndarray,
    probe_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    batch: int = 512,
    threads: int | None = None,
) -> np.ndarray:
    """Per-probe average precision of ranking the whole gallery: (P,) float64, NaN = no match.

    probe: (P, D) embeddings of one modality; gallery: (G, D) of the other; probe_labels (P,) and
    gallery_labels (G,) identity labels of any comparable dtype. Every probe ranks all G gallery
    items by inner product, exactly, with faiss (``IndexFlatIP``, k = G, scores in float32). A
    gallery item is relevant to a probe when their labels are equal; AP is the mean, over the
    probe's R relevant items, of the precision at each one's rank (hits so far / rank). A probe
    with R = 0 has no AP: its entry is NaN (count them with ``np.isnan``).

    Ties: items with equal faiss scores are a tied block, and AP is its expectation over random
    orders of every block (McSherry & Najork 2008), so it does not depend on faiss's order. (The
    float32 scores themselves may differ in the last bit between BLAS builds or batch sizes.)

    Probes are searched ``batch`` at a time, so peak memory grows as batch * G: 16 to 36 bytes a
    (probe, gallery item) cell, measured with faiss 1.15 (float32 scores, int64 ids, labels, the
    relevance mask, and faiss's own buffers, which grow when a batch takes its BLAS path, from
    about 1000 probes at D = 128): about 0.7 GB at batch 1024, G = 20,000, and 0.16 GB at batch
    512. ``threads`` sets faiss's OpenMP threads for the call (restored afterwards); None leaves
    faiss's setting alone.
    """
    _check_embeddings("probe", probe)
    _check_embeddings("gallery", gallery)
    if probe.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"probe and gallery differ in dimension: {probe.shape[1]} vs {gallery.shape[1]}"
        )
    _check_labels("probe_labels", probe_labels, probe.shape[0])
    _check_labels("gallery_labels", gallery_labels, gallery.shape[0])
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    p_code, g_code = _label_codes(probe_labels, gallery_labels)  # (P,), (G,)
    n_rel = np.bincount(g_code, minlength=int(p_code.max()) + 1)[p_code]  # (P,) R per probe
    n_gal = gallery.shape[0]
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(np.ascontiguousarray(gallery, dtype=np.float32))
    ap = np.full(probe.shape[0], np.nan)  # (P,)
    todo = np.flatnonzero(n_rel > 0)  # probes with no match are never searched
    saved = faiss.omp_get_max_threads()
    if threads is not None:
        faiss.omp_set_num_threads(threads)
    try:
        for s in range(0, todo.shape[0], batch):
            rows_p = todo[s : s + batch]  # (B,)
            xq = np.ascontiguousarray(probe[rows_p], dtype=np.float32)  # (B, D)
            dist, ids = index.search(xq, n_gal)  # (B, G) descending, (B, G)
            if ids.min() < 0:
                raise RuntimeError("faiss returned fewer than G results")
            rel = g_code[ids] == p_code[rows_p, None]  # (B, G)
            r = n_rel[rows_p]  # (B,)
            row, col = np.nonzero(rel)  # row-major: ranks ascending within a row
            hits = np.arange(row.shape[0]) - np.repeat(np.cumsum(r) - r, r) + 1  # (ΣR,)
            ap_b = np.bincount(row, weights=hits / (col + 1), minlength=rows_p.shape[0]) / r
            # A relevant item tied with a neighbour: redo that probe by the tie rule.
            d_here = dist[row, col]
            tied = (col > 0) & (dist[row, np.maximum(col - 1, 0)] == d_here)
            tied |= (col < n_gal - 1) & (dist[row, np.minimum(col + 1, n_gal - 1)] == d_here)
            for b in np.unique(row[tied]):
                ap_b[b] = _tied_ap(dist[b], rel[b])
            ap[rows_p] = ap_b
    finally:
        if threads is not None:
            faiss.omp_set_num_threads(saved)
    return ap


def retrieval_map(
    probe: np.ndarray,
    probe_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    batch: int = 512,
    threads: int | None = None,
) -> float:
    """Mean average precision, in [0, 1], over the probes with at least one relevant item.

    Arguments as :func:`retrieval_ap` (probe (P, D), probe_labels (P,), gallery (G, D),
    gallery_labels (G,)). Probes with no relevant gallery item are skipped (their AP is
    undefined); ``np.isnan(retrieval_ap(...)).sum()`` counts them. ValueError when no probe has a
    match. Compare with :func:`expected_random_map` on the same labels, its chance level.
    """
    ap = retrieval_ap(probe, probe_labels, gallery, gallery_labels, batch, threads)
    if np.isnan(ap).all():
        raise ValueError("no probe has a relevant gallery item: mAP is undefined")
    return float(np.nanmean(ap))


def _harmonic(n: int) -> float:
    """H_n = 1 + 1/2 + ... + 1/n (H_0 = 0), summed smallest terms first."""
    return float(np.sum(1.0 / np.arange(n, 0, -1, dtype=np.float64)))


def _expected_random_ap(r: np.ndarray, g: int) -> np.ndarray:
    h = _harmonic(g)
    if g == 1:
        return np.ones(r.shape)
    out: np.ndarray = (h + (r - 1) / (g - 1) * (g - h)) / g
    return out


def expected_random_ap(n_relevant: int, gallery_size: int) -> float:
    """Exact expected AP of a uniformly random ranking: R relevant items among G (1 <= R <= G).

    ``E[AP] = (1/G) [H_G + (R - 1)/(G - 1) · (G - H_G)]``, H_G the G-th harmonic number
    (``H_G / G`` for R = 1, 1 for R = G). Derivation: AP = (1/R) Σ_i Σ_j [r_j <= r_i] / r_i over
    relevant i, j with ranks r. The R terms j = i give E[1/r_i] = H_G / G; for each of the
    R(R - 1) pairs j != i, E[[r_j < r_i] / r_i] = (1/G) Σ_k (k - 1) / ((G - 1) k)
    = (G - H_G) / (G (G - 1)).
    """
    if not 1 <= n_relevant <= gallery_size:
        raise ValueError(
            f"need 1 <= n_relevant <= gallery_size, got R = {n_relevant}, G = {gallery_size}"
        )
    return float(_expected_random_ap(np.array([n_relevant], dtype=np.float64), gallery_size)[0])


def expected_random_map(probe_labels: np.ndarray, gallery_labels: np.ndarray) -> float:
    """Chance mAP of a retrieval: the mean of :func:`expected_random_ap` over the probes.

    probe_labels: (P,), gallery_labels: (G,). Each probe with R >= 1 relevant gallery items (equal
    label) contributes ``expected_random_ap(R, G)``; probes with R = 0 are skipped, as in
    :func:`retrieval_map`. ValueError when no probe has a match.
    """
    if probe_labels.ndim != 1 or gallery_labels.ndim != 1 or gallery_labels.shape[0] == 0:
        raise ValueError(
            f"need (P,) and non-empty (G,) labels, got {probe_labels.shape}, {gallery_labels.shape}"
        )
    p_code, g_code = _label_codes(probe_labels, gallery_labels)
    r = np.bincount(g_code, minlength=int(p_code.max(initial=0)) + 1)[p_code]  # (P,)
    r = r[r > 0]
    if r.shape[0] == 0:
        raise ValueError("no probe has a relevant gallery item: mAP is undefined")
    return float(_expected_random_ap(r.astype(np.float64), gallery_labels.shape[0]).mean())


def margin_fraction(
    value: float | None, oracle: float | None, chance: float | None
) -> float | None:
    """A score as a share of the oracle's margin over chance, ``(value − chance) / (oracle −
    chance)``: 0 at chance, 1 at the oracle (for EER too, where lower is better). None when a
    term is missing or the oracle is at chance."""
    if value is None or oracle is None or chance is None or math.isclose(oracle, chance):
        return None
    return (value - chance) / (oracle - chance)
