"""Shared fixtures: quiet, isolated Prefect; a tiny rendered corpus; the real sample clips."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# The session's Prefect server migrates a fresh database first: give it time on a loaded machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# ``make test`` runs two test files at once, so two processes' torch thread pools often share two
# cores. libgomp's threads spin while they wait for work (``OMP_WAIT_POLICY`` unset), burning the
# core the other process needs: two 2-thread training loops started together took 20.5 s wall
# and 20 CPU-s each, against 6.6 CPU-s alone; passive waiting brought them to 7.1 s. The wait
# policy decides when an idle thread sleeps, never what is computed: results are the same bytes.
# Set before anything here imports torch (this worker's own training tests included), and
# inherited by every process the tests start.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


#: The longest test files, longest first. ``make test`` hands whole files to its workers in
#: collection order (``--dist loadfile --no-loadscope-reorder``; xdist's default order is by
#: test count), so these start at once and the short files fill in around them: longest-first
#: scheduling, which keeps one worker from running the end-to-end file alone long after the
#: other has run out of work.
LONGEST_FIRST = (
    "test_e2e.py",
    "test_realdata.py",
    "test_distributed.py",
    "test_e2e_reruns.py",  # waits for test_e2e.py's tiny build (``tiny_build``) if it is not done
    "test_stages.py",
    "test_reproducible.py",
    "test_shards.py",
    "test_zygote.py",  # 10-20 s each: started before the many short files, which fill the end
    "test_isolate.py",
    "test_facetrack.py",
    "test_train.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Collect the files of :data:`LONGEST_FIRST` first, in that order (a stable sort: every
    other file, and the tests within each file, keep their order)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


#: Set (to its URL) for the workers when the controlling process started the session's server.
_SESSION_URL = "VOXFACE_TEST_SESSION_SERVER"
_SESSION_SERVER: list[tuple[Any, str]] = []  # (stages._server.Server, its PREFECT_HOME)


def pytest_configure(config: pytest.Config) -> None:
    """One Prefect server for the whole run, started by the controlling process before
    pytest-xdist starts its workers, which inherit its URL (``PREFECT_API_URL``, marked temporary
    as ``stages.run`` marks its own: flows run without heartbeats). One server per worker cost a
    second start-up (15.5 CPU-s here, most of it migrating a fresh database) and a second idle
    server (about 2 % of a core). It stops with the run, or by itself if the run is killed
    (:mod:`stages._server`). A ``PREFECT_API_URL`` already set is used as it is; a run without
    workers (no ``-n``: one file, ``make test-fast``) starts one only if a test asks for it
    (:func:`prefect_server`), as before."""
    workers = config.getoption("numprocesses", None)  # None without pytest-xdist
    if hasattr(config, "workerinput") or os.environ.get("PREFECT_API_URL") or not workers:
        return
    from stages._runtime import TEMPORARY_API
    from stages._server import Server

    home = os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="voxface-test-prefect-")
    server = Server()
    _SESSION_SERVER.append((server, home))
    # Not waited for here: it comes up while the workers start and collect (_prefect_home waits).
    os.environ["PREFECT_API_URL"] = os.environ[TEMPORARY_API] = server.api_url
    os.environ[_SESSION_URL] = server.api_url


def pytest_unconfigure(config: pytest.Config) -> None:
    for server, home in _SESSION_SERVER:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    _SESSION_SERVER.clear()


@pytest.fixture(scope="session", autouse=True)
def _prefect_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """This worker's Prefect home (its client's files), and the session's server answering
    before the first test runs (:func:`pytest_configure` does not wait for it).

    The home gets a copy of the session server's database, migrated by then: the temporary
    servers that tests start here (``prefect_api()``, stage commands run without
    ``PREFECT_API_URL``) then open a database at Prefect's schema instead of migrating a new one
    (measured here: 5.9 CPU-s to answer on a copy, 15.1 on an empty home)."""
    from stages._server import answers, startup_timeout_s

    session_home = os.environ.get("PREFECT_HOME")
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    url = os.environ.get(_SESSION_URL)
    deadline = time.monotonic() + startup_timeout_s()
    while url and not answers(url):  # pytest_configure's server: wait until it answers
        if time.monotonic() > deadline:
            pytest.fail(f"the session's Prefect server at {url} did not answer")
        time.sleep(0.1)
    if url and session_home and (Path(session_home) / "prefect.db").is_file():
        copy_database(Path(session_home) / "prefect.db", home / "prefect.db")


def copy_database(src: Path, dest: Path) -> None:
    """A consistent copy of the SQLite database ``src`` (in use by a server) at ``dest``:
    SQLite's online backup, which copies committed pages only, whatever the server writes
    meanwhile."""
    import sqlite3

    with (
        contextlib.closing(sqlite3.connect(src)) as a,
        contextlib.closing(sqlite3.connect(dest)) as b,
    ):
        a.backup(b)


@pytest.fixture(scope="session")
def prefect_server(_prefect_home: None) -> Iterator[str]:
    """The test session's Prefect server (:func:`pytest_configure` started it), as ``python -m
    stages.run`` gives one to a whole ``dvc repro``: its URL is in ``PREFECT_API_URL``, so flows
    run here and stage processes started by tests (``stages.run`` included) use it instead of
    starting a temporary server apiece (5-10 s each, its database migrated afresh the first
    time). ``prefect_api()`` starting its own server is tested in tests/test_stages.py."""
    from stages._runtime import prefect_api

    with prefect_api() as url:
        yield url


@pytest.fixture(scope="session")
def tiny_build(
    prefect_server: str, tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> tuple[Path, float]:
    """The tiny preset's first ``dvc repro`` (:func:`tests.test_e2e.build_tiny`), built once for
    the whole test session: pytest-xdist's workers share it through a file lock in their common
    temporary folder, the first to ask builds it and a later one waits for it (a failed build is
    not tried again: its error is every asker's). Returns the repository and the build's wall
    seconds; tests work on copies of it (:func:`tests.test_e2e.tiny_copy`)."""
    from filelock import FileLock

    from tests.test_e2e import build_tiny

    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent  # the workers' common folder
    folder, repo = shared / "tiny-build", shared / "tiny-build" / "repo"
    done, failed = folder / "wall.txt", folder / "failed.txt"
    with FileLock(str(shared / "tiny-build.lock")):
        if failed.is_file():
            pytest.fail(f"the tiny build failed on another worker:\n{failed.read_text()}")
        if not done.is_file():
            folder.mkdir(exist_ok=True)
            try:
                wall = build_tiny(repo)
            except BaseException as e:
                failed.write_text(f"{type(e).__name__}: {e}")
                raise
            done.write_text(f"{wall}\n")
            print(f"tiny dvc repro: {wall:.1f} s")
    return repo, float(done.read_text())


@pytest.fixture(scope="session")
def small_corpus(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """A rendered 4-identity corpus: (root, clips with their truth, identities)."""
    from tests.helpers import render_corpus, small_spec

    root = tmp_path_factory.mktemp("synth")
    ids, _, clips, truth = render_corpus(root, small_spec())
    return root, clips.merge(truth, on="path"), ids


@pytest.fixture(scope="session")
def realdata() -> Path:
    """``../shared/realdata`` (skips the test when it is absent)."""
    if not (REALDATA / "manifest.csv").is_file():
        pytest.skip("../shared/realdata not present")
    return REALDATA
