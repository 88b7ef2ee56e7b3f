"""Aggregates over seeds and paired verdicts from per-seed metrics files and trial outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluate.aggregate import (
    Scored,
    TrialStats,
    aggregate_one,
    leaves,
    load_scored,
    verdicts,
)
from pipeline.evaluate.stats import seed_interval
from pipeline.schema import OUTCOMES, write_table

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


def test_overlay_tables_average_curves_over_seeds(tmp_path: Path) -> None:
    from pipeline.evaluate.aggregate import ROC_GRID, overlay_tables

    for seed, (acc, tpr_mid) in {1: (0.6, 0.4), 2: (0.8, 0.6)}.items():
        d = tmp_path / "cid" / f"s{seed}"
        d.mkdir(parents=True)
        pd.DataFrame({"n": [2, 3], "v2f": [acc, acc - 0.1], "f2v": [acc, acc]}).to_csv(
            d / "match_curve.csv", index=False
        )
        pd.DataFrame({"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, tpr_mid, 1.0]}).to_csv(
            d / "roc.csv", index=False
        )
    empty = tmp_path / "oracle"  # unavailable: header-only tables, left out
    empty.mkdir()
    (empty / "match_curve.csv").write_text("n,v2f,f2v\n")
    (empty / "roc.csv").write_text("fpr,tpr\n")
    match, roc = overlay_tables(["cid"], [1, 2], tmp_path, ("oracle",))
    assert match.to_dict("list") == {
        "model": ["cid", "cid"], "n": [2, 3], "v2f": [0.7, 0.6], "f2v": [0.7, 0.7]
    }  # fmt: skip
    assert set(roc["model"]) == {"cid"} and len(roc) == len(ROC_GRID)
    at = dict(zip(roc["fpr"], roc["tpr"], strict=True))
    assert at[0.5] == 0.5 and at[0.25] == 0.25  # mean of 0.4 and 0.6, linear in between


def test_headline_reads_the_aggregates_and_available_references(tmp_path: Path) -> None:
    from stages.aggregate import headline

    leaf = {"mean": 0.7, "half_width": 0.02}
    agg = {"match_1to2": {"v2f": {"U": {"test_unseen": leaf}}, "f2v": {"U": {"test_unseen": leaf}}}}
    (tmp_path / "oracle.json").write_text(
        json.dumps({"match_1to2": {"v2f": {"U": {"test_unseen": 0.88}}}})
    )
    (tmp_path / "ceiling.json").write_text(json.dumps({"available": False, "reason": "x"}))
    out = headline({"cid": agg}, tmp_path)
    assert out == {
        "cid": {"v2f_1to2": 0.7, "v2f_1to2_hw": 0.02, "f2v_1to2": 0.7},
        "oracle": {"v2f_1to2": 0.88},
    }
