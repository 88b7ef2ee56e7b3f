"""DVC stage ``synth``: generate the built-in synthetic talking-face corpus.

Plans every random draw from ``base.seed`` and the ``synth`` params, renders the videos in
parallel Prefect tasks (shards of videos), writes the VoxCeleb1-style metadata CSV and the
ground-truth tables, and swaps the finished corpus into place in one rename.

Each task renders its videos in a child interpreter it leases
(:func:`pipeline.preprocess.isolate.lease`): rendering is numpy on small arrays and Python
loops, which hold the interpreter lock much of the time, so the default thread-pool tasks
shared about one core (on 2 cores the default corpus took 137.7 s that way, 99.4 s in children;
the tiny preset 13.1-13.5 s and 11.0-11.3 s). The child computes what the thread did, from the
same arguments and environment (numeric kernels pinned the same way), so the files are the same
bytes.
"""

from __future__ import annotations

# isort: off
import stages._pinned  # noqa: F401  (first: pins numpy's and torch's kernels before they load)

# isort: on
import argparse
import math
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task

from pipeline.atomic import atomic_dir
from pipeline.preprocess.isolate import lease
from pipeline.schema import SYNTH_CLIPS, SYNTH_IDENTITIES, write_table
from pipeline.synth.corpus import CorpusSpec, plan_corpus, render_jobs, render_video
from pipeline.synth.people import Calibration
from stages._runtime import (
    limit_native_threads,
    prefect_api,
    run_main,
    stage_params,
    task_runner,
    workers,
    write_json,
)

META_NAME = "synth_meta.csv"
#: The most seconds one video may take to render in its child (about 0.4 s at the presets'
#: sizes on one core): beyond it the child is taken for hung and the stage fails.
RENDER_TIMEOUT_S = 600.0
#: What the rendering children import as they start.
RENDER_PRELOAD = ("pipeline.synth.corpus",)


@task
def render_shard(
    root: str, spec: CorpusSpec, identities: pd.DataFrame, videos: pd.DataFrame, clips: pd.DataFrame
) -> list[dict[str, Any]]:
    """Render a shard of videos into ``root`` in a leased child process; returns the clips'
    truth rows."""
    limit_native_threads()  # inherited by a child started now
    jobs = render_jobs(Path(root), spec, identities, videos, clips)
    rows: list[dict[str, Any]] = []
    with lease(RENDER_TIMEOUT_S, RENDER_PRELOAD) as child:
        for job, out in zip(jobs, child.map(render_video, jobs), strict=True):
            if isinstance(out, BaseException):
                raise RuntimeError(f"rendering video {job[2].video_id} failed: {out}") from out
            rows += out
    return rows


def write_meta(identities: pd.DataFrame, path: Path) -> None:
    """VoxCeleb1-style metadata (tab-separated): ID, name, gender, nationality, set."""
    lines = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
    lines += [
        f"{r.identity}\t{r.name}\t{r.gender}\t{r.nationality}\tdev" for r in identities.itertuples()
    ]
    path.write_text("\n".join(lines) + "\n")


@flow(name="synth", log_prints=True)
def synth_flow(spec: CorpusSpec, out: str) -> dict[str, Any]:
    """Generate the corpus into a temporary folder, then swap it into ``out``."""
    log = get_run_logger()
    t0 = time.perf_counter()
    identities, videos, clips = plan_corpus(spec)
    with atomic_dir(out) as tmp:
        n_shards = min(len(videos), workers() * 8)
        size = math.ceil(len(videos) / n_shards)
        futures = []
        for i in range(0, len(videos), size):
            vs = videos.iloc[i : i + size]
            futures.append(
                render_shard.submit(
                    str(tmp), spec, identities, vs, clips[clips.video_id.isin(vs.video_id)]
                )
            )
        truth = pd.DataFrame([row for f in futures for row in f.result()])
        gt = tmp / "ground_truth"
        gt.mkdir()
        write_table(identities, gt / "identities.parquet", SYNTH_IDENTITIES)
        table = clips.merge(truth, on="path").merge(videos, on=["identity", "video_id"])
        write_table(table, gt / "clips.parquet", SYNTH_CLIPS)
        write_meta(identities, tmp / META_NAME)
    wall = time.perf_counter() - t0
    total_s = float(clips.duration_s.sum())
    log.info(
        "generated %d clips (%.0f s of video) of %d identities in %.1f s (%.1fx real time)",
        len(clips),
        total_s,
        len(identities),
        wall,
        total_s / wall,
    )
    return {
        "identities": len(identities),
        "videos": len(videos),
        "clips": len(clips),
        "duration_s_total": round(total_s, 2),
        "speech_fraction_truth_mean": round(float(truth.speech_fraction.mean()), 4),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/synth", help="corpus folder to (re)create")
    ap.add_argument("--metrics", default="reports/synth.json")
    args = ap.parse_args(argv)
    params = stage_params(args.params)
    limit_native_threads()
    preset = params.synth.active()
    if preset is None:  # generation switched off: an empty corpus keeps the DAG intact
        out = Path(args.out)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        (out / "DISABLED").write_text("synth.preset is 'none': no synthetic corpus generated\n")
        write_json(args.metrics, {"preset": "none", "clips": 0})
        return
    cal = params.synth.calibration
    spec = CorpusSpec(
        n_identities=preset.identities,
        videos_per_identity=preset.videos_per_identity,
        utterances_per_video=preset.utterances_per_video,
        min_duration_s=preset.min_duration_s,
        max_duration_s=preset.max_duration_s,
        frame_size_px=params.synth.frame_size_px,
        fps=params.synth.fps,
        sample_rate_hz=params.synth.sample_rate_hz,
        seed=params.base.seed,
        calibration=Calibration(cal.face_noise, cal.voice_noise, cal.gender_strength),
    )
    with prefect_api():
        report = synth_flow.with_options(task_runner=task_runner())(spec, args.out)
    write_json(args.metrics, {"preset": params.synth.preset, **report})
    print(
        f"synth: {report['clips']} clips ({report['duration_s_total']:.0f} s) of "
        f"{report['identities']} identities -> {args.out}"
    )


if __name__ == "__main__":
    run_main(main)
