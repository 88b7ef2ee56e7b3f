"""DVC stage ``manifest``: index the dataset root into the clip manifest, with splits.

Reads the ``data`` and ``manifest`` params, scans the root (VoxCeleb2, VoxCeleb1, a generic clip
list or the synthetic corpus), joins the metadata, assigns identity splits once (or imports a
published split file), and writes ``clips.parquet``, ``skipped.parquet`` and the stage report.

Before anything is written, the clips are checked against the params of the heavy stages that
follow (:mod:`pipeline.preprocess.preflight`: split sizes, cluster counts, the batch, Wen's warm-up,
trials that cannot be formed honestly): a problem stops the stage with one line naming the setting
and the fix; a warning goes to the report (``warnings``) and the console.
"""

from __future__ import annotations

# isort: off
import stages._pinned  # noqa: F401  (first: pins numpy's and torch's kernels before they load)

# isort: on
import argparse
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from pipeline.params import Params
from pipeline.preprocess.manifest import ManifestError, build_manifest
from pipeline.preprocess.preflight import check
from pipeline.schema import MANIFEST, MANIFEST_SKIPPED, write_table
from stages._runtime import fail, prefect_api, run_main, stage_params, write_json


@flow(name="manifest")
def manifest_flow(params: Params, out: str) -> dict[str, Any]:
    """Build, check and write the manifest; returns the stage report."""
    log = get_run_logger()
    try:
        result = build_manifest(params.data, params.manifest, params.base.seed)
    except ManifestError as e:  # an input problem: one line, not a flow failure's traceback
        return {"problems": [str(e)]}
    findings = check(result.clips, params)
    if findings.problems:  # nothing is written: the previous manifest (if any) stays whole
        return {"problems": findings.problems}
    result.report["warnings"] = findings.warnings
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_table(result.clips, folder / "clips.parquet", MANIFEST)
    write_table(result.skipped, folder / "skipped.parquet", MANIFEST_SKIPPED)
    log.info(
        "manifest: %d clips of %d identities, %d skipped",
        result.report["clips"],
        result.report["identities"],
        result.report["skipped"],
    )
    return result.report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/manifest", help="folder for clips/skipped Parquet")
    ap.add_argument("--metrics", default="reports/manifest.json")
    args = ap.parse_args(argv)
    params = stage_params(args.params)
    with prefect_api():
        report = manifest_flow(params, args.out)
    if "problems" in report:
        fail("\nerror: ".join(report["problems"]))
    write_json(args.metrics, report)
    for w in report["warnings"]:
        print(f"warning: {w}")
    splits = ", ".join(f"{k} {v['clips']}" for k, v in report["splits"].items())
    print(f"manifest: {report['clips']} clips ({splits}); {report['skipped']} skipped")


if __name__ == "__main__":
    run_main(main)
