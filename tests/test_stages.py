"""The preprocessing flows: a process pool and a local Dask cluster give identical shards."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from prefect import flow
from prefect.settings import (
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    get_current_settings,
    temporary_settings,
)

from pipeline.params import load_params
from pipeline.preprocess.shards import ClipRef, ShardResult
from pipeline.schema import (
    FACE_FRAMES,
    FAILURES,
    MANIFEST,
    SYNTH_CLIPS,
    VOICE_FEATURES,
    read_table,
    write_table,
)
from stages import _server
from stages._runtime import TEMPORARY_API, prefect_api, task_runner
from stages._shards import _fan_out, shards, work_units
from stages.faces import faces_flow
from stages.synth import synth_flow
from stages.voice import voice_flow
from tests.conftest import REPO
from tests.helpers import small_spec

pytestmark = pytest.mark.usefixtures("prefect_server")  # see tests/conftest.py


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
    listing: dict[str, list[str]] = {}
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
            listing[runner] = sorted(os.listdir(d / "faces"))
            assert "failures.parquet" in listing[runner] and len(listing[runner]) >= 3
            out[runner] = {
                "faces": _tables(d / "faces", FACE_FRAMES, "faces"),
                "voice": _tables(d / "voice", VOICE_FEATURES, "voice"),
            }
    assert listing["process"] == listing["dask"]  # shard names never depend on the runner
    for kind in ("faces", "voice"):
        pd.testing.assert_frame_equal(out["process"][kind], out["dask"][kind])


def test_the_synth_stage_renders_in_children_the_bytes_of_a_serial_render(
    small_corpus: tuple[Path, pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    """The synth flow's tasks render in leased child processes: every file is the bytes the same
    spec rendered serially in this process gives (tests/helpers.py), and so is the truth."""
    root, clips, _ = small_corpus
    out = tmp_path / "synth"
    with prefect_api():
        report = synth_flow.with_options(task_runner=task_runner())(small_spec(), str(out))
    assert report["clips"] == len(clips)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == sorted(clips.path)
    for path in clips.path:
        assert (out / path).read_bytes() == (root / path).read_bytes(), path
    truth = read_table(out / "ground_truth/clips.parquet", SYNTH_CLIPS).set_index("path")
    for col in ("speech_fraction", "n_frames", "mouth_open_mean"):
        assert truth.loc[clips.path, col].tolist() == clips[col].tolist(), col


@pytest.mark.slow
def test_a_shard_split_across_workers_is_the_same_bytes(
    small_corpus: tuple[Path, pd.DataFrame, pd.DataFrame],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fewer shards than workers: the shard is cut into one task per worker and the parts merged;
    the shard file is byte for byte the one a single task writes."""
    root, clips, _ = small_corpus
    manifest = _manifest(root, clips, tmp_path / "clips.parquet")
    p = load_params(REPO / "params.yaml")
    face = p.face.model_copy(update={"shard_clips": 1000})
    voice = p.voice.model_copy(update={"shard_clips": 1000})
    bytes_of: dict[str, dict[str, bytes]] = {}
    monkeypatch.setenv("VOXFACE_RUNNER", "thread")
    with prefect_api():
        for n in ("1", "3"):
            monkeypatch.setenv("VOXFACE_WORKERS", n)
            d = tmp_path / f"w{n}"
            faces_flow.with_options(task_runner=task_runner())(
                str(manifest), str(root), face, str(d / "faces")
            )
            voice_flow.with_options(task_runner=task_runner())(
                str(manifest), str(root), voice, str(d / "voice")
            )
            bytes_of[n] = {
                f"{k}/{f.name}": f.read_bytes()
                for k in ("faces", "voice")
                for f in sorted((d / k).iterdir())
            }
    assert bytes_of["1"] == bytes_of["3"]  # names and bytes
    assert sum(k.startswith("faces/faces-") and k.endswith(".parquet") for k in bytes_of["3"]) == 1
    assert len(_tables(tmp_path / "w3" / "faces", FACE_FRAMES, "faces")) > 0


def _keys(units: list[list[list[ClipRef]]]) -> list[list[list[str]]]:
    return [[[c.clip_key for c in part] for part in shard] for shard in units]


def test_work_units_give_every_worker_a_task() -> None:
    clips = [ClipRef(f"id/{i:02d}", f"{i}.mp4", "video", None) for i in range(14)]
    keys = [c.clip_key for c in clips]
    # Enough shards: one task per shard.
    layout = [clips[i : i + 4] for i in range(0, 14, 4)]
    assert _keys(work_units(layout, 2)) == [[keys[i : i + 4]] for i in range(0, 14, 4)]
    # One shard, two workers: two tasks of 7.
    assert _keys(work_units([clips], 2)) == [[keys[:7], keys[7:]]]
    # Two shards (10 + 4), eight workers: four tasks each, sizes within one of each other.
    units = work_units([clips[:10], clips[10:]], 8)
    assert [[len(p) for p in s] for s in units] == [[2, 3, 3, 2], [1, 1, 1, 1]]
    assert [c for s in _keys(units) for p in s for c in p] == keys
    # Never more tasks than clips, never an empty one.
    assert _keys(work_units([clips[:3]], 16)) == [[["id/00"], ["id/01"], ["id/02"]]]
    assert work_units([], 4) == []


def test_work_units_cut_the_last_shards_finer() -> None:
    """Guided self-scheduling: taken largest first, a shard is cut into parts of at most
    ceil(clips left / workers) unless parts would have fewer than MIN_PART_CLIPS clips, so the big
    shards go whole and the pool ends on small tasks; the parts keep the shard's clips in order."""
    sizes = [137, 256, 39, 160, 66, 256, 46]  # the default corpus's voice shards, layout order
    start = [sum(sizes[:i]) for i in range(len(sizes))]
    clips = [ClipRef(f"id/{i:04d}", f"{i}.mp4", "video", None) for i in range(sum(sizes))]
    layout = [clips[a : a + n] for a, n in zip(start, sizes, strict=True)]
    units = work_units(layout, 2)
    assert [[len(p) for p in s] for s in units] == [
        [137],
        [256],
        [20, 19],
        [160],
        [66],
        [256],
        [23, 23],
    ]
    assert [[c for p in s for c in p] for s in units] == layout
    assert [len(s) for s in work_units(layout, 1)] == [1] * len(sizes)  # one worker: no cuts
    # Never below MIN_PART_CLIPS: 12-clip shards on 4 workers stay whole once there are enough.
    twelve = [clips[i : i + 12] for i in range(0, 96, 12)]
    assert [len(s) for s in work_units(twelve, 4)] == [1] * 8


_started: list[int] = []


def _record_size(
    clips: list[ClipRef], root: Path, cfg: object, out: Path, timeout_s: float
) -> ShardResult:
    _started.append(len(clips))
    write_table(pd.DataFrame(columns=FAILURES.schema.names), out, FAILURES)
    return ShardResult()


@flow
def _sizes_flow(clips: list[ClipRef], out: str) -> None:
    _fan_out("sizes", _record_size, clips, 6, Path(out), {}, Path(out), FAILURES)


def _first_waits_for_another(
    clips: list[ClipRef], root: Path, cfg: object, out: Path, timeout_s: float
) -> ShardResult:
    """The layout's first shard ends only once another shard's result file is there (or after
    20 s); every other shard ends at once."""
    res = ShardResult()
    if clips[0].clip_key == "id/000":
        deadline = time.monotonic() + 20
        while not list(out.parent.glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        res.counts["saw_another_done"] = len(list(out.parent.glob("*.json")))
    write_table(pd.DataFrame(columns=FAILURES.schema.names), out, FAILURES)
    return res


@flow
def _waiting_flow(clips: list[ClipRef], out: str) -> Counter[str]:
    counts, *_ = _fan_out(
        "wait", _first_waits_for_another, clips, 6, Path(out), {}, Path(out), FAILURES
    )
    return counts


@pytest.mark.usefixtures("prefect_server")
def test_a_shard_is_done_when_its_tasks_end_not_in_layout_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard that ends while one before it in the layout still runs gets its result file at
    once (a kill then would not make a rerun redo it)."""
    monkeypatch.setenv("VOXFACE_RUNNER", "thread")
    monkeypatch.setenv("VOXFACE_WORKERS", "2")
    clips = [ClipRef(f"id/{i:03d}", f"{i}.mp4", "video", None) for i in range(30)]
    assert shards(clips, 6)[0][0].clip_key == "id/000" and len(shards(clips, 6)) > 2
    counts = _waiting_flow.with_options(task_runner=task_runner())(clips, str(tmp_path / "out"))
    assert counts["saw_another_done"] >= 1
    assert len(list((tmp_path / "out").glob("*.json"))) == len(shards(clips, 6))


@pytest.mark.usefixtures("prefect_server")
def test_the_largest_tasks_start_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One worker takes the tasks in the order they were submitted: largest first, so that a
    pool of several never ends on one big shard while the others idle."""
    monkeypatch.setenv("VOXFACE_RUNNER", "thread")
    monkeypatch.setenv("VOXFACE_WORKERS", "1")
    clips = [ClipRef(f"id/{i:03d}", f"{i}.mp4", "video", None) for i in range(60)]
    sizes = [len(s) for s in shards(clips, 6)]
    assert sizes != sorted(sizes, reverse=True)  # the layout's own order is not the answer
    _started.clear()
    _sizes_flow.with_options(task_runner=task_runner())(clips, str(tmp_path / "out"))
    assert _started == sorted(sizes, reverse=True)


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_answers_tells_a_serving_api_from_a_closed_port(prefect_server: str) -> None:
    assert _server.answers(prefect_server)
    assert not _server.answers(f"http://127.0.0.1:{_server.free_port()}/api")


def test_a_killed_command_leaves_no_temporary_server_behind() -> None:
    """SIGKILL runs no ``atexit`` handler: the server stops by itself once its parent is gone."""
    code = (
        "import time; from stages._server import Server; s = Server(); "
        "print(s._proc.pid, flush=True); time.sleep(120)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PREFECT_API_URL", None)
    cmd = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True)
    assert cmd.stdout is not None
    server = int(cmd.stdout.readline())
    assert _running(server)
    cmd.kill()
    cmd.wait()
    deadline = time.monotonic() + 20
    while _running(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(server)


@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="reads /proc")
@pytest.mark.parametrize("user", [None, "true"])
def test_a_temporary_server_sends_no_telemetry_unless_asked(
    user: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temporary server starts with Prefect's usage telemetry off, unless the user's own
    environment turns it on."""
    if user is None:
        monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)
    else:
        monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", user)
    server = _server.Server()
    try:
        assert server._proc is not None
        env = Path(f"/proc/{server._proc.pid}/environ").read_bytes().split(b"\0")
    finally:
        server.stop()
    expected = f"PREFECT_SERVER_ANALYTICS_ENABLED={user or 'false'}".encode()
    assert expected in env


@pytest.mark.slow
def test_prefect_api_runs_meanwhile_and_serves(
    prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A temporary server (the one prestarted, as a stage command does) comes up while
    ``meanwhile`` runs; it serves, its flows run without heartbeats, and it is gone after. A
    server of the user's own keeps the heartbeat setting. An error in ``meanwhile`` propagates
    and leaves no server behind. Another server running in the same process (the test
    session's) keeps serving throughout."""
    import httpx

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    calls: list[str] = []
    _server.prestart()  # as stages/__init__.py does for a stage command
    early = _server._early
    assert early is not None
    with (
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}),
        prefect_api(meanwhile=lambda: calls.append("warm")) as url,
    ):
        assert calls == ["warm"] and os.environ["PREFECT_API_URL"] == url == early.api_url
        assert httpx.get(f"{url}/health").status_code == 200
        # A temporary server: flows run without heartbeats.
        assert os.environ[TEMPORARY_API] == url
        assert get_current_settings().flows.heartbeat_frequency is None
    assert "PREFECT_API_URL" not in os.environ and TEMPORARY_API not in os.environ
    assert _server._early is None  # handed over once, stopped with its command
    # A server of the user's own keeps the heartbeats as they are set.
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}), prefect_api():
        assert get_current_settings().flows.heartbeat_frequency == 60
    # The temporary server of ``stages.run``, passed on to its stage commands: none.
    monkeypatch.setenv(TEMPORARY_API, prefect_server)
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}), prefect_api():
        assert get_current_settings().flows.heartbeat_frequency is None
    monkeypatch.delenv("PREFECT_API_URL")
    monkeypatch.delenv(TEMPORARY_API)

    def broken() -> None:
        raise RuntimeError("model failed to load")

    with pytest.raises(RuntimeError, match="model failed to load"), prefect_api(meanwhile=broken):
        pass
    assert "PREFECT_API_URL" not in os.environ
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health")
    assert url != prefect_server and httpx.get(f"{prefect_server}/health").status_code == 200


@pytest.mark.slow
def test_a_real_dask_cluster_survives_a_killed_worker(
    small_corpus: tuple[Path, pd.DataFrame, pd.DataFrame],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``dask scheduler`` and two ``dask worker`` processes started apart from the stage; one
    worker is SIGKILLed while it runs a shard task. Dask reruns the task on the other worker:
    every clip is in the output once, the shards are the bytes a thread pool writes, and no
    temporary file is left behind."""
    import contextlib
    import json
    import signal
    import subprocess
    import threading
    import time

    from distributed import Client

    root, clips, _ = small_corpus
    manifest = _manifest(root, clips, tmp_path / "clips.parquet")
    face = load_params(REPO / "params.yaml").face.model_copy(update={"shard_clips": 1})
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False", "PYTHONPATH": str(REPO)}
    sched_file = tmp_path / "scheduler.json"
    dask, quiet = [sys.executable, "-m", "dask"], ["--no-dashboard"]
    killed: list[int] = []
    deadline = time.monotonic() + 300
    with contextlib.ExitStack() as stack:
        stack.enter_context(prefect_api())  # first: the server is slow to start on a busy machine
        procs = [
            subprocess.Popen(
                [*dask, "scheduler", "--scheduler-file", str(sched_file), "--port", "0", *quiet],
                env=env,
                stderr=subprocess.DEVNULL,
            )
        ]
        stack.callback(lambda: [(p.kill(), p.wait(timeout=30)) for p in procs])
        while not sched_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # the file is written, then filled
        address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            procs.append(
                subprocess.Popen(
                    [*dask, "worker", address, "--nthreads", "1", "--name", f"w{i}", *quiet],
                    env=env,
                    stderr=subprocess.DEVNULL,
                )
            )
        client = stack.enter_context(Client(address))
        client.wait_for_workers(2, timeout=300)

        def kill_a_busy_worker() -> None:
            while time.monotonic() < deadline:
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:
                    pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                    time.sleep(0.3)  # into the task: decoding or detecting
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
        killer.start()
        monkeypatch.setenv("VOXFACE_RUNNER", "dask")
        monkeypatch.setenv("VOXFACE_DASK_ADDRESS", address)
        report = faces_flow.with_options(task_runner=task_runner())(
            str(manifest), str(root), face, str(tmp_path / "dask")
        )
        killer.join(timeout=5)
        monkeypatch.setenv("VOXFACE_RUNNER", "thread")
        monkeypatch.setenv("VOXFACE_WORKERS", "2")
        faces_flow.with_options(task_runner=task_runner())(
            str(manifest), str(root), face, str(tmp_path / "thread")
        )
    assert len(killed) == 1  # (the nanny of `dask worker` starts a new worker process)
    assert report["clips_in"] == report["clips_out"] == len(clips) and report["failures"] == 0
    names = sorted(os.listdir(tmp_path / "dask"))
    assert names == sorted(os.listdir(tmp_path / "thread"))
    shards = [n for n in names if n.startswith("faces-")]  # one clip per shard: .parquet, .json
    assert (
        len(shards) == 2 * len(clips)
        and "failures.parquet" in names
        and len(names) == len(shards) + 1
    )  # no temporary file left
    for n in names:
        assert (tmp_path / "dask" / n).read_bytes() == (tmp_path / "thread" / n).read_bytes(), n
    got = _tables(tmp_path / "dask", FACE_FRAMES, "faces")
    keys = clips.path.str.removeprefix("mp4/").str.removesuffix(".mp4")
    assert set(got.clip_key) == set(keys)
    assert not got.duplicated(["clip_key", "frame_index"]).any()


RUN_MAIN_PROBE = """
import atexit, sys, threading, time
from pathlib import Path
from stages._runtime import run_main

def main():
    out = Path(sys.argv[1])
    def late():
        time.sleep(0.3)
        out.write_text("thread done")
    threading.Thread(target=late).start()  # not a daemon: the exit waits for it
    atexit.register(lambda: print("atexit ran"))
    sys.stdout.write("buffered, no newline")  # flushed on the way out
    {end}

run_main(main)
"""


@pytest.mark.parametrize(
    ("end", "status", "stderr"),
    [
        ("", 0, ""),
        ("raise SystemExit(3)", 3, ""),
        ("raise SystemExit('error: bad clip list')", 1, "error: bad clip list"),
        ("raise ValueError('broken')", 1, "ValueError: broken"),
    ],
)
def test_run_main_exits_as_python_does(end: str, status: int, stderr: str, tmp_path: Path) -> None:
    """``run_main`` skips the interpreter's teardown, not what a stage's exit owes: the exit
    status, threads joined, atexit handlers run, streams flushed, errors printed."""
    import subprocess

    script = tmp_path / "probe.py"
    script.write_text(RUN_MAIN_PROBE.replace("{end}", end))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "thread.txt")],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert res.returncode == status, res.stderr
    assert (tmp_path / "thread.txt").read_text() == "thread done"
    assert res.stdout.startswith("buffered, no newline")
    assert stderr in res.stderr
    assert res.stdout.endswith("atexit ran\n")
