"""Evaluation metrics of the field (Nagrani et al. 2018): 1:N matching, verification, retrieval.

Every evaluation number goes through these functions, so that every method is scored by the same
code on the same trials. They are pure numpy: embeddings in, figures out; no file, no model, no
randomness. Embeddings are L2-normalised float rows and the score of a pair is their inner
product (the cosine); nothing here normalises for the caller.

Ties are resolved by one rule throughout: the *expected* value of the figure under a uniformly
random order of the tied items. A matching trial whose true candidate ties with ``t`` impostors
scores ``1/(t+1)``; ROC AUC counts a tied (positive, negative) pair ½; AP averages over the orders
of each group of tied gallery items (McSherry & Najork, ECIR 2008). Results are therefore
deterministic and independent of any sort's internal order.

The chance levels of retrieval are exact (:func:`expected_random_ap`), so a reported mAP can be
set beside the mAP of a random ranking on the very same gallery.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
from threadpoolctl import threadpool_limits


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

# A probe with at most this many thresholds (two per distinct relevant score) counts the gallery
# scores above each by one comparison pass over its (G,) row per threshold; past it, one binary
# search of each gallery score among the thresholds is cheaper (measured at G = 20,000: the
# passes won up to 80 thresholds, 1.05 s vs 1.45 s a 512-probe batch, each pass ~11 ms).
_COMPARE_MAX = 128
_ROW_CHUNK_BYTES = 1 << 20  # rows of scores compared at a time: about L2-cache sized
_TIE_PLACES = 1 << 20  # tied places expanded at a time when averaging a tied block


def _label_codes(probe_labels: np.ndarray, gallery_labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Shared int32 codes for the two label arrays: (P,), (G,)."""
    _, codes = np.unique(np.concatenate([probe_labels, gallery_labels]), return_inverse=True)
    codes = codes.reshape(-1).astype(np.int32)
    return codes[: probe_labels.shape[0]], codes[probe_labels.shape[0] :]


def _count_above(
    scores: np.ndarray, rows: np.ndarray, thr: np.ndarray, m: np.ndarray
) -> np.ndarray:
    """(B, K) int64: for i < B, the number of ``scores[rows[i]]`` strictly above each of
    ``thr[i, :m[i]]`` (columns from m[i] on are left 0). Never sorts a score row.

    scores (N, G) float32; rows (B,) int64; thr (B, K) float32, each row's first m[i] entries
    ascending; m (B,) int64, ascending, so that rows with alike m are compared together.
    """
    n_gal = scores.shape[1]
    out = np.zeros(thr.shape, dtype=np.int64)
    small = int(np.searchsorted(m, _COMPARE_MAX, side="right"))  # rows [0, small) compare
    chunk = max(1, _ROW_CHUNK_BYTES // (4 * n_gal))
    buf = np.empty((chunk, n_gal), dtype=np.bool_)
    for lo in range(0, small, chunk):
        hi = min(lo + chunk, small)
        blk, b = scores[rows[lo:hi]], buf[: hi - lo]  # (h, G) copy, cache-sized
        for j in range(int(m[hi - 1])):  # rows past their own m compare with padding, unused
            np.greater(blk, thr[lo:hi, j : j + 1], out=b)
            out[lo:hi, j] = b.view(np.uint8).sum(axis=1, dtype=np.int32)
    for i in range(small, rows.shape[0]):  # many thresholds: bin every score among them instead
        t = thr[i, : m[i]]
        # searchsorted: #{t < s} for each score s; s > t[k] iff that is > k.
        idx = np.searchsorted(t, scores[rows[i]], side="left")
        hist = np.bincount(idx, minlength=t.shape[0] + 1)
        out[i, : m[i]] = np.cumsum(hist[::-1])[::-1][1:]
    return out


def _tied_block_sum(o: np.ndarray, n: np.ndarray, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(K,) float64: for K tied blocks, the expected sum of the precisions of their relevant items.

    A block of n tied items at ranks o+1..o+n holding a relevant items, with c relevant items
    above it, puts a relevant item at its i-th place with probability a/n, and then holds in
    expectation c + 1 + (i-1)(a-1)/(n-1) relevant items up to it (hypergeometric): the sum is
    (a/n) Σ_i (c + 1 + (i-1)(a-1)/(n-1)) / (o+i), summed place by place, at most
    ``_TIE_PLACES`` places expanded at a time.
    """
    out = np.empty(n.shape[0])
    ends = np.cumsum(n)
    lo = 0
    while lo < n.shape[0]:
        hi = max(lo + 1, int(np.searchsorted(ends, ends[lo] - n[lo] + _TIE_PLACES, "right")))
        nn, oo, aa, cc = n[lo:hi], o[lo:hi], a[lo:hi], c[lo:hi]
        blk = np.repeat(np.arange(hi - lo), nn)  # block of each expanded place
        i = np.arange(blk.shape[0]) - np.repeat(np.cumsum(nn) - nn, nn) + 1  # 1-based place
        hits = cc[blk] + 1 + (i - 1) * (aa[blk] - 1) / np.maximum(nn[blk] - 1, 1)
        out[lo:hi] = np.bincount(blk, weights=hits / (oo[blk] + i), minlength=hi - lo) * aa / nn
        lo = hi
    return out


def _batch_ap(
    scores: np.ndarray, rel_row: np.ndarray, rel_col: np.ndarray, r: np.ndarray
) -> np.ndarray:
    """(B,) AP of B probes from their (B, G) float32 scores, by counting, without sorting a row.

    rel_row, rel_col: (ΣR,) the relevant (probe row, gallery column) cells, rows ascending;
    r: (B,) R per row, all >= 1.
    """
    n_row = scores.shape[0]
    t = scores[rel_row, rel_col]  # (ΣR,) relevant scores
    order = np.lexsort((t, rel_row))  # by row, then score ascending
    row, t = rel_row[order], t[order]
    # Distinct relevant scores of each row: (U,) blocks with their row, score, and count a.
    first = np.r_[True, (row[1:] != row[:-1]) | (t[1:] != t[:-1])]
    start = np.flatnonzero(first)
    u_row, u_val = row[start], t[start]
    a = np.diff(np.r_[start, row.shape[0]])  # (U,) relevant items with that score
    m = np.bincount(u_row, minlength=n_row)  # (B,) distinct relevant scores per row
    u_pos = np.arange(u_row.shape[0]) - np.repeat(np.cumsum(m) - m, m)  # place within its row
    # Thresholds per row, rows re-ordered by m: [u - 1 ulp..., u...] so that
    # #{s > u - 1 ulp} = #{s >= u}. Ascending within the row since u is.
    by_m = np.argsort(m, kind="stable")  # (B,)
    slot = np.empty(n_row, dtype=np.int64)
    slot[by_m] = np.arange(n_row)
    m2 = 2 * m[by_m]
    thr = np.full((n_row, int(m2[-1])), np.inf, dtype=np.float32)
    below = np.nextafter(u_val, np.float32(-np.inf))
    # Interleave: column 2k holds u_k - 1 ulp, 2k + 1 holds u_k (u_{k-1} <= u_k - 1 ulp < u_k).
    thr[slot[u_row], 2 * u_pos] = below
    thr[slot[u_row], 2 * u_pos + 1] = u_val
    cnt = _count_above(scores, by_m, thr, m2)  # (B, 2 max m)
    ge = cnt[slot[u_row], 2 * u_pos]  # (U,) gallery items scoring >= u
    gt = cnt[slot[u_row], 2 * u_pos + 1]  # (U,) gallery items scoring > u: the block's offset o
    n = ge - gt  # (U,) tied block size, >= a
    # Relevant items above each block: the row's a summed over the higher scores.
    c = np.cumsum(a[::-1])[::-1] - a  # suffix sums over everything after, then per row:
    row_end = np.cumsum(m)  # blocks of row b are [row_end[b] - m[b], row_end[b])
    c = c - np.repeat(np.r_[np.cumsum(a[::-1])[::-1], 0][row_end], m)
    w = np.empty(u_row.shape[0])
    lone = n == 1  # no tie: one relevant item at rank o + 1 with c + 1 hits so far
    w[lone] = (c[lone] + 1) / (gt[lone] + 1)
    tie = ~lone
    if tie.any():
        w[tie] = _tied_block_sum(gt[tie], n[tie], a[tie], c[tie])
    out: np.ndarray = np.bincount(u_row, weights=w, minlength=n_row) / r
    return out


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
    gallery_labels (G,) identity labels of any comparable dtype. Every probe scores all G gallery
    items by inner product, exactly (float32 scores, one numpy matrix product per batch). A
    gallery item is relevant to a probe when their labels are equal; AP is the mean, over the
    probe's R relevant items, of the precision at each one's rank (hits so far / rank). A probe
    with R = 0 has no AP: its entry is NaN (count them with ``np.isnan``).

    Method: no score row is sorted. AP needs, for each relevant item, only how many gallery items
    score strictly above it (o) and how many tie with it (n, itself included), and how many
    relevant items score above it (c, from sorting the probe's R relevant scores). For each of a
    probe's distinct relevant scores u the (G,) row is compared with u and with u minus one ulp
    (counting ``> u`` and ``>= u``): 2 passes a distinct score, O(G R) per probe, vectorised over
    L2-sized groups of rows. A probe with more than 64 distinct relevant scores instead bins its G
    scores among those thresholds by binary search, O(G log R).

    Ties: items with equal float32 scores are a tied block, and AP is its expectation over random
    orders of every block (McSherry & Najork 2008): a block of n items at ranks o+1..o+n holding a
    relevant items, c relevant above, adds (a/n) Σ_i (c + 1 + (i-1)(a-1)/(n-1)) / (o+i); with
    n = 1 that is the plain (c + 1)/(o + 1). So results are deterministic and need no tie-break.
    The float32 scores themselves may differ in the last bit between BLAS builds, batch sizes and
    BLAS thread counts, and such a difference can split or join a tie or swap two near-equal
    neighbours.

    Probes are scored ``batch`` at a time into one reused float32 (batch, G) block, so peak memory
    beyond the inputs is about 4.2 bytes a (probe, gallery item) cell: measured with tracemalloc
    at G = 20,000, D = 128, R = 10, 44 MB at batch 512, 86 MB at 1024, 170 MB at 2048 (the score
    block, a ~1 MB copy of the rows being compared and its boolean mask, index arrays per batch).
    ``threads`` sets, for the call, the threads of numpy's BLAS (with threadpoolctl; restored
    afterwards), which run the matrix product; the counting runs on the calling thread. None
    leaves the setting alone.
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
    norms = [float(np.linalg.norm(x.astype(np.float64), axis=1).max()) for x in (probe, gallery)]
    if norms[0] * norms[1] > 1e37:
        raise ValueError("probe and gallery norms are too large: float32 scores could overflow")
    p_code, g_code = _label_codes(probe_labels, gallery_labels)  # (P,), (G,)
    counts = np.bincount(g_code, minlength=int(max(p_code.max(), g_code.max())) + 1)  # (L,)
    first = np.cumsum(counts) - counts  # (L,) start of each label's items in g_by_label
    g_by_label = np.argsort(g_code, kind="stable")  # (G,) gallery rows grouped by label
    n_rel = counts[p_code]  # (P,) R per probe
    gal_t = np.ascontiguousarray(gallery, dtype=np.float32).T  # (D, G)
    ap = np.full(probe.shape[0], np.nan)  # (P,)
    todo = np.flatnonzero(n_rel > 0)  # probes with no match are never scored
    limits = (
        threadpool_limits(limits=threads, user_api="blas")
        if threads is not None
        else contextlib.nullcontext()
    )
    buf = np.empty((min(batch, todo.shape[0]), gallery.shape[0]), dtype=np.float32)
    with limits:
        for s in range(0, todo.shape[0], batch):
            rows_p = todo[s : s + batch]  # (B,)
            xq = np.ascontiguousarray(probe[rows_p], dtype=np.float32)  # (B, D)
            scores = np.matmul(xq, gal_t, out=buf[: rows_p.shape[0]])  # (B, G) float32
            r = n_rel[rows_p]  # (B,)
            rel_row = np.repeat(np.arange(rows_p.shape[0]), r)  # (ΣR,)
            k = np.arange(rel_row.shape[0]) - np.repeat(np.cumsum(r) - r, r)  # (ΣR,) 0..R-1
            rel_col = g_by_label[first[p_code[rows_p]][rel_row] + k]  # (ΣR,)
            ap[rows_p] = _batch_ap(scores, rel_row, rel_col, r)
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
