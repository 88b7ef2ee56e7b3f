"""DVC stage ``report``: one comparison page of every method, in Markdown and self-contained HTML.

Reads, per method, ``<metrics>/<m>.json``, ``<eval>/<m>/{match_curve.csv, roc.csv, ranked.json}``
and ``<train>/<m>.json`` + ``<m>_history.json``; the oracle's ``<metrics>/oracle.json`` (and its
curve and ROC when the corpus has ground truth); the trial summary, the manifest and the face
shards (thumbnails of the ranked examples). Writes ``<out>/summary.md``, ``<out>/summary.html``
(figures embedded as ``data:`` URIs) and ``<out>/figures/*.png``: ``match_curve``, ``roc``,
``loss`` and ``ranked_<method>`` for every method. With ``<ablation>/<paper>.json`` files
(``python -m pipeline.ablate``), an ablation section per paper. A missing input exits with its
path.
"""

from __future__ import annotations

# isort: off
import stages._pinned  # noqa: F401  (first: pins numpy's and torch's kernels before they load)

# isort: on
import argparse
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger

from pipeline.report.document import Provenance, inputs_digest, write_report
from pipeline.report.figures import build_figures
from pipeline.report.loading import (
    leaders,
    load_first_frames,
    load_inputs,
    ranked_clip_keys,
    ranking_text,
)
from stages._runtime import fail, prefect_api, run_main, stage_params


@dataclass(frozen=True)
class ReportResult:
    leaders: list[str]  # tied for first on the headline by the paired verdicts
    headline: str  # the ranking sentence
    written: list[str]


@flow(name="report")
def report_flow(
    methods: list[str],
    layout: str,
    metrics: str,
    eval_dir: str,
    train: str,
    trials: str,
    manifest: str,
    faces: str,
    out: str,
    seed: int,
    stage_reports: list[str] | None = None,
    ablation: str | None = None,
) -> ReportResult:
    """Load the inputs (curves and examples of training seed ``seed``), draw the figures, write
    both documents; returns a short summary."""
    log = get_run_logger()
    inputs = load_inputs(
        methods,
        metrics,
        eval_dir,
        train,
        trials,
        manifest,
        layout,
        seed,
        stage_reports or (),
        ablation,
    )
    frames = load_first_frames(faces, ranked_clip_keys(inputs))
    figures = build_figures(inputs, frames)
    read = [metrics, eval_dir, train, trials, *(stage_reports or ())]
    provenance = Provenance(inputs_digest(read + ([ablation] if ablation else [])))
    written = write_report(inputs, provenance, figures, out)
    lead = leaders(inputs)
    log.info("report: %d methods, %d figures; leaders %s", len(methods), len(figures), lead)
    return ReportResult(lead, ranking_text(inputs), [str(p) for p in written])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="names, in table order (default: params' methods, then lowshot_<method> for "
        "lowshot.methods)",
    )
    ap.add_argument(
        "--metrics",
        default="reports/metrics",
        help="folder of oracle.json, ceiling.json and aggregate/<method>.json",
    )
    ap.add_argument("--eval", default="reports/eval", help="folder of <method>/ curves, ranked")
    ap.add_argument("--train", default="reports/train", help="folder of training summaries")
    ap.add_argument("--trials", default="reports/trials.json")
    ap.add_argument("--manifest", default="data/manifest/clips.parquet")
    ap.add_argument("--faces", default="data/faces", help="folder of faces-*.parquet shards")
    ap.add_argument(
        "--stage-reports",
        nargs="*",
        default=["reports/manifest.json", "reports/faces.json"],
        help="stage reports whose 'warnings' the report shows at its top",
    )
    ap.add_argument(
        "--ablation", default="reports/ablation", help="folder of each paper's <paper>.json"
    )
    ap.add_argument("--out", default="reports")
    args = ap.parse_args(argv)
    params = stage_params(args.params)
    if args.methods is None:
        args.methods = [*params.methods, *(f"lowshot_{m}" for m in params.lowshot.methods)]
    try:
        with prefect_api():
            result = report_flow(
                list(args.methods),
                params.data.layout,
                args.metrics,
                args.eval,
                args.train,
                args.trials,
                args.manifest,
                args.faces,
                args.out,
                params.seeds[0],
                list(args.stage_reports),
                args.ablation,
            )
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    print(
        f"report: {len(args.methods)} methods. {result.headline}\n"
        f"Wrote {Path(args.out) / 'summary.md'}, summary.html and {len(result.written) - 2} figures"
    )


if __name__ == "__main__":
    run_main(main)
