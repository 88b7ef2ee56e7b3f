"""The preprocessing flows: a process pool and a local Dask cluster give identical shards."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from pipeline.params import load_params
from pipeline.schema import FACE_FRAMES, MANIFEST, VOICE_FEATURES, read_table, write_table
from stages._runtime import prefect_api, task_runner
from stages.faces import faces_flow
from stages.voice import voice_flow
from tests.conftest import REPO


def _manifest(root: Path, clips: pd.DataFrame, out: Path) -> Path:
    keys = clips.path.str.removeprefix("mp4/").str.removesuffix(".mp4")
    frame = pd.DataFrame(
        {
            "clip_key": keys,
            "identity": keys.str.split("/").str[0],
            "video_id": keys.str.split("/").str[1],
            "utterance": keys.str.split("/").str[2],
            "split": "train",
            "gender": None,
            "nationality": None,
            "media_path": clips.path,
            "media_kind": "video",
            "face_dir": None,
            "n_face_crops": 0,
            "size_bytes": [(root / p).stat().st_size for p in clips.path],
        }
    )
    return write_table(frame, out, MANIFEST)


def _tables(folder: Path, spec: object, prefix: str) -> pd.DataFrame:
    files = sorted(folder.glob(f"{prefix}-*.parquet"))
    return pd.concat([read_table(f, spec) for f in files], ignore_index=True)  # type: ignore[arg-type]


@pytest.mark.slow
def test_process_pool_and_dask_cluster_give_identical_output(
    small_corpus: tuple[Path, pd.DataFrame, pd.DataFrame],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, clips, _ = small_corpus
    manifest = _manifest(root, clips, tmp_path / "clips.parquet")
    p = load_params(REPO / "params.yaml")
    face = p.face.model_copy(update={"shard_clips": 3})
    voice = p.voice.model_copy(update={"shard_clips": 3})
    out: dict[str, dict[str, pd.DataFrame]] = {}
    with prefect_api():
        for runner in ("process", "dask"):
            monkeypatch.setenv("VOXFACE_RUNNER", runner)
            monkeypatch.setenv("VOXFACE_WORKERS", "2")
            d = tmp_path / runner
            rf = faces_flow.with_options(task_runner=task_runner())(
                str(manifest), str(root), face, str(d / "faces")
            )
            rv = voice_flow.with_options(task_runner=task_runner())(
                str(manifest), str(root), voice, str(d / "voice")
            )
            assert rf["clips_out"] == rv["clips_out"] == len(clips)
            shards = [f"faces-0000{i}.parquet" for i in range(3)]
            assert sorted(os.listdir(d / "faces")) == [*shards, "failures.parquet"]
            out[runner] = {
                "faces": _tables(d / "faces", FACE_FRAMES, "faces"),
                "voice": _tables(d / "voice", VOICE_FEATURES, "voice"),
            }
    for kind in ("faces", "voice"):
        pd.testing.assert_frame_equal(out["process"][kind], out["dask"][kind])
