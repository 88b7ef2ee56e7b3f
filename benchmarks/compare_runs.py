"""Do two runs of the pipeline (other machines, thread counts, CPU kernels) reach the same verdicts?

Reads ``reports/metrics/aggregate/`` of two checkouts and prints, for each method and each
bootstrapped headline metric on test_unseen: both means, both 95 % intervals over seeds, whether
each mean lies inside the other run's interval, and whether the paired verdicts (against the
reference and the top method) and the methods tied for first are the same. Also compares the data
stages' output hashes in the two ``dvc.lock`` files.

    python -m benchmarks.compare_runs /path/to/run_a /path/to/run_b
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from pipeline.evaluate.aggregate import at

METRICS = (
    ("match_1to2", "v2f", "U"),
    ("match_1to2", "f2v", "U"),
    ("match_1to2", "v2f", "G"),
    ("verify_auc", "vf", "U"),
)


def _outs(lock: Path) -> dict[str, str]:
    """Output path -> md5 of the data stages in a dvc.lock."""
    doc = YAML(typ="safe").load(lock.read_text())
    out = {}
    for stage in ("synth", "manifest", "faces", "voice", "trials"):
        for o in doc.get("stages", {}).get(stage, {}).get("outs", []):
            out[o["path"]] = o.get("md5", "?")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    args = ap.parse_args(argv)
    agg = [r / "reports/metrics/aggregate" for r in (args.run_a, args.run_b)]
    va, vb = (json.loads((a / "verdicts.json").read_text()) for a in agg)
    names = sorted(p.stem for p in agg[0].glob("*.json") if p.stem != "verdicts")
    disagreements = 0
    print(f"{'metric':<22} {'method':<14} {'run A':>22} {'run B':>22}  inside  verdicts")
    for m in METRICS:
        label = ".".join(m)
        for name in names:
            la, lb = (
                at(json.loads((a / f"{name}.json").read_text()), *m, "test_unseen") or {}
                for a in agg
            )
            if not la or not lb:
                continue

            def fmt(leaf: dict[str, Any]) -> str:
                lo, hi = leaf.get("ci95_low"), leaf.get("ci95_high")
                iv = "" if lo is None else f" [{100 * lo:.1f}, {100 * hi:.1f}]"
                return f"{100 * leaf['mean']:.1f}{iv}"

            def inside(x: float, leaf: dict[str, Any]) -> bool:
                lo, hi = leaf.get("ci95_low"), leaf.get("ci95_high")
                return lo is not None and lo <= x <= hi

            both = inside(la["mean"], lb) and inside(lb["mean"], la)
            same = True
            for side in ("vs_reference", "vs_top"):
                da = at(va, "metrics", *m, "test_unseen", side, name, "verdict")
                db = at(vb, "metrics", *m, "test_unseen", side, name, "verdict")
                same &= da == db
            disagreements += (not both) + (not same)
            print(
                f"{label:<22} {name:<14} {fmt(la):>22} {fmt(lb):>22}  "
                f"{'yes' if both else 'NO':>6}  {'same' if same else 'DIFFER'}"
            )
        ta = at(va, "metrics", *m, "test_unseen", "tied_for_first")
        tb = at(vb, "metrics", *m, "test_unseen", "tied_for_first")
        if ta is not None:
            disagreements += sorted(ta) != sorted(tb or [])
            print(f"{label:<22} tied for first: A {ta}  B {tb}")
    locks = [r / "dvc.lock" for r in (args.run_a, args.run_b)]
    if all(p.is_file() for p in locks):
        oa, ob = (_outs(p) for p in locks)
        for path in sorted(set(oa) | set(ob)):
            tag = "same" if oa.get(path) == ob.get(path) else "DIFFER"
            print(
                f"data {path:<24} {oa.get(path, '-')[:12]:>12} {ob.get(path, '-')[:12]:>12}  {tag}"
            )
    print(f"disagreements: {disagreements}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
