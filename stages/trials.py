"""DVC stage ``trials``: the trial lists every method is scored on, drawn once from the seed.

Reads the manifest and the feature shards (a clip is evaluable when it has both face crops and
voice features), draws every protocol's trials for the unseen-unheard (``test_unseen``) and
seen-heard (``test_seen``) splits (:mod:`pipeline.evaluate.trials`), and writes ``trials.parquet``
with the generator's summary.
"""

from __future__ import annotations

# isort: off
import stages._pinned  # noqa: F401  (first: pins numpy's and torch's kernels before they load)

# isort: on

import argparse
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger

from pipeline.evaluate.scoring import EVAL_SPLITS, evaluable_clips
from pipeline.evaluate.trials import TrialSpec, generate_trials, write_trials
from pipeline.params import TrialsSection
from stages._runtime import fail, prefect_api, run_main, stage_params, write_json


@flow(name="trials")
def trials_flow(
    params: TrialsSection, seed: int, manifest: str, faces: str, voice: str, out: str
) -> dict[str, Any]:
    clips = evaluable_clips(Path(manifest), Path(faces), Path(voice), EVAL_SPLITS)
    clips, left_out = enough_clips(clips, params.min_clips_per_identity)
    # The seen-heard test exists when the manifest made one (manifest.seen_heard_*).
    splits = tuple(s for s in EVAL_SPLITS if s == "test_unseen" or (clips["split"] == s).any())
    spec = TrialSpec(
        n_match=params.n_match, n_verify=params.n_verify, seed=seed, candidates=params.candidates
    )
    try:
        table, summary = generate_trials(clips, spec, splits)
    except ValueError as e:
        return {"error": f"{e} (after leaving out {left_out}); see trials.min_clips_per_identity"}
    write_trials(Path(out) / "trials.parquet", table)
    get_run_logger().info("trials: %d rows", len(table))
    summary["min_clips_per_identity"] = params.min_clips_per_identity
    summary["left_out"] = left_out
    summary["warnings"] = trial_warnings(summary)
    return {"rows": len(table), **summary}


def enough_clips(clips: pd.DataFrame, min_clips: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """The evaluable clips of identities with at least ``min_clips`` of them in their split, and
    per split how many identities were left out."""
    per = clips.groupby(["split", "identity"])["clip_key"].transform("size")
    keep = per >= min_clips
    dropped = clips.loc[~keep, ["split", "identity"]].drop_duplicates()
    return clips.loc[keep], {str(k): int(v) for k, v in dropped.groupby("split").size().items()}


def trial_warnings(summary: dict[str, Any]) -> list[str]:
    """Where the drawn trials are weak: true candidates that are the probe's own clip."""
    out = []
    for split, per in summary["splits"].items():
        m = per["constraints"].get("U", {}).get("match", {}).get("v2f")
        if m and m["true_is_probe_clip"]:
            out.append(
                f"{split}: {m['true_is_probe_clip']} of {m['trials']} 1:N V->F trials have the "
                "probe's own clip as the true candidate (identities with one clip)"
            )
    if "test_seen" not in summary["splits"]:
        out.append("no seen-heard test split (manifest.seen_heard_fraction): test_seen unavailable")
    return out


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
    with prefect_api():
        summary = trials_flow(
            params.trials, params.base.seed, args.manifest, args.faces, args.voice, args.out
        )
    if "error" in summary:
        fail(f"trials: {summary['error']}")
    write_json(args.summary, summary)
    for w in summary["warnings"]:
        print(f"warning: {w}")
    sizes = ", ".join(
        f"{k} {v['identities']} identities / {v['clips']} clips"
        for k, v in summary["splits"].items()
    )
    print(f"trials: {summary['rows']} rows ({sizes})")


if __name__ == "__main__":
    run_main(main)
