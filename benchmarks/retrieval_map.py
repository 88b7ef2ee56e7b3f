"""Benchmark of retrieval mAP (``pipeline.evaluate.metrics``) on random embeddings, against chance
and numpy.

``python -m benchmarks.retrieval_map`` (flags: ``--help``). Random Gaussian embeddings,
L2-normalised, stand in for a method's voice and face embeddings; every identity has
``--per-identity`` gallery items, so every probe has that many relevant items. In one run it

- times :func:`pipeline.evaluate.metrics.retrieval_ap` (the whole of ``retrieval_map``'s work: exact
  float32 scores of every probe against the whole gallery, then AP by counting, no sort) and
  reports probes per second;
- checks the result: random embeddings rank the gallery uniformly at random, so the mAP must sit
  within a few standard errors (from the per-probe AP spread) of the exact chance level
  :func:`pipeline.evaluate.metrics.expected_random_map`;
- times a plain numpy baseline (one matrix product, a full ``argsort`` per probe, AP from the
  sorted relevance) on the first ``--baseline-probes`` probes, and prints the throughput ratio
  and the largest |AP difference| on those probes. The baseline breaks ties by sort order, so the
  two agree exactly only where no relevant item ties. Random Gaussian float32 scores do tie now
  and then (1 of the 10,000 relevant cells of the defaults' 1,000 baseline probes; it moved that
  probe's AP by 1.4e-8), so the script counts those cells (``tied_relevant_cells``).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluate.metrics import expected_random_map, retrieval_ap


def _unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def numpy_ap(
    probe: np.ndarray,
    probe_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    batch: int,
) -> np.ndarray:
    """Baseline: (P,) AP by a full numpy sort of each probe's (G,) scores (ties: sort order)."""
    out = np.empty(probe.shape[0])
    ranks = np.arange(1, gallery.shape[0] + 1)  # (G,)
    for s in range(0, probe.shape[0], batch):
        scores = probe[s : s + batch] @ gallery.T  # (B, G)
        order = np.argsort(-scores, axis=1)  # (B, G), numpy's fastest sort
        rel = gallery_labels[order] == probe_labels[s : s + batch, None]  # (B, G)
        hits = np.cumsum(rel, axis=1)  # (B, G)
        out[s : s + batch] = (rel * hits / ranks).sum(1) / rel.sum(1)
    return out


def _tied_relevant(
    probe: np.ndarray,
    probe_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    batch: int,
) -> int:
    """How many (probe, relevant item) cells share their float32 score with another gallery item
    of that probe: where the baseline's sort order and the tie rule may differ."""
    n = 0
    for s in range(0, probe.shape[0], batch):
        scores = probe[s : s + batch] @ gallery.T  # (B, G)
        srt = np.sort(scores, axis=1)  # (B, G)
        rel = gallery_labels[None, :] == probe_labels[s : s + batch, None]  # (B, G)
        lo = np.stack([np.searchsorted(a, b, "left") for a, b in zip(srt, scores, strict=True)])
        hi = np.stack([np.searchsorted(a, b, "right") for a, b in zip(srt, scores, strict=True)])
        n += int(((hi - lo > 1) & rel).sum())
    return n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gallery", type=int, default=20000, help="gallery items")
    ap.add_argument("--probes", type=int, default=20000, help="probes")
    ap.add_argument("--dim", type=int, default=128, help="embedding dimension")
    ap.add_argument("--per-identity", type=int, default=10, help="gallery items per identity")
    ap.add_argument("--batch", type=int, default=512, help="probes per matrix product")
    ap.add_argument(
        "--threads", type=int, default=None, help="numpy BLAS threads (default: unchanged)"
    )
    ap.add_argument("--baseline-probes", type=int, default=1000, help="probes for numpy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    if args.gallery % args.per_identity:
        ap.error("--gallery must be a multiple of --per-identity")

    rng = np.random.default_rng(args.seed)
    n_id = args.gallery // args.per_identity
    gallery = _unit(rng.normal(size=(args.gallery, args.dim)))  # (G, D)
    probe = _unit(rng.normal(size=(args.probes, args.dim)))  # (P, D)
    g_lab = rng.permutation(np.repeat(np.arange(n_id), args.per_identity))  # (G,)
    p_lab = rng.permutation(np.resize(np.arange(n_id), args.probes))  # (P,) balanced
    out: dict[str, Any] = {
        "gallery": args.gallery,
        "probes": args.probes,
        "identities": n_id,
        "dim": args.dim,
        "relevant_per_probe": args.per_identity,
        "batch": args.batch,
    }

    t0 = time.perf_counter()
    per_probe = retrieval_ap(probe, p_lab, gallery, g_lab, batch=args.batch, threads=args.threads)
    wall = time.perf_counter() - t0
    m_ap = float(np.nanmean(per_probe))
    se = float(np.nanstd(per_probe, ddof=1) / math.sqrt(np.isfinite(per_probe).sum()))
    chance = expected_random_map(p_lab, g_lab)
    out |= {
        "wall_s": round(wall, 2),
        "probes_per_s": round(args.probes / wall),
        "map": m_ap,
        "chance_map": chance,
        "map_se": se,
        "map_minus_chance_in_se": round((m_ap - chance) / se, 2),
    }

    nb = min(args.baseline_probes, args.probes)
    t0 = time.perf_counter()
    sub = retrieval_ap(
        probe[:nb], p_lab[:nb], gallery, g_lab, batch=args.batch, threads=args.threads
    )
    wall_sub = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = numpy_ap(probe[:nb], p_lab[:nb], gallery, g_lab, args.batch)
    wall_np = time.perf_counter() - t0
    out |= {
        "numpy_probes": nb,
        "numpy_wall_s": round(wall_np, 2),
        "numpy_probes_per_s": round(nb / wall_np),
        "same_probes_wall_s": round(wall_sub, 2),
        "same_probes_per_s": round(nb / wall_sub),
        "speed_vs_numpy": round((args.probes / wall) / (nb / wall_np), 2),
        "speed_vs_numpy_same_probes": round(wall_np / wall_sub, 2),
        "max_abs_ap_diff_vs_numpy": float(np.max(np.abs(base - sub))),
        "tied_relevant_cells": _tied_relevant(probe[:nb], p_lab[:nb], gallery, g_lab, args.batch),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(out, indent=2))
    print(
        f"mAP {m_ap:.5f} vs chance {chance:.5f} ({out['map_minus_chance_in_se']:+.2f} SE) on a "
        f"gallery of {args.gallery} items, {n_id} identities; retrieval_ap "
        f"{out['probes_per_s']} probes/s, numpy full sort {out['numpy_probes_per_s']} probes/s "
        f"-> {out['speed_vs_numpy']:.2f}x ({out['speed_vs_numpy_same_probes']:.2f}x on the same "
        f"{nb} probes); max |AP diff| {out['max_abs_ap_diff_vs_numpy']:.1e} with "
        f"{out['tied_relevant_cells']} tied relevant cells"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
