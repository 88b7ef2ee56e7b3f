"""Aggregates over seeds and paired verdicts from per-seed metrics files and trial outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.aggregate import Scored, TrialStats, aggregate_one, leaves, load_scored, verdicts
from pipeline.schema import OUTCOMES, write_table
from pipeline.stats import seed_interval

IDS = [f"id{i:02d}" for i in range(20)]


def _outcomes(rng: np.random.Generator, p_right: float, n: int = 400) -> pd.DataFrame:
    """Match trials (v2f U test_unseen) right with probability ``p_right``, and verify pairs."""
    ident = rng.choice(IDS, n)
    right = (rng.random(n) < p_right).astype(float)
    label = rng.random(n) < 0.5
    score = label * (p_right - 0.5) * 4 + rng.normal(size=n)
    common = {"split": "test_unseen", "constraint": "U", "identity": ident}
    match = pd.DataFrame({**common, "protocol": "match", "direction": "v2f", "trial": range(n)})
    match = match.assign(value=right, label=pd.array([None] * n, "boolean"))
    verify = pd.DataFrame({**common, "protocol": "verify", "direction": "vf", "trial": range(n)})
    verify = verify.assign(value=score, label=label)
    return pd.concat([match, verify], ignore_index=True)


def _scored(name: str, p_right: float, seeds: tuple[int, ...], rng: np.random.Generator) -> Scored:
    outs, mets = [], []
    for _ in seeds:
        o = _outcomes(rng, p_right)
        acc = float(o.loc[o["protocol"] == "match", "value"].mean())
        mets.append(
            {
                "method": name,
                "match_1to2": {"v2f": {"U": {"test_unseen": round(acc, 4)}}},
                "retrieve_map": {"v2f": {"U": {"test_unseen": 0.1}}},
                "chance": {"match_1to2": 0.5},
                "probes": {"face": {"gender": {"available": True, "accuracy": acc}}},
            }
        )
        outs.append(o)
    return Scored(name, seeds, tuple(mets), tuple(outs))


def test_aggregate_means_intervals_and_bootstrap() -> None:
    rng = np.random.default_rng(0)
    sc = _scored("cid", 0.65, (1, 2, 3), rng)
    ts = TrialStats([sc])
    agg = aggregate_one(sc, ts, n_boot=300, seed=0)
    leaf = agg["match_1to2"]["v2f"]["U"]["test_unseen"]
    per_seed = [m["match_1to2"]["v2f"]["U"]["test_unseen"] for m in sc.metrics]
    iv = seed_interval(per_seed)
    assert agg["seeds"] == [1, 2, 3] and leaf["n"] == 3
    assert leaf["mean"] == pytest.approx(iv.mean, abs=1e-4)
    assert leaf["half_width"] == pytest.approx(iv.half_width, abs=1e-4)
    assert leaf["ci95_low"] < leaf["mean"] < leaf["ci95_high"]
    assert leaf["boot95_low"] < leaf["mean"] < leaf["boot95_high"]
    auc = agg["verify_auc"]["vf"]["U"]["test_unseen"] if "verify_auc" in agg else None
    assert auc is None  # only protocols of the metrics files are aggregated
    # retrieval has no trial outcomes: an interval over seeds, no bootstrap
    rmap = agg["retrieve_map"]["v2f"]["U"]["test_unseen"]
    assert rmap["mean"] == 0.1 and "boot95_low" not in rmap and rmap["half_width"] == 0.0
    assert agg["probes"]["face"]["gender"]["accuracy"]["n"] == 3
    assert agg["probes"]["face"]["gender"]["available"] is True


def test_single_seed_has_a_bootstrap_but_no_seed_interval() -> None:
    sc = _scored("cid", 0.7, (5,), np.random.default_rng(1))
    agg = aggregate_one(sc, TrialStats([sc]), n_boot=200, seed=0)
    leaf = agg["match_1to2"]["v2f"]["U"]["test_unseen"]
    assert "half_width" not in leaf and leaf["boot95_low"] < leaf["mean"] < leaf["boot95_high"]


def test_verdicts_rank_with_ties() -> None:
    rng = np.random.default_rng(2)
    seeds = (1, 2, 3)
    scored = [
        _scored("cid", 0.60, seeds, rng),
        _scored("strong", 0.80, seeds, rng),
        _scored("twin", 0.795, seeds, rng),
        _scored("lowshot_cid", 0.60, seeds, rng),
    ]
    ts = TrialStats(scored)
    v = verdicts(["cid", "strong", "twin"], ["cid"], "cid", ts, n_boot=500, seed=0)
    head = v["metrics"]["match_1to2"]["v2f"]["U"]["test_unseen"]
    assert head["top"] in ("strong", "twin")
    assert sorted(head["tied_for_first"]) == ["strong", "twin"]
    assert head["vs_reference"]["strong"]["verdict"] == "better"
    assert head["vs_top"]["cid"]["verdict"] == "worse"
    other = "twin" if head["top"] == "strong" else "strong"
    assert head["vs_top"][other]["verdict"] == "not distinguishable"
    gain = head["lowshot_vs_base"]["lowshot_cid"]
    assert gain["verdict"] == "not distinguishable" and gain["ci95_low"] < 0 < gain["ci95_high"]
    auc = v["metrics"]["verify_auc"]["vf"]["U"]["test_unseen"]
    assert auc["vs_reference"]["strong"]["verdict"] == "better"


def test_load_scored_reads_the_layout_and_names_missing_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    sc = _scored("cmpc", 0.6, (1, 2), rng)
    for seed, m, o in zip(sc.seeds, sc.metrics, sc.outcomes, strict=True):
        path = tmp_path / "metrics" / "seeds" / f"cmpc-s{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(m))
        write_table(o, tmp_path / "eval" / "cmpc" / f"s{seed}" / "outcomes.parquet", OUTCOMES)
    got = load_scored("cmpc", [2, 1], tmp_path / "metrics", tmp_path / "eval")
    assert got.seeds == (1, 2) and len(got.outcomes[0]) == 800
    assert leaves(got.metrics[0]) == leaves(sc.metrics[0])
    with pytest.raises(FileNotFoundError, match=r"cmpc-s3\.json"):
        load_scored("cmpc", [1, 3], tmp_path / "metrics", tmp_path / "eval")
