"""Fan a per-shard function out over a stage's clips with Prefect, and gather its report.

Shards are runs of ``shard_clips`` clips in clip-key order, named ``<stage>-<NNNNN>.parquet``:
the names depend on params only, never on the worker count. A task processes a shard, or a part
of one when there are fewer shards than workers (the parts are merged into the same bytes).
Tasks receive clip references and return counts and failure rows; the arrays stay in the shard
files.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.futures import PrefectFuture

from pipeline.atomic import atomic_dir
from pipeline.preprocess.shards import ClipRef, ShardResult, clip_refs
from pipeline.schema import (
    FAILURES,
    MANIFEST,
    TableSchema,
    merge_tables,
    read_table,
    write_table,
)
from stages._runtime import (
    fail,
    limit_native_threads,
    prefect_api,
    stage_params,
    task_runner,
    workers,
    write_json,
    write_timing,
)


def decode_timeout_s() -> float:
    """Per-clip decoding timeout (``VOXFACE_DECODE_TIMEOUT_S``, default 60 s)."""
    return float(os.environ.get("VOXFACE_DECODE_TIMEOUT_S", "60"))


def shards(clips: list[ClipRef], size: int) -> list[list[ClipRef]]:
    ordered = sorted(clips, key=lambda c: c.clip_key)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def split_evenly(clips: list[ClipRef], parts: int) -> list[list[ClipRef]]:
    """``clips`` in order, cut into ``parts`` runs whose lengths differ by at most one (fewer
    runs when there are fewer clips)."""
    n = min(parts, len(clips))
    if n == 0:
        return []
    bounds = [round(i * len(clips) / n) for i in range(n + 1)]
    return [clips[bounds[i] : bounds[i + 1]] for i in range(n)]


def work_units(clips: list[ClipRef], shard_clips: int, workers: int) -> list[list[list[ClipRef]]]:
    """Per shard, the clip runs that tasks process. Shards are the file layout (they depend on
    ``shard_clips`` only); tasks are the unit of work. With fewer shards than workers, each
    shard is split into ``ceil(workers / shards)`` tasks, so that every worker has work on small
    inputs; their part files are merged into the shard, which holds the same rows as when one
    task does it (shard functions process every clip on its own)."""
    layout = shards(clips, shard_clips)
    per_shard = -(-workers // len(layout)) if layout and len(layout) < workers else 1
    return [split_evenly(s, per_shard) for s in layout]


@task
def run_shard(
    fn: Callable[..., ShardResult],
    clips: list[ClipRef],
    root: str,
    cfg: Any,
    out: str,
    timeout: float,
) -> ShardResult:
    """One Prefect task: ``fn`` over one shard (runs in a pool worker)."""
    os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("VOXFACE_THREADS", "1"))
    return fn(clips, Path(root), cfg, Path(out), timeout)


def fan_out(
    stage: str,
    fn: Callable[..., ShardResult],
    manifest: str,
    shard_clips: int,
    root: str,
    cfg: Any,
    out: str,
    spec: TableSchema,
) -> tuple[Counter[str], pd.DataFrame, list[tuple[str, str]]]:
    """Every clip of ``manifest``, in tasks of at most one shard (:func:`work_units`); the
    shards (tables ``spec``) and ``failures.parquet`` replace the folder ``out`` whole. Returns
    the summed counts, the failure rows and the flagged clips
    (:attr:`pipeline.preprocess.shards.ShardResult.flagged`). Prints progress as tasks finish."""
    clips = clip_refs(read_table(manifest, MANIFEST))
    with atomic_dir(out) as tmp:
        return _fan_out(stage, fn, clips, shard_clips, Path(root), cfg, tmp, spec)


def _fan_out(
    stage: str,
    fn: Callable[..., ShardResult],
    clips: list[ClipRef],
    shard_clips: int,
    root: Path,
    cfg: Any,
    out_dir: Path,
    spec: TableSchema,
) -> tuple[Counter[str], pd.DataFrame, list[tuple[str, str]]]:
    submitted: list[tuple[Path, list[tuple[Path, PrefectFuture[ShardResult]]]]] = []
    for i, parts in enumerate(work_units(clips, shard_clips, workers())):
        shard = out_dir / f"{stage}-{i:05d}.parquet"
        paths = [shard] if len(parts) == 1 else [
            out_dir / f".{shard.stem}.part{j:03d}.parquet" for j in range(len(parts))
        ]  # fmt: skip
        tasks = [
            (path, run_shard.submit(fn, part, str(root), cfg, str(path), decode_timeout_s()))
            for path, part in zip(paths, parts, strict=True)
        ]
        submitted.append((shard, tasks))
    total = ShardResult()
    t0, done, finished = time.perf_counter(), 0, 0
    n_tasks = sum(len(tasks) for _, tasks in submitted)
    for shard, tasks in submitted:
        for _, f in tasks:
            res: ShardResult = f.result()
            total.counts.update(res.counts)
            total.failures += res.failures
            total.flagged += res.flagged
            done, finished = done + res.counts["clips_in"], finished + 1
            progress(stage, done, len(clips), finished, n_tasks, time.perf_counter() - t0)
        if len(tasks) > 1:
            merge_tables([path for path, _ in tasks], shard, spec)
    # Hidden files: the merged parts, and the temporary file of a worker lost mid-write (Dask
    # reran its task elsewhere).
    for hidden in out_dir.glob(".*"):
        hidden.unlink()
    table = pd.DataFrame(total.failures, columns=FAILURES.schema.names)
    write_table(table, out_dir / "failures.parquet", FAILURES)
    return total.counts, table, total.flagged


def progress(stage: str, done: int, total: int, tasks: int, of: int, wall_s: float) -> None:
    """One line on stderr per finished task: clips done of total, rate, time left."""
    rate = done / max(wall_s, 1e-9)
    left = (total - done) / rate if rate > 0 else float("nan")
    print(
        f"{stage}: {done}/{total} clips ({tasks}/{of} tasks), {rate:.1f} clips/s, "
        f"~{left:.0f} s left",
        file=sys.stderr,
        flush=True,
    )


def failure_summary(failures: pd.DataFrame, clips_in: int) -> dict[str, Any]:
    return {
        "failures": len(failures),
        "failure_fraction": round(len(failures) / max(clips_in, 1), 4),
        "failures_by_reason": dict(sorted(Counter(failures["reason"]).items())),
    }


def run_stage(
    doc: str,
    name: str,
    section: str,
    flow: Callable[..., dict[str, Any]],
    argv: list[str] | None,
    warm: Callable[[Any], object] | None = None,
) -> None:
    """The command line of a preprocessing stage ``name`` (params section ``section``): run
    ``flow(manifest, root, params, out)``, write the report, fail past the failure threshold.
    ``warm(section params)`` (load models, import torch) runs while the Prefect server starts."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--manifest", default="data/manifest/clips.parquet")
    ap.add_argument("--out", default=f"data/{name}")
    ap.add_argument("--metrics", default=f"reports/{name}.json")
    args = ap.parse_args(argv)
    params = stage_params(args.params)
    limit_native_threads()
    p = getattr(params, section)
    with prefect_api(meanwhile=None if warm is None else lambda: warm(p)):
        report = flow.with_options(task_runner=task_runner())(  # type: ignore[attr-defined]
            args.manifest, params.data.root, p, args.out
        )
    # Speed is logged, not tracked: the metrics file changes only when a result does.
    write_timing(name, {k: report.pop(k) for k in ("wall_s", "clips_per_s") if k in report})
    write_json(args.metrics, report)
    if report["failure_fraction"] > p.max_failure_fraction:
        fail(
            f"{report['failures']} of the clips failed ({report['failure_fraction']:.1%} > "
            f"{section}.max_failure_fraction {p.max_failure_fraction:.1%}); "
            f"see {Path(args.out) / 'failures.parquet'}"
        )
