"""Incremental and resumable preprocessing (``stages/_shards.py``): the content-defined shard
layout, shard names, reuse after adding or removing clips, retrying failed clips, and a stage
SIGKILLed at random moments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.params import load_params
from pipeline.preprocess.shards import ClipRef
from pipeline.schema import FACE_FRAMES, FAILURES, read_table
from stages._runtime import prefect_api, task_runner
from stages._shards import WORK_KEYS, recipe, shard_name, shards
from stages.faces import faces_flow
from stages.voice import voice_flow
from tests.conftest import REPO
from tests.test_stages import _manifest

pytestmark = pytest.mark.usefixtures("prefect_server")  # see tests/conftest.py


def _refs(keys: list[str]) -> list[ClipRef]:
    return [ClipRef(k, f"mp4/{k}.mp4", "video", None, 1000) for k in keys]


def _layout_keys(layout: list[list[ClipRef]]) -> set[tuple[str, ...]]:
    return {tuple(c.clip_key for c in s) for s in layout}


def test_the_shard_recipe_follows_the_cpu_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard written under other kernels (pins off, another MKL branch) gets another name, so
    a pinned run never reuses it."""
    from pipeline.preprocess.voice_features import voice_shard

    def name() -> str:
        return shard_name("voice", recipe(voice_shard, {"cfg": 1}), [])

    base = name()
    assert name() == base
    monkeypatch.setenv("VOXFACE_NATIVE_SIMD", "1")
    native = name()
    monkeypatch.delenv("VOXFACE_NATIVE_SIMD")
    monkeypatch.setenv("MKL_CBWR", "AUTO")
    assert len({base, native, name()}) == 3


def test_the_layout_is_content_defined() -> None:
    """Shards of ``size`` clips on average, at most ``2 * size``, every clip once in key order;
    adding or removing a clip changes the shard it falls in (or two, at an anchor; one more
    where a cut at twice the size moves), no other."""
    rng = np.random.default_rng(0)
    keys = sorted({f"id{rng.integers(10**6):06d}/v/{u}" for u in range(3) for _ in range(700)})
    layout = shards(_refs(keys[::-1]), 16)
    sizes = [len(s) for s in layout]
    assert 12 <= np.mean(sizes) <= 20 and max(sizes) <= 32
    assert [c.clip_key for s in layout for c in s] == keys
    before = _layout_keys(layout)
    for k in range(25):
        new = f"id{rng.integers(10**6):06d}/w/{k}"
        added = _layout_keys(shards(_refs([*keys, new]), 16))
        assert len(before - added) <= 3 and len(added - before) <= 3  # the one it falls in
        gone = keys[int(rng.integers(len(keys)))]
        removed = _layout_keys(shards(_refs([c for c in keys if c != gone]), 16))
        assert len(before - removed) <= 3 and len(removed - before) <= 3
    for size in (2, 3, 5, 8):  # a run of clips without an anchor is cut at twice the size
        assert max(len(s) for s in shards(_refs(keys), size)) <= 2 * size


def test_shard_names_follow_recipe_and_clips_not_order() -> None:
    clips = _refs(["a/1", "a/2", "b/1"])
    name = shard_name("faces", "r1", clips)
    assert name.startswith("faces-") and len(name) == len("faces-") + 16
    assert shard_name("faces", "r1", list(clips)) == name
    assert shard_name("faces", "r2", clips) != name  # other settings or code
    assert shard_name("voice", "r1", clips) != name
    resized = [*clips[:2], ClipRef("b/1", "mp4/b/1.mp4", "video", None, 999)]
    assert shard_name("faces", "r1", resized) != name  # the file was replaced
    assert shard_name("faces", "r1", clips[:2]) != name


# ------------------------------------------------------------------ stage runs

FLOWS: dict[str, Callable[..., dict[str, Any]]] = {"faces": faces_flow, "voice": voice_flow}


def _run(kind: str, manifest: Path, root: Path, out: Path, shard_clips: int) -> dict[str, Any]:
    p = getattr(load_params(REPO / "params.yaml"), "face" if kind == "faces" else "voice")
    flow = FLOWS[kind].with_options(task_runner=task_runner())  # type: ignore[attr-defined]
    report: dict[str, Any] = flow(
        str(manifest), str(root), p.model_copy(update={"shard_clips": shard_clips}), str(out)
    )
    return report


def _files(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir())}


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    return {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in folder.iterdir()}


def _result(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in WORK_KEYS}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["faces", "voice"])
def test_adding_and_removing_clips_redoes_only_their_shards(
    kind: str,
    small_corpus: tuple[Path, pd.DataFrame, pd.DataFrame],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, clips, _ = small_corpus
    clips = clips.sort_values("path").reset_index(drop=True)
    monkeypatch.setenv("VOXFACE_RUNNER", "thread")
    monkeypatch.setenv("VOXFACE_WORKERS", "2")
    out = tmp_path / "out"
    with prefect_api():
        first = _run(kind, _manifest(root, clips.iloc[:5], tmp_path / "m5.parquet"), root, out, 2)
        assert first["shards_reused"] == 0 and first["clips_processed"] == 5
        stamps = _stamps(out)
        everything = _manifest(root, clips, tmp_path / "m_all.parquet")
        grown = _run(kind, everything, root, out, 2)
        # Only the shards holding the new clips (or cut differently by them) were written ...
        kept = {n for n in stamps if n in _stamps(out) and n != "failures.parquet"}
        assert grown["shards_reused"] == len([n for n in kept if n.endswith(".json")]) >= 1
        assert grown["clips_processed"] < len(clips)
        assert all(_stamps(out)[n] == stamps[n] for n in kept)  # ... the rest untouched
        # ... and the folder is what a run over all the clips from scratch writes.
        fresh = _run(kind, everything, root, tmp_path / "fresh", 2)
        assert _files(out) == _files(tmp_path / "fresh")
        assert _result(grown) == _result(fresh)
        # Removed clips drop out: again the bytes of a run from scratch.
        fewer = _manifest(root, clips.iloc[2:], tmp_path / "m_fewer.parquet")
        shrunk = _run(kind, fewer, root, out, 2)
        assert shrunk["clips_processed"] < len(clips) - 2
        _run(kind, fewer, root, tmp_path / "fresh_fewer", 2)
        assert _files(out) == _files(tmp_path / "fresh_fewer")
        again = _run(kind, fewer, root, out, 2)  # nothing to do
        assert again["shards_written"] == 0 and _result(again) == _result(shrunk)


@pytest.mark.slow
def test_retrying_failed_clips_redoes_only_their_shards(
    small_corpus: tuple[Path, pd.DataFrame, pd.DataFrame],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A clip unreadable at first (its header zeroed, same size) fails; once the file is fixed,
    ``VOXFACE_RETRY_FAILED=1`` redoes its shard only, and the failure is gone."""
    src, clips, _ = small_corpus
    root = tmp_path / "corpus"
    for p in clips.path:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes((src / p).read_bytes())
    bad = root / clips.path.iloc[3]
    good = bad.read_bytes()
    bad.write_bytes(b"\0" * 4096 + good[4096:])
    manifest = _manifest(root, clips, tmp_path / "m.parquet")
    monkeypatch.setenv("VOXFACE_RUNNER", "thread")
    out = tmp_path / "voice"
    with prefect_api():
        broken = _run("voice", manifest, root, out, 2)
        assert broken["failures"] == 1
        bad.write_bytes(good)
        stamps = _stamps(out)
        same = _run("voice", manifest, root, out, 2)  # the shard is done: failures stay
        assert same["shards_written"] == 0 and same["failures"] == 1
        monkeypatch.setenv("VOXFACE_RETRY_FAILED", "1")
        retried = _run("voice", manifest, root, out, 2)
        assert retried["shards_written"] == 1 and retried["failures"] == 0
        changed = {n for n, s in _stamps(out).items() if stamps.get(n) != s}
        assert len([n for n in changed if n.endswith(".json")]) == 1  # one shard redone
    assert len(read_table(out / "failures.parquet", FAILURES)) == 0


def _params_file(tmp_path: Path, root: Path) -> Path:
    text = (REPO / "params.yaml").read_text()
    text = text.replace("  root: data/synth\n", f"  root: {root}\n", 1)
    text = text.replace("  shard_clips: 64 ", "  shard_clips: 1 ", 1)
    assert f"root: {root}" in text and "shard_clips: 1 " in text
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def _visible_files_are_whole(folder: Path) -> None:
    for f in folder.iterdir():
        if f.name.startswith("."):
            continue  # a temporary file: the next run removes it
        if f.suffix == ".json":
            json.loads(f.read_text())
        elif f.name == "failures.parquet":
            read_table(f, FAILURES)
        else:
            read_table(f, FACE_FRAMES)


@pytest.mark.slow
def test_a_killed_faces_stage_resumes_without_redoing_finished_shards(
    small_corpus: tuple[Path, pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    """``python -m stages.faces`` (one clip per shard) SIGKILLed with its children at random
    moments while it works: every file left visible is whole, the next run keeps every finished
    shard as it is, and the last run's folder is byte for byte an uninterrupted run's."""
    root, clips, _ = small_corpus
    manifest = _manifest(root, clips, tmp_path / "m.parquet")
    params = _params_file(tmp_path, root)
    rng = np.random.default_rng(3)
    with prefect_api() as url:
        env = {**os.environ, "PREFECT_API_URL": url, "VOXFACE_RUNNER": "thread"}
        env |= {"VOXFACE_WORKERS": "2", "PYTHONPATH": str(REPO)}

        def stage(out: Path) -> subprocess.Popen[bytes]:
            cmd = [sys.executable, "-m", "stages.faces", "--params", str(params)]
            cmd += ["--manifest", str(manifest), "--out", str(out)]
            cmd += ["--metrics", str(out.parent / f"{out.name}.json")]
            return subprocess.Popen(
                cmd, cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.DEVNULL
            )

        out = tmp_path / "faces"
        kills = 0
        for _ in range(3):
            done_before = {f.name: f.stat().st_mtime_ns for f in out.glob("faces-*")}
            proc = stage(out)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                finished = set(p.name for p in out.glob("faces-*.json")) if out.is_dir() else set()
                if finished - {n for n in done_before if n.endswith(".json")}:
                    break  # this run has finished a shard of its own: kill it soon
                time.sleep(0.05)
            # A short random wait, well inside the rest of the run (8 clips take ~0.3 s on an idle
            # 2-core machine with a running Prefect server): a kill after the last shard proves
            # nothing, and the shards it left make every later run a no-op.
            time.sleep(float(rng.uniform(0.0, 0.1)))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                if 0 < len(list(out.glob("faces-*.json"))) < len(clips):
                    kills += 1  # killed mid-work: some shards finished, not all
            proc.wait(timeout=60)
            _visible_files_are_whole(out)
            for name, mtime in done_before.items():  # finished shards were not redone
                if name.endswith(".json") and (out / name).is_file():
                    assert (out / name).stat().st_mtime_ns == mtime, name
        assert kills >= 1
        assert stage(out).wait(timeout=300) == 0
        assert stage(tmp_path / "clean").wait(timeout=300) == 0
    assert not [f for f in out.iterdir() if f.name.startswith(".")]
    assert _files(out) == _files(tmp_path / "clean")
    report = json.loads((tmp_path / "faces.json").read_text())
    assert report == json.loads((tmp_path / "clean.json").read_text())
    assert report["clips_out"] == len(clips)
