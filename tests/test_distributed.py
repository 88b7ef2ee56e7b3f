"""Data-parallel training (pipeline.train.distributed): 2 gloo processes against 1 process at the
same global batch, each run fresh ``tests/ddp_probe.py`` children (one per rank)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from pipeline.train.distributed import SyncBatchNorm, convert_batchnorm
from stages._server import free_port
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def probe(name: str, out: Path, epochs: int, procs: int, dtype: str = "float32") -> dict[str, Any]:
    """Run ``tests/ddp_probe.py`` as ``procs`` ranks: the environment ``torchrun`` gives its
    ranks (rank, world size, rendezvous address), without the launcher process itself (its
    own torch import is a fresh interpreter's worth of CPU per run; ``torchrun`` proper is
    exercised by the train stage's relaunch below). Returns rank 0's printed result."""
    env = {**os.environ, "PROBE_DTYPE": dtype}
    if procs > 1:
        env |= {"WORLD_SIZE": str(procs), "LOCAL_WORLD_SIZE": str(procs),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}  # fmt: skip
    cmd = [sys.executable, "-m", "tests.ddp_probe", name, str(out), str(epochs)]
    with contextlib.ExitStack() as stack:
        files = (stack.enter_context(tempfile.TemporaryFile("w+")) for _ in range(2 * procs))
        logs = list(zip(files, files, strict=True))  # (stdout, stderr) of each rank
        ranks = [
            subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env | {"RANK": str(r), "LOCAL_RANK": str(r)},
                stdout=logs[r][0],
                stderr=logs[r][1],
                text=True,
            )
            for r in range(procs)
        ]
        deadline = time.monotonic() + 600
        try:  # as torchrun does: a rank that fails ends the others (they would wait for it)
            while any(r.poll() is None for r in ranks) and time.monotonic() < deadline:
                if any(r.poll() not in (None, 0) for r in ranks):
                    break
                time.sleep(0.05)
        finally:
            for rank in ranks:
                rank.kill()
                rank.wait()
        for f in (f for pair in logs for f in pair):
            f.seek(0)
        for rank, (_, err) in zip(ranks, logs, strict=True):
            assert rank.returncode == 0, err.read()[-3000:]
        result: dict[str, Any] = json.loads(logs[0][0].read().strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``two_ranks(name)``: the folder of a 3-epoch, 2-process float64 probe run of ``name``,
    run once for the module (the match test compares it with one process, the resume test
    with a stopped and resumed run)."""
    runs: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name not in runs:
            out = tmp_path_factory.mktemp(f"two-{name}")
            (out / "result.json").write_text(json.dumps(probe(name, out, 3, 2, "float64")))
            runs[name] = out
        return runs[name]

    return run


@pytest.mark.parametrize("name", ["cmpc", "wen2021"])
def test_two_processes_match_one_at_the_same_global_batch(
    name: str, tmp_path: Path, two_ranks: Callable[[str], Path]
) -> None:
    """cmpc: per-video memory and k-means (from epoch 1) across ranks; wen2021: the identity
    classifier (a loss module's parameters) and the identity hardness. In float64, so that float
    summation order (BatchNorm statistics and gradients summed over ranks) stays below 1e-12:
    any real difference (a wrong gradient scale, a missed BatchNorm reduction, ranks holding
    different memories or clusters) would be orders of magnitude larger."""
    one = probe(name, tmp_path / "one", 3, 1, "float64")
    two_dir = two_ranks(name)
    two = json.loads((two_dir / "result.json").read_text())
    assert two["first_loss"] == pytest.approx(one["first_loss"], rel=1e-12)
    g1 = torch.load(tmp_path / "one" / "first_grads.pt")
    g2 = torch.load(two_dir / "first_grads.pt")
    assert len(g1) == len(g2) > 10 and g1[0].dtype == torch.float64
    for a, b in zip(g1, g2, strict=True):
        assert (a - b).abs().max() <= 1e-10 * a.abs().max()
    # Three epochs later (Adam, the epoch-start k-means and memories): still equal to 1e-10.
    assert [r.keys() for r in two["history"]] == [r.keys() for r in one["history"]]
    for a, b in zip(one["history"], two["history"], strict=True):
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-10, abs=1e-12), (k, a, b)
    # Every rank holds the same encoders and the same method state (memories, clusters).
    assert len(two["ranks"]) == 2 and two["ranks"][0] == two["ranks"][1]
    assert (two_dir / "checkpoint.pt").is_file()


def test_a_two_process_run_resumes_from_rank_0s_checkpoint(
    tmp_path: Path, two_ranks: Callable[[str], Path]
) -> None:
    whole = json.loads((two_ranks("cmpc") / "result.json").read_text())
    probe("cmpc", tmp_path / "split", 2, 2, "float64")
    resumed = probe("cmpc", tmp_path / "split", 3, 2, "float64")
    assert resumed["ranks"] == whole["ranks"] and resumed["history"] == whole["history"]


def test_sync_batchnorm_is_batchnorm_outside_a_process_group() -> None:
    """Converted layers keep BatchNorm's parameters, statistics and outputs (one process)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    x = torch.randn(6, 3, 8, 8)
    ref = net(x)
    conv = convert_batchnorm(net)
    assert isinstance(conv[1], SyncBatchNorm)
    torch.testing.assert_close(conv(x), ref, rtol=0, atol=0)


def test_the_train_stage_runs_as_two_processes_and_rank_0_alone_writes(tmp_path: Path) -> None:
    """``VOXFACE_NPROC=2 python -m stages.train``: relaunched under torchrun, both ranks train,
    rank 0 writes the model and the reports (once), which record the process count."""
    from tests.test_stream import write_shards
    from tests.test_train import toy_pairs

    manifest, faces, voice = write_shards(tmp_path / "data", toy_pairs(), 3, 2)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    small = {"epochs": 2, "batch_size": 8, "face_size_px": 16, "voice_frames": 16, "embed_dim": 16}
    params["train"] |= small | {"voice_encoder": "voice_cnn", "eval_trials": 100}
    params["voice"]["n_mels"] = 32
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out, reports = tmp_path / "model", tmp_path / "reports"
    env = {**os.environ, "VOXFACE_NPROC": "2", "VOXFACE_DEVICE": "cpu"}
    argv = ["--method", "cid", "--seed", "1", "--params", tmp_path / "params.yaml",
            "--manifest", manifest, "--faces", faces, "--voice", voice, "--out", out,
            "--reports", reports]  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "stages.train", *map(str, argv)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((reports / "cid" / "s1.json").read_text())
    assert report["processes"] == 2 and report["train_clips"] == 36
    assert run.stdout.count("cid epoch 2:") == 1  # rank 0 alone reports progress
    history = json.loads((reports / "cid" / "s1_history.json").read_text())
    assert [r["epoch"] for r in history] == [1.0, 2.0]
    state = torch.load(out / "model.pt", weights_only=True)
    assert state["config"]["batch_size"] == 8
