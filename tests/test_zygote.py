"""The warm start (stages/_zygote.py): a stage command run by a zygote's child behaves as the
fresh ``python -m stages.<name>`` process it replaces: arguments, module, directory, streams,
exit status, signals, process group; commands it cannot serve faithfully run fresh.

The stage here is a probe module written into a copy of the project's ``stages`` package; the
zygote is the real one (it imports torch and Prefect), started once for the module. That the
pipeline's outputs are the same bytes with and without it is checked end to end
(tests/test_e2e_reruns.py retrains a method without it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stages._zygote import ENV, _alive, available, zygote
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(
    not available(), reason="warm start off (VOXFACE_WARM_START=0) or not on Linux"
)

PROBE = """
import stages._pinned  # noqa: F401  (first, as every stage)

import importlib, json, os, sys, time

what = sys.argv[1]
if what == "info":
    print(json.dumps({
        "pid": os.getpid(), "ppid": os.getppid(), "pgrp": os.getpgrp(), "cwd": os.getcwd(),
        "argv": sys.argv, "name": __name__, "file": __file__, "torch": "torch" in sys.modules,
        "probe_env": os.environ.get("PROBE"), "npy": os.environ.get("NPY_DISABLE_CPU_FEATURES"),
        "stages": sys.modules["stages"].__file__,
        "kept": "pipeline.params" in sys.modules,  # the probe itself does not import it
        "mark": getattr(importlib.import_module("pipeline.atomic"), "PROBE_MARK", None),
        "atomic": sys.modules["pipeline.atomic"].__file__,
    }))
elif what == "exit":
    sys.exit(int(sys.argv[2]))
elif what == "raise":
    raise ValueError("the probe failed")
elif what == "upper":
    sys.stdout.write(sys.stdin.read().upper())
elif what == "sleep":
    print(os.getpid(), flush=True)
    time.sleep(120)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder whose ``stages`` package has the probe stage."""
    root = tmp_path_factory.mktemp("zygote")
    for pkg in ("stages", "pipeline"):
        shutil.copytree(REPO / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "stages" / "probe.py").write_text(PROBE)
    return root


@pytest.fixture(scope="module")
def warm_env(project: Path) -> Iterator[dict[str, str]]:
    """The environment of commands that a zygote serves: the first one started it and was its
    first child."""
    env = {k: v for k, v in os.environ.items() if k != ENV}
    with zygote(env) as served:
        first = info(project, served)
        assert first["ppid"] == zygote_pid(served) and first["torch"] is True
        yield served


def run(
    project: Path, env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "stages.probe", *args]
    return subprocess.run(
        cmd, cwd=project, env=env, input=stdin, capture_output=True, text=True, timeout=120
    )


def info(project: Path, env: dict[str, str]) -> dict[str, object]:
    res = run(project, env, "info")
    assert res.returncode == 0, res.stderr
    out: dict[str, object] = json.loads(res.stdout)
    return out


def zygote_pid(env: dict[str, str]) -> int:
    return int((Path(env[ENV].split(":", 1)[1]) / "pid").read_text())


def test_a_stage_runs_in_the_zygotes_child_as_python_m_runs_it(
    project: Path, warm_env: dict[str, str]
) -> None:
    fresh_env = {k: v for k, v in warm_env.items() if k != ENV}
    fresh = info(project, fresh_env | {"PROBE": "x"})
    warm = info(project, warm_env | {"PROBE": "x"})
    assert fresh["torch"] is False and fresh["ppid"] == os.getpid()
    assert warm["torch"] is True and warm["ppid"] == zygote_pid(warm_env)  # torch came preloaded
    for key in ("argv", "name", "file", "cwd", "probe_env", "npy", "stages"):
        assert warm[key] == fresh[key], key
    assert warm["name"] == "__main__"
    assert warm["file"] == str(project / "stages" / "probe.py")  # the command's project's code
    assert warm["stages"] == str(project / "stages" / "__init__.py")
    assert warm["npy"]  # pinned, as in a fresh stage


def test_the_child_leads_a_process_group_of_its_own(
    project: Path, warm_env: dict[str, str]
) -> None:
    """So that the command's signals, and its death, reach the stage's own children too."""
    out = info(project, warm_env)
    assert out["ppid"] == zygote_pid(warm_env) and out["pgrp"] == out["pid"]


def test_exit_status_streams_and_tracebacks_come_back(
    project: Path, warm_env: dict[str, str]
) -> None:
    assert run(project, warm_env, "exit", "3").returncode == 3
    res = run(project, warm_env, "raise")
    assert res.returncode == 1
    assert "ValueError: the probe failed" in res.stderr
    assert 'File "' + str(project / "stages" / "probe.py") in res.stderr
    assert run(project, warm_env, "upper", stdin="voice and face\n").stdout == "VOICE AND FACE\n"


def test_a_command_whose_load_time_environment_differs_runs_fresh(
    project: Path, warm_env: dict[str, str]
) -> None:
    for change in ({"OMP_NUM_THREADS": "7"}, {"VOXFACE_NATIVE_SIMD": "1"}):
        out = info(project, warm_env | change)
        assert out["torch"] is False and out["ppid"] != zygote_pid(warm_env), change
    out = info(project, warm_env | {"VOXFACE_THREADS": "3"})  # read at run time: served
    assert out["ppid"] == zygote_pid(warm_env)


def _gone(pid: int, timeout: float = 20.0) -> bool:
    """Whether process ``pid`` has exited (and been reaped) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_signalled_command_takes_its_child_with_it(
    project: Path, warm_env: dict[str, str], sig: signal.Signals
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.probe", "sleep"],
        cwd=project,
        env=warm_env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    assert child != proc.pid  # the zygote's child runs the stage
    proc.send_signal(sig)  # to the command alone, not its group
    assert proc.wait(timeout=30) == -sig  # SIGTERM: passed on, and the command dies of it too
    assert _gone(child)


def test_library_code_is_kept_only_in_its_directory_while_its_sources_are_unchanged(
    project: Path, warm_env: dict[str, str], tmp_path: Path
) -> None:
    """The zygote's preloaded ``pipeline`` code serves commands in its own directory until a
    source file changes; a command elsewhere, or after an edit, imports the code afresh."""
    out = info(project, warm_env)
    assert out["kept"] is True and out["atomic"] == str(project / "pipeline" / "atomic.py")
    other = tmp_path / "other"
    for pkg in ("stages", "pipeline"):
        shutil.copytree(project / pkg, other / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    out = info(other, warm_env)
    assert out["ppid"] == zygote_pid(warm_env)  # served warm, with that directory's code
    assert out["kept"] is False and out["atomic"] == str(other / "pipeline" / "atomic.py")
    atomic = project / "pipeline" / "atomic.py"
    text = atomic.read_text()
    atomic.write_text(text + "\nPROBE_MARK = 1\n")
    try:
        out = info(project, warm_env)
        assert out["ppid"] == zygote_pid(warm_env)
        assert out["kept"] is False and out["mark"] == 1  # the edited code, imported afresh
    finally:
        atomic.write_text(text)
