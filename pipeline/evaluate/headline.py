"""Print the report's headline: ``python -m pipeline.evaluate.headline`` (the last step of ``make
demo``).

Reads the aggregate stage's ``headline.json`` (per model, test_unseen, no constraint: the mean
over seeds, and the 95 % half-width of 1:2 V->F) and, when present, ``verdicts.json``'s paired
verdicts on 1:2 V->F (who is tied for first, and each method against the top one).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: Columns: key in headline.json -> heading.
COLUMNS: dict[str, str] = {
    "v2f_1to2": "1:2 V->F",
    "f2v_1to2": "1:2 F->V",
    "verify_auc": "verify AUC",
    "v2f_map": "V->F mAP",
}


def _pct(x: Any) -> str:
    return f"{100 * x:.1f}" if isinstance(x, int | float) else "-"


def headline_lines(headline: dict[str, Any], verdicts: dict[str, Any] | None) -> list[str]:
    """The headline as text lines: a table of percentages, then the verdict lines."""
    width = max([len(n) for n in headline] + [6])
    lines = [
        "Headline: test_unseen, unconstrained, mean over seeds in % (1:2 V->F ± 95 % half-width)",
        f"{'method':<{width}}  " + "  ".join(f"{h:>12}" for h in COLUMNS.values()),
    ]
    for name, row in headline.items():
        cells = []
        for key in COLUMNS:
            text = _pct(row.get(key))
            if key == "v2f_1to2" and isinstance(row.get("v2f_1to2_hw"), int | float):
                text += f" ± {100 * row['v2f_1to2_hw']:.1f}"
            cells.append(f"{text:>12}")
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    entry = (
        (verdicts or {})
        .get("metrics", {})
        .get("match_1to2", {})
        .get("v2f", {})
        .get("U", {})
        .get("test_unseen")
    )
    if not isinstance(entry, dict):
        lines.append("Verdicts: none (no verdicts.json from the aggregate stage).")
        return lines
    tied, top = ", ".join(entry.get("tied_for_first", [])), entry.get("top")
    # Not "the best": the highest mean is only the reference the others are paired against.
    lines.append(
        f"Verdicts (1:2 V->F, paired 95 %): tied for first: {tied} "
        f"(each method against the highest mean, {top}):"
    )
    for name, v in entry.get("vs_top", {}).items():
        lines.append(
            f"  {name} vs {top}: {_pct(v.get('difference'))} "
            f"[{_pct(v.get('ci95_low'))}, {_pct(v.get('ci95_high'))}] {v.get('verdict')}"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", type=Path, default=Path("reports/metrics/aggregate"))
    args = ap.parse_args(argv)
    head_file, verdict_file = args.dir / "headline.json", args.dir / "verdicts.json"
    if not head_file.is_file():
        print(f"{head_file}: not found; run `dvc repro` first", file=sys.stderr)
        raise SystemExit(2)
    verdicts = json.loads(verdict_file.read_text()) if verdict_file.is_file() else None
    print("\n".join(headline_lines(json.loads(head_file.read_text()), verdicts)))


if __name__ == "__main__":
    main()
