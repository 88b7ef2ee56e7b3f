"""DVC stage ``aggregate``: every scored model's figures over seeds, and the paired verdicts.

Reads ``reports/metrics/seeds/<name>-s<seed>.json`` and ``reports/eval/<name>/s<seed>/outcomes.
parquet`` for every method in ``methods`` and ``lowshot_<method>`` in ``lowshot.methods``, and
every seed in ``seeds``; writes ``reports/metrics/aggregate/<name>.json`` (per metric: mean, sd,
95 % interval over seeds, 95 % identity-bootstrap interval; :mod:`pipeline.evaluate.aggregate`) and
``reports/metrics/aggregate/verdicts.json`` (each method against ``compare.reference`` and the top
method: paired difference, 95 % interval, verdict; the methods tied for first; low-shot gains),
``headline.json`` (a few test_unseen figures per model, for ``dvc metrics show`` / ``dvc exp show``)
and ``reports/plots/`` (every model's 1:N curve and ROC, averaged over seeds, for the overlaid
charts of ``dvc.yaml``'s top-level ``plots``).
"""

from __future__ import annotations

# isort: off
import stages._pinned  # noqa: F401  (first: pins numpy's and torch's kernels before they load)

# isort: on

import argparse
import json
from pathlib import Path
from typing import Any

from prefect import flow

from pipeline.atomic import atomic_dir
from pipeline.evaluate.aggregate import (
    TrialStats,
    aggregate_one,
    at,
    load_scored,
    overlay_tables,
    verdicts,
)
from pipeline.params import Params
from stages._runtime import fail, prefect_api, run_main, stage_params, write_json


@flow(name="aggregate")
def aggregate_flow(
    params: Params, metrics: Path, eval_dir: Path, out: Path, plots: Path
) -> dict[str, Any]:
    methods: list[str] = list(params.methods)
    lowshot: list[str] = [m for m in params.lowshot.methods if m in methods]
    names = methods + [f"lowshot_{m}" for m in lowshot]
    try:
        scored = [load_scored(n, list(params.seeds), metrics, eval_dir) for n in names]
    except FileNotFoundError as e:
        fail(str(e))
    ts = TrialStats(scored)
    n_boot, seed = params.compare.bootstrap, params.base.seed
    files = {sc.name: aggregate_one(sc, ts, n_boot, seed) for sc in scored}
    reference = params.compare.reference if params.compare.reference in methods else methods[0]
    files["verdicts"] = verdicts(methods, lowshot, reference, ts, n_boot, seed)
    files["headline"] = headline({n: files[n] for n in names}, metrics)
    with atomic_dir(out) as tmp:
        for name, payload in files.items():
            write_json(tmp / f"{name}.json", payload)
    match, roc = overlay_tables(names, list(params.seeds), eval_dir, ("oracle", "ceiling"))
    with atomic_dir(plots) as tmp:
        match.to_csv(tmp / "match_curves.csv", index=False)
        roc.to_csv(tmp / "roc.csv", index=False)
    return files["verdicts"]


#: The headline figures (test_unseen, no constraint): name in headline.json -> metric path.
HEADLINE: dict[str, tuple[str, ...]] = {
    "v2f_1to2": ("match_1to2", "v2f", "U", "test_unseen"),
    "f2v_1to2": ("match_1to2", "f2v", "U", "test_unseen"),
    "verify_auc": ("verify_auc", "vf", "U", "test_unseen"),
    "v2f_map": ("retrieve_map", "v2f", "U", "test_unseen"),
}


def headline(aggregates: dict[str, dict[str, Any]], metrics: Path) -> dict[str, Any]:
    """A short metrics file for ``dvc metrics show`` / ``dvc exp show``: per scored model (and
    the oracle and media ceiling where available) the headline means on test_unseen, with the
    95 % half-width over seeds of 1:2 V->F (``v2f_1to2_hw``; 0 with one seed)."""
    out: dict[str, Any] = {}
    for name, agg in aggregates.items():
        row = {}
        for key, path in HEADLINE.items():
            leaf = at(agg, *path)
            if isinstance(leaf, dict):
                row[key] = leaf["mean"]
                if key == "v2f_1to2":
                    row["v2f_1to2_hw"] = leaf.get("half_width") or 0.0
        out[name] = row
    for ref in ("oracle", "ceiling"):
        f = metrics / f"{ref}.json"
        m = json.loads(f.read_text()) if f.is_file() else {}
        if m.get("available", True) and m:
            out[ref] = {k: v for k, p in HEADLINE.items() if isinstance(v := at(m, *p), float)}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--metrics", default="reports/metrics")
    ap.add_argument("--eval", default="reports/eval")
    ap.add_argument("--out", default="reports/metrics/aggregate")
    ap.add_argument(
        "--plots", default="reports/plots", help="tables of the overlaid plots (dvc.yaml plots)"
    )
    args = ap.parse_args(argv)
    params = stage_params(args.params)
    with prefect_api():
        v = aggregate_flow(
            params, Path(args.metrics), Path(args.eval), Path(args.out), Path(args.plots)
        )
    head = v["metrics"].get("match_1to2", {}).get("v2f", {}).get("U", {}).get("test_unseen")
    if head:
        means = ", ".join(f"{m} {100 * x:.1f}" for m, x in head["means"].items())
        print(
            f"aggregate: 1:2 V->F U test_unseen means {means}; "
            f"tied for first: {', '.join(head['tied_for_first'])}"
        )


if __name__ == "__main__":
    run_main(main)
