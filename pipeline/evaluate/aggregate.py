"""Per-method aggregates over training seeds and the paired verdicts between methods.

Input: for each scored model name (a method, or ``lowshot_<method>``) and each training seed, the
metrics file of ``evaluate``/``lowshot`` (protocol -> direction -> constraint -> split -> value)
and its per-trial outcomes (:data:`pipeline.schema.OUTCOMES`). Output:

- per name, the same nested keys with a leaf dict per metric: ``mean``, ``std``, ``n``, and the
  95 % interval over seeds (``ci95_low``, ``ci95_high``, ``half_width``; absent for one seed); for
  the bootstrapped metrics (:data:`BOOTSTRAPPED`) also the 95 % identity-bootstrap interval
  (``boot95_low``, ``boot95_high``), which exists for a single seed too;
- the verdicts: every method against the reference (``cid``) and against the method with the
  highest mean, on each bootstrapped metric: the paired difference, its 95 % interval and
  better / worse / not distinguishable (:mod:`pipeline.evaluate.stats`); the methods tied for first
  (the top one and every method not distinguishable from it); each low-shot model against the method
  it was fine-tuned from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.evaluate.stats import (
    MatchStats,
    PairedDifference,
    Stats,
    VerifyStats,
    identity_bootstrap,
    identity_draws,
    paired_difference,
    seed_interval,
)
from pipeline.schema import OUTCOMES, read_table

#: Metrics that get an identity bootstrap and paired verdicts: (protocol in the metrics file,
#: protocol in the outcomes table). Every direction, constraint and split present is covered.
BOOTSTRAPPED: tuple[tuple[str, str], ...] = (("match_1to2", "match"), ("verify_auc", "verify"))
#: Top-level keys of a per-seed metrics file that are not protocol trees.
NOT_PROTOCOLS = frozenset(
    {"method", "chance", "retrieve_gallery", "trials", "available", "reason", "probes"}
)
Key = tuple[str, str, str, str]  # protocol, direction, constraint, split


def at(tree: Any, *keys: str) -> Any:
    """``tree[k1][k2]...`` of nested metrics, or None where a key is absent."""
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def leaves(tree: dict[str, Any], skip: frozenset[str] = NOT_PROTOCOLS) -> dict[Key, float]:
    """The numeric leaves of a protocol -> direction -> constraint -> split tree."""
    out: dict[Key, float] = {}
    for p, by_d in tree.items():
        if p in skip or not isinstance(by_d, dict):
            continue
        for d, by_c in by_d.items():
            for c, by_s in by_c.items():
                for s, v in by_s.items():
                    if isinstance(v, int | float) and not isinstance(v, bool):
                        out[(p, d, c, s)] = float(v)
    return out


def _nest(out: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    for k in keys[:-1]:
        out = out.setdefault(k, {})
    out[keys[-1]] = value


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


@dataclass(frozen=True)
class Scored:
    """One model name's per-seed metrics files and trial outcomes, seeds in ascending order."""

    name: str
    seeds: tuple[int, ...]
    metrics: tuple[dict[str, Any], ...]
    outcomes: tuple[pd.DataFrame, ...]


def load_scored(name: str, seeds: list[int], metrics_dir: Path, eval_dir: Path) -> Scored:
    """Read ``<metrics>/seeds/<name>-s<seed>.json`` and ``<eval>/<name>/s<seed>/outcomes.parquet``
    for every seed; a missing file is a FileNotFoundError naming it."""
    import json

    mets, outs = [], []
    for seed in sorted(seeds):
        path = metrics_dir / "seeds" / f"{name}-s{seed}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no metrics for {name} with seed {seed}")
        mets.append(json.loads(path.read_text()))
        outs.append(read_table(eval_dir / name / f"s{seed}" / "outcomes.parquet", OUTCOMES))
    return Scored(name, tuple(sorted(seeds)), tuple(mets), tuple(outs))


class TrialStats:
    """Per (protocol, direction, constraint, split), each model's per-seed :data:`Stats`, with
    identity codes shared by every model (so bootstrap draws line up across models)."""

    def __init__(self, scored: list[Scored]) -> None:
        self.codes: dict[str, dict[str, int]] = {}  # split -> identity -> code
        for sc in scored:
            for o in sc.outcomes:
                for split, ids in o.groupby("split")["identity"]:
                    known = self.codes.setdefault(str(split), {})
                    for i in sorted(set(ids)):
                        known.setdefault(i, len(known))
        self.stats: dict[str, dict[Key, list[Stats]]] = {}
        for sc in scored:
            per: dict[Key, list[Stats]] = {}
            for o in sc.outcomes:
                for (split, proto, con, d), g in o.groupby(
                    ["split", "protocol", "constraint", "direction"], sort=True
                ):
                    metric = dict((b, a) for a, b in BOOTSTRAPPED).get(str(proto))
                    if metric is None:
                        continue
                    codes = self.codes[str(split)]
                    ident = np.array([codes[i] for i in g["identity"]], dtype=np.int64)
                    value = g["value"].to_numpy(np.float64)
                    st: Stats
                    if proto == "match":
                        st = MatchStats.from_trials(value, ident, len(codes))
                    else:
                        st = VerifyStats(value, g["label"].to_numpy(dtype=bool), ident)
                    per.setdefault((metric, str(d), str(con), str(split)), []).append(st)
            self.stats[sc.name] = per

    def draws(self, split: str, n_boot: int, seed: int) -> np.ndarray:
        return identity_draws(len(self.codes[split]), n_boot, seed)


def aggregate_one(sc: Scored, ts: TrialStats, n_boot: int, seed: int) -> dict[str, Any]:
    """The aggregate metrics file of one model name (see the module docstring)."""
    per_seed = [leaves(m) for m in sc.metrics]
    keys = sorted(set().union(*per_seed))
    out: dict[str, Any] = {"method": sc.name, "seeds": list(sc.seeds), "n_seeds": len(sc.seeds)}
    for key in keys:
        vals = [ps[key] for ps in per_seed if key in ps]
        iv = seed_interval(vals)
        leaf: dict[str, Any] = {"mean": _r(iv.mean), "n": iv.n}
        if iv.half_width is not None:
            leaf.update(
                std=_r(iv.std), half_width=_r(iv.half_width), ci95_low=_r(iv.low),
                ci95_high=_r(iv.high),
            )  # fmt: skip
        stats = ts.stats.get(sc.name, {}).get(key)
        if stats:
            b = identity_bootstrap(stats, ts.draws(key[3], n_boot, seed))
            leaf.update(boot95_low=_r(b.low), boot95_high=_r(b.high))
        _nest(out, key, leaf)
    fractions = [leaves(m.get("oracle_fraction", {}), frozenset()) for m in sc.metrics]
    for key in sorted(set().union(*fractions)):
        vals = [f[key] for f in fractions if key in f]
        _nest(out, ("oracle_fraction", *key), _r(float(np.mean(vals))))
    first = sc.metrics[0]
    for k in ("chance", "retrieve_gallery", "trials"):
        if k in first:
            out[k] = first[k]
    probes = [m["probes"] for m in sc.metrics if isinstance(m.get("probes"), dict)]
    if probes:
        out["probes"] = _aggregate_probes(probes)
    return out


def _aggregate_probes(probes: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean (and 95 % seed interval) of every numeric leaf of the per-seed probe figures; other
    leaves (e.g. why an attribute is unavailable) are kept from the first seed that has them."""
    out: dict[str, Any] = {}
    numeric: dict[tuple[str, ...], list[float]] = {}

    def collect(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                collect(v, (*path, str(k)))
        elif isinstance(node, int | float) and not isinstance(node, bool):
            numeric.setdefault(path, []).append(float(node))
        elif node is not None and path:
            _nest(out, path, node)

    for p in probes:
        collect(p, ())
    for path, vals in sorted(numeric.items()):
        iv = seed_interval(vals)
        leaf: dict[str, Any] = {"mean": _r(iv.mean), "n": iv.n}
        if iv.half_width is not None:
            leaf.update(half_width=_r(iv.half_width))
        _nest(out, path, leaf)
    return out


def _diff(d: PairedDifference) -> dict[str, Any]:
    return {
        "difference": _r(d.difference),
        "ci95_low": _r(d.low),
        "ci95_high": _r(d.high),
        "identity_half_width": _r(d.identity_half_width),
        "seed_half_width": _r(d.seed_half_width),
        "verdict": d.verdict,
    }


def verdicts(
    methods: list[str],
    lowshot: list[str],
    reference: str,
    ts: TrialStats,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Paired verdicts on every bootstrapped metric (see the module docstring)."""
    out: dict[str, Any] = {"reference": reference, "methods": methods, "metrics": {}}
    keys = sorted({k for m in methods for k in ts.stats.get(m, {})})
    for key in keys:
        have = [m for m in methods if key in ts.stats.get(m, {})]
        if not have:
            continue
        draws = ts.draws(key[3], n_boot, seed)
        means = {m: float(np.mean([s.value() for s in ts.stats[m][key]])) for m in have}
        top = max(have, key=lambda m: (means[m], -have.index(m)))
        entry: dict[str, Any] = {"means": {m: _r(v) for m, v in means.items()}, "top": top}
        vs_ref: dict[str, Any] = {}
        vs_top: dict[str, Any] = {}
        for m in have:
            if m != reference and reference in have:
                vs_ref[m] = _diff(
                    paired_difference(ts.stats[m][key], ts.stats[reference][key], draws)
                )
            if m != top:
                vs_top[m] = _diff(paired_difference(ts.stats[m][key], ts.stats[top][key], draws))
        entry["vs_reference"] = vs_ref
        entry["vs_top"] = vs_top
        entry["tied_for_first"] = [top] + [
            m for m in have if m != top and vs_top[m]["verdict"] != "worse"
        ]
        gains: dict[str, Any] = {}
        for base in lowshot:
            ls = f"lowshot_{base}"
            if key in ts.stats.get(ls, {}) and key in ts.stats.get(base, {}):
                gains[ls] = _diff(paired_difference(ts.stats[ls][key], ts.stats[base][key], draws))
        if gains:
            entry["lowshot_vs_base"] = gains
        _nest(out["metrics"], key, entry)
    return out


#: False-positive rates at which each model's ROC is sampled before averaging over seeds.
ROC_GRID = np.linspace(0.0, 1.0, 101)


def overlay_tables(
    names: list[str], seeds: list[int], eval_dir: Path, references: tuple[str, ...] = ()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tables behind the overlaid plots (one chart per protocol, every model on it): each
    model's 1:N accuracy curve averaged over seeds (``model, n, v2f, f2v``), and its ROC averaged
    over seeds at :data:`ROC_GRID` (``model, fpr, tpr``). ``references`` (``oracle``,
    ``ceiling``) are read from ``eval_dir/<name>/`` and left out when their tables are empty."""
    curves, rocs = [], []
    folders = [(n, [eval_dir / n / f"s{s}" for s in seeds]) for n in names]
    folders += [(r, [eval_dir / r]) for r in references]
    for name, dirs in folders:
        match = [pd.read_csv(d / "match_curve.csv") for d in dirs]
        roc = [pd.read_csv(d / "roc.csv") for d in dirs]
        if any(m.empty for m in match) or any(r.empty for r in roc):
            continue
        n = min(len(m) for m in match)
        mean = pd.concat([m.iloc[:n] for m in match]).groupby("n", sort=True).mean().reset_index()
        curves.append(mean.assign(model=name)[["model", "n", "v2f", "f2v"]])
        tpr = np.mean([np.interp(ROC_GRID, r["fpr"], r["tpr"]) for r in roc], axis=0)
        rocs.append(pd.DataFrame({"model": name, "fpr": ROC_GRID, "tpr": tpr}))
    match_cols, roc_cols = ["model", "n", "v2f", "f2v"], ["model", "fpr", "tpr"]
    return (
        (
            pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=match_cols)
        ).round(4),
        (pd.concat(rocs, ignore_index=True) if rocs else pd.DataFrame(columns=roc_cols)).round(4),
    )
