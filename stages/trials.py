"""DVC stage ``trials``: the trial lists every method is scored on, drawn once from the seed.

Reads the manifest and the feature shards (a clip is evaluable when it has both face crops and
voice features), draws every protocol's trials for the unseen-unheard (``test_unseen``) and
seen-heard (``test_seen``) splits (:mod:`pipeline.trials`), and writes ``trials.parquet`` with the
generator's summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from pipeline.evaluate import EVAL_SPLITS, evaluable_clips
from pipeline.params import TrialsSection
from pipeline.trials import TrialSpec, generate_trials, write_trials
from stages._runtime import fail, prefect_api, stage_params, write_json


@flow(name="trials")
def trials_flow(
    params: TrialsSection, seed: int, manifest: str, faces: str, voice: str, out: str
) -> dict[str, Any]:
    clips = evaluable_clips(Path(manifest), Path(faces), Path(voice), EVAL_SPLITS)
    spec = TrialSpec(
        n_match=params.n_match, n_verify=params.n_verify, seed=seed, candidates=params.candidates
    )
    table, summary = generate_trials(clips, spec, EVAL_SPLITS)
    write_trials(Path(out) / "trials.parquet", table)
    get_run_logger().info("trials: %d rows", len(table))
    return {"rows": len(table), **summary}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--manifest", default="data/manifest/clips.parquet")
    ap.add_argument("--faces", default="data/faces")
    ap.add_argument("--voice", default="data/voice")
    ap.add_argument("--out", default="data/trials")
    ap.add_argument("--summary", default="reports/trials.json")
    args = ap.parse_args(argv)
    params = stage_params(args.params)
    try:
        with prefect_api():
            summary = trials_flow(
                params.trials, params.base.seed, args.manifest, args.faces, args.voice, args.out
            )
    except ValueError as e:
        fail(f"trials: {e}")
    write_json(args.summary, summary)
    sizes = ", ".join(
        f"{k} {v['identities']} identities / {v['clips']} clips"
        for k, v in summary["splits"].items()
    )
    print(f"trials: {summary['rows']} rows ({sizes})")


if __name__ == "__main__":
    main()
