"""Fan a per-shard function out over a stage's clips with Prefect, and gather its report.

Shards are incremental and resumable:

- **Layout** (:func:`shards`): clips in clip-key order, cut *before every anchor clip*, one whose
  key hashes to 0 modulo ``shard_clips`` (content-defined chunking; ``shard_clips`` clips per
  shard on average, at most twice that). Adding or removing a clip changes the shard it falls in
  (or splits or joins two at an anchor) and no other.
- **Names** (:func:`shard_name`): ``<stage>-<digest>.parquet``, the digest of the stage's recipe
  (its settings and the source of the code that writes the shard,
  :func:`pipeline.lineage.source_digest`) and of the shard's clips (key, media path, kind, face
  folder, file size). Never the worker count.
- **Reuse**: a shard whose Parquet file and result file (``<name>.json``: counts, failure rows,
  flagged clips) both exist is done, and is not processed again; the result file is written as
  soon as the shard's last task ends, so after a kill a rerun does only what was not finished.
  Every file is written to a hidden temporary name and renamed, so none is
  ever half-written; hidden leftovers and shards no longer in the layout are removed.
  ``VOXFACE_RETRY_FAILED=1`` redoes the shards that hold failed clips (and only those).

A task processes a shard, or a part of one (the parts are merged into the same bytes): the
largest tasks are submitted first and the smaller shards are cut finer (:func:`work_units`), so
that the pool does not end on one shard while its other workers idle. Tasks receive clip
references and return counts and failure rows; the arrays stay in the shard files.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.futures import as_completed

from pipeline.atomic import atomic_path
from pipeline.cpu_pin import kernel_settings
from pipeline.lineage import runs, source_digest
from pipeline.preprocess.shards import ClipRef, ShardResult, clip_refs, prestart_decoders
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
    runner_kind,
    stage_params,
    task_runner,
    workers,
    write_json,
    write_timing,
)


def decode_timeout_s() -> float:
    """Per-clip decoding timeout (``VOXFACE_DECODE_TIMEOUT_S``, default 60 s)."""
    return float(os.environ.get("VOXFACE_DECODE_TIMEOUT_S", "60"))


def _anchor(clip_key: str, size: int) -> bool:
    digest = hashlib.sha256(clip_key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % size == 0


def shards(clips: list[ClipRef], size: int) -> list[list[ClipRef]]:
    """The shard layout: ``clips`` in key order, a new shard before every anchor clip (key hash
    divisible by ``size``) and after ``2 * size`` clips."""
    out: list[list[ClipRef]] = []
    for clip in sorted(clips, key=lambda c: c.clip_key):
        if not out or _anchor(clip.clip_key, size) or len(out[-1]) >= 2 * size:
            out.append([])
        out[-1].append(clip)
    return out


def recipe(fn: Callable[..., ShardResult], cfg: Any) -> str:
    """What a shard's content depends on besides its clips: the shard function's settings, the
    source of every project module it runs and the CPU kernels it runs under (a shard written
    with ``VOXFACE_NATIVE_SIMD=1`` is not reused by a pinned run, nor the other way round)."""
    kernels = json.dumps(kernel_settings(), sort_keys=True)
    head = f"{fn.__module__}.{fn.__qualname__}|{cfg!r}|{kernels}|"
    return hashlib.sha256(head.encode()).hexdigest() + source_digest(fn.__module__)


def shard_name(stage: str, recipe: str, clips: list[ClipRef]) -> str:
    """``<stage>-<16 hex digits>``: the digest of ``recipe`` and of the clips' references."""
    h = hashlib.sha256(recipe.encode())
    for c in clips:
        h.update(
            json.dumps([c.clip_key, c.media_path, c.media_kind, c.face_dir, c.size_bytes]).encode()
        )
    return f"{stage}-{h.hexdigest()[:16]}"


def split_evenly(clips: list[ClipRef], parts: int) -> list[list[ClipRef]]:
    """``clips`` in order, cut into ``parts`` runs whose lengths differ by at most one (fewer
    runs when there are fewer clips)."""
    n = min(parts, len(clips))
    if n == 0:
        return []
    bounds = [round(i * len(clips) / n) for i in range(n + 1)]
    return [clips[bounds[i] : bounds[i + 1]] for i in range(n)]


#: The smallest part a shard is cut into to even out the pool's end (:func:`work_units`).
MIN_PART_CLIPS = 8


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def work_units(layout: list[list[ClipRef]], workers: int) -> list[list[list[ClipRef]]]:
    """Per shard of ``layout``, the clip runs that tasks process; their part files are merged
    into the shard, which holds the same rows as when one task does it (shard functions process
    every clip on its own).

    Tasks are submitted largest first (:func:`_fan_out`), and sized as guided self-scheduling
    sizes its chunks (Polychronopoulos and Kuck, IEEE Trans. Computers 36(12), 1987): in that
    order, a shard is cut into parts of at most ``ceil(R / workers)`` clips, ``R`` the clips of
    that shard and of every smaller one, unless that would leave parts of fewer than
    :data:`MIN_PART_CLIPS` clips. The large shards go whole; the pool's last tasks are small, so
    its workers end close together (unsplit, 960 default clips in shards of 256 to 39 clips ended
    with one of two workers idle for the last 39-clip shard, 0.25 s of a 3.7 s voice flow). With
    fewer shards than workers, each shard is cut into at least ``ceil(workers / shards)`` parts,
    so that every worker has work on small inputs."""
    if not layout:
        return []
    at_least = _ceil_div(workers, len(layout)) if len(layout) < workers else 1
    parts = [at_least] * len(layout)
    remaining = sum(len(s) for s in layout)
    for i in sorted(range(len(layout)), key=lambda i: -len(layout[i])):  # stable: ties in order
        n = len(layout[i])
        guided = min(_ceil_div(n, _ceil_div(remaining, workers)), n // MIN_PART_CLIPS)
        parts[i] = max(parts[i], guided)
        remaining -= n
    return [split_evenly(s, k) for s, k in zip(layout, parts, strict=True)]


def _save_result(path: Path, res: ShardResult) -> None:
    doc = {
        "counts": dict(sorted(res.counts.items())),
        "failures": res.failures,
        "flagged": [list(f) for f in res.flagged],
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, sort_keys=True) + "\n")


def _load_result(path: Path) -> ShardResult | None:
    """A finished shard's result, or None when it is missing or unreadable (redo the shard)."""
    try:
        doc = json.loads(path.read_text())
        return ShardResult(
            Counter(doc["counts"]), list(doc["failures"]), [tuple(f) for f in doc["flagged"]]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Sealed:
    """A task's clips as one object that Prefect does not look into: before a task runs, Prefect
    walks its arguments for futures to wait for, visiting every field of every clip of a list
    (0.5 CPU-s of a 960-clip voice flow, in the threads that collect the decoders' results)."""

    __slots__ = ("clips",)

    def __init__(self, clips: list[ClipRef]) -> None:
        self.clips = clips


@task
def run_shard(
    fn: Callable[..., ShardResult],
    clips: Sealed,
    root: str,
    cfg: Any,
    out: str,
    timeout: float,
) -> ShardResult:
    """One Prefect task: ``fn`` over one shard (runs in a pool worker)."""
    os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("VOXFACE_THREADS", "1"))
    return fn(clips.clips, Path(root), cfg, Path(out), timeout)


def fan_out(
    stage: str,
    fn: Callable[..., ShardResult],
    manifest: str,
    shard_clips: int,
    root: str,
    cfg: Any,
    out: str,
    spec: TableSchema,
) -> tuple[Counter[str], pd.DataFrame, list[tuple[str, str]], dict[str, int]]:
    """Every clip of ``manifest`` in the folder ``out``: the shards of :func:`shards` (tables
    ``spec``) that are not there yet, in tasks of at most one shard each (:func:`work_units`), then
    ``failures.parquet``. Returns the summed counts, the failure rows and the flagged clips
    (:attr:`pipeline.preprocess.shards.ShardResult.flagged`) of every shard, reused or new (so
    they are the same either way), and the work done (``shards_reused``, ``shards_written``,
    ``clips_processed``). Prints progress as tasks finish."""
    clips = clip_refs(read_table(manifest, MANIFEST))
    return _fan_out(stage, fn, clips, shard_clips, Path(root), cfg, Path(out), spec)


def _fan_out(
    stage: str,
    fn: Callable[..., ShardResult],
    clips: list[ClipRef],
    shard_clips: int,
    root: Path,
    cfg: Any,
    out_dir: Path,
    spec: TableSchema,
) -> tuple[Counter[str], pd.DataFrame, list[tuple[str, str]], dict[str, int]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove(out_dir, keep=None)  # hidden leftovers of a killed run (see below)
    how = recipe(fn, cfg)
    layout = {shard_name(stage, how, s): s for s in shards(clips, shard_clips)}
    retry = os.environ.get("VOXFACE_RETRY_FAILED", "") == "1"
    results: dict[str, ShardResult] = {}
    for name in layout:
        done = _load_result(out_dir / f"{name}.json")
        if (out_dir / f"{name}.parquet").is_file() and done and not (retry and done.failures):
            results[name] = done
    reused = len(results)
    todo = [name for name in layout if name not in results]
    units = work_units([layout[n] for n in todo], workers())
    jobs: list[tuple[str, Path, list[ClipRef]]] = []  # (shard, file, clips) per task
    parts_of: dict[str, list[Path]] = {}  # each shard's task files, in part order
    for name, parts in zip(todo, units, strict=True):
        parts_of[name] = [out_dir / f"{name}.parquet"] if len(parts) == 1 else [
            out_dir / f".{name}.part{j:03d}.parquet" for j in range(len(parts))
        ]  # fmt: skip
        jobs += [(name, path, part) for path, part in zip(parts_of[name], parts, strict=True)]
    # Largest first (shards hold up to twice shard_clips): the pool's last tasks are then small,
    # and no worker idles while another finishes a big one.
    futures = {
        run_shard.submit(fn, Sealed(part), str(root), cfg, str(path), decode_timeout_s()): (
            name,
            path,
        )
        for name, path, part in sorted(jobs, key=lambda job: -len(job[2]))
    }
    # Each shard is finished (its parts merged, its result file written: done for a rerun) as
    # soon as its last task ends, whatever the layout order; its parts' results are folded in
    # part order, so the result file's bytes never depend on which task ended first.
    ended: dict[Path, ShardResult] = {}
    t0, done_clips = time.perf_counter(), 0
    n_clips, n_tasks = sum(len(layout[n]) for n in todo), len(jobs)
    for future in as_completed(list(futures)):
        name, path = futures[future]
        ended[path] = future.result()
        done_clips += ended[path].counts["clips_in"]
        progress(stage, done_clips, n_clips, len(ended), n_tasks, time.perf_counter() - t0)
        if any(p not in ended for p in parts_of[name]):
            continue
        res = ShardResult()
        for p in parts_of[name]:
            _add(res, ended[p])
        if len(parts_of[name]) > 1:
            merge_tables(parts_of[name], out_dir / f"{name}.parquet", spec)
        _save_result(out_dir / f"{name}.json", res)  # last: the shard is done
        results[name] = res
    # Hidden files (merged parts, a lost worker's temporary file) and shards of clips no longer
    # in the manifest (or of other settings or code) go.
    _remove(out_dir, keep={f"{n}{ext}" for n in layout for ext in (".parquet", ".json")})
    total = ShardResult()
    for name in layout:
        _add(total, results[name])
    table = pd.DataFrame(total.failures, columns=FAILURES.schema.names)
    write_table(table, out_dir / "failures.parquet", FAILURES)
    work = {"shards_reused": reused, "shards_written": len(todo), "clips_processed": n_clips}
    return total.counts, table, total.flagged, work


def _add(total: ShardResult, part: ShardResult) -> None:
    """Fold ``part``'s counts, failure rows and flagged clips into ``total``."""
    total.counts.update(part.counts)
    total.failures += part.failures
    total.flagged += part.flagged


def _remove(folder: Path, keep: set[str] | None) -> None:
    """Delete hidden entries of ``folder``, and, when ``keep`` is given, every shard (``*.parquet``
    and ``*.json``) not in it; ``failures.parquet`` stays."""
    for entry in folder.iterdir():
        stale = entry.name.startswith(".") or (
            keep is not None
            and entry.suffix in (".parquet", ".json")
            and entry.name not in keep
            and entry.name != "failures.parquet"
        )
        if stale:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


#: What a preprocessing run did (speed, reuse): logged to logs/timings, never in the tracked report,
#: which must be the same whether shards were reused or written.
WORK_KEYS = ("wall_s", "clips_per_s", "shards_reused", "shards_written", "clips_processed")


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
    preload: tuple[str, ...] = (),
) -> None:
    """The command line of a preprocessing stage ``name`` (params section ``section``): run
    ``flow(manifest, root, params, out)``, write the report, fail past the failure threshold.
    ``warm(section params)`` (load models, import torch) runs while the Prefect server starts, as
    do the reading of the code's imports for the shards' names (:func:`recipe`) and the start of
    the decoder processes (one per worker thread,
    :func:`pipeline.preprocess.shards.prestart_decoders`), which import the modules ``preload``
    besides the decoders."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--manifest", default="data/manifest/clips.parquet")
    ap.add_argument("--out", default=f"data/{name}")
    ap.add_argument("--metrics", default=f"reports/{name}.json")
    args = ap.parse_args(argv)
    params = stage_params(args.params)
    limit_native_threads()
    p = getattr(params, section)

    def meanwhile() -> None:  # while the Prefect server starts
        if runner_kind() == "thread":  # decoders for the pool's threads (workers start their own)
            prestart_decoders(workers(), decode_timeout_s(), preload)
        if warm is not None:
            warm(p)
        # The imports the shards' names (recipe) read, read now: a warm-up only (a stage module
        # named otherwise reads them when the flow names its shards).
        with contextlib.suppress(ModuleNotFoundError):
            runs(f"stages.{name}")

    with prefect_api(meanwhile=meanwhile):
        report = flow.with_options(task_runner=task_runner())(  # type: ignore[attr-defined]
            args.manifest, params.data.root, p, args.out
        )
    # Speed is logged, not tracked: the metrics file changes only when a result does.
    write_timing(name, {k: report.pop(k) for k in WORK_KEYS if k in report})
    write_json(args.metrics, report)
    if report["failure_fraction"] > p.max_failure_fraction:
        fail(
            f"{report['failures']} of the clips failed ({report['failure_fraction']:.1%} > "
            f"{section}.max_failure_fraction {p.max_failure_fraction:.1%}); "
            f"see {Path(args.out) / 'failures.parquet'}"
        )
