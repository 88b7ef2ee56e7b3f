"""Execution knobs shared by the stages, read from the environment (never from params).

- ``VOXFACE_RUNNER``: ``thread`` (default), ``process`` or ``dask``: how a stage's Prefect flow
  fans its tasks out. Threads are the default on one machine: decoding already runs in child
  processes and MTCNN / torch release the GIL, while a process pool pays ~5 s per worker to
  import torch (``benchmarks/preprocess.py`` measures both).
- ``VOXFACE_WORKERS``: pool size (default: the machine's CPU count).
- ``VOXFACE_DASK_ADDRESS``: scheduler of an existing Dask cluster (``tcp://host:8786``); without
  it, ``dask`` starts a local cluster of ``VOXFACE_WORKERS`` single-threaded processes.
- ``VOXFACE_THREADS``: native threads per preprocessing worker (BLAS, OpenMP); default 1. The
  preprocessing stages run torch on one thread whatever it says (MTCNN's boxes depend on it). The
  stages that train or embed (``train``, ``lowshot``, ``ceiling``, ``evaluate``) ignore it: their
  thread count is the param ``train.threads``, because it changes their floats.
- ``VOXFACE_DEVICE``: the training and embedding device (default CUDA when present).

Which of these change results:
- ``VOXFACE_RUNNER``, ``VOXFACE_WORKERS``, ``VOXFACE_DASK_ADDRESS`` change speed only: the
  preprocessing shards are the same bytes whatever the pool (tests/test_stages.py compares them).
- ``VOXFACE_THREADS`` changes speed only (tests/test_reproducible.py trains under two thread
  settings and two emulated CPUs and compares the weights' bytes).
- ``VOXFACE_DEVICE`` changes results: a GPU sums in other orders than a CPU. It is recorded with
  the results it shaped (``device`` and ``threads`` in ``reports/train/<method>/s<seed>.json``),
  so a different value shows up in ``dvc metrics diff``; DVC does not rerun a stage when it
  changes.

Speed figures (wall seconds, clips or pairs per second) go to ``logs/timings/`` (untracked):
a rerun that changes no result changes no tracked file.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from pipeline.atomic import atomic_path
from pipeline.params import Params, ParamsError, load_params
from stages import TIMINGS  # one JSON file per stage run there, overwritten
from stages._server import take as take_server

if TYPE_CHECKING:
    import torch


def workers() -> int:
    return max(1, int(os.environ.get("VOXFACE_WORKERS", str(os.cpu_count() or 1))))


def limit_native_threads() -> None:
    """One native thread per worker unless told otherwise: oversubscription is 8-10x slower."""
    n = os.environ.get("VOXFACE_THREADS", "1")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, n)


def runner_kind() -> str:
    """``VOXFACE_RUNNER``: ``thread`` (the default), ``process`` or ``dask``."""
    return os.environ.get("VOXFACE_RUNNER", "thread")


def task_runner() -> TaskRunner[Any]:
    """The task runner chosen by ``VOXFACE_RUNNER`` (see the module docstring)."""
    kind = runner_kind()
    if kind == "process":
        return ProcessPoolTaskRunner(max_workers=workers())
    if kind == "thread":
        return ThreadPoolTaskRunner(max_workers=workers())
    if kind == "dask":
        import dask
        from prefect_dask.task_runners import DaskTaskRunner

        # Shard tasks decode in child processes, which daemonic Dask workers may not start.
        # Workers of your own cluster need DASK_DISTRIBUTED__WORKER__DAEMON=False likewise.
        dask.config.set({"distributed.worker.daemon": False})

        address = os.environ.get("VOXFACE_DASK_ADDRESS")
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": workers(), "threads_per_worker": 1, "processes": True}
        )
    raise SystemExit(f"VOXFACE_RUNNER={kind!r}: expected 'process', 'thread' or 'dask'")


def write_json(path: Path | str, payload: dict[str, Any]) -> None:
    """Write a metrics/report JSON atomically, keys sorted, for stable diffs."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_timing(stage: str, figures: dict[str, Any], root: Path = TIMINGS) -> Path:
    """Log a stage's speed (wall seconds, clips or pairs per second, threads) to
    ``logs/timings/<stage>.json``. Speed is not a result: it varies from run to run, so it stays
    out of the metrics files that git and DVC track."""
    path = root / f"{stage.replace('@', '_')}.json"
    write_json(path, {"stage": stage, **figures})
    return path


def fail(message: str) -> NoReturn:
    """Exit the stage with a one-line error (no traceback for expected input problems)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_main(main: Callable[[], object]) -> NoReturn:
    """Run a stage's ``main`` and end the process as ``python -m`` would, less the teardown.

    Tearing down an interpreter that has imported torch, Prefect, pandas and pyarrow frees every
    module and object one by one: 1.2-1.5 s per stage process on a 2-core machine (measured: a
    fork of such a process exits in 1.62 s with ``sys.exit``, 0.10 s this way), paid by each of a
    run's stages. By the time ``main`` returns the stage has written and closed its files, so
    this does what of the teardown matters (waits for non-daemon threads, runs the ``atexit``
    handlers: logging, multiprocessing, Prefect's and Dask's clean-ups, flushes stdout and
    stderr) and leaves with ``os._exit``. An exception other than ``SystemExit`` with an int
    status takes Python's usual path (traceback or message, status 1).
    """
    try:
        main()
        code = 0
    except SystemExit as stop:
        if not (stop.code is None or isinstance(stop.code, int)):
            raise
        code = stop.code or 0
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            code = code or 120  # as Python does when it cannot flush them
    os._exit(code)


#: The URL of a temporary server a command started (``stages.run`` exports it to its stages).
TEMPORARY_API = "VOXFACE_TEMPORARY_API"


@contextlib.contextmanager
def prefect_api(meanwhile: Callable[[], object] | None = None) -> Iterator[str]:
    """Make sure one Prefect API serves this process and every worker it starts.

    With ``PREFECT_API_URL`` set (a server started once for the whole ``dvc repro``, or the
    user's own for the UI), use it. Otherwise start one temporary server (:mod:`stages._server`:
    the one ``stages/__init__.py`` started before the command's imports, if it did) and export
    its URL, so that pool workers join it instead of each starting their own (5-7 s apiece). The
    server takes seconds to come up (its own imports and database): ``meanwhile`` (loading a
    model, importing torch) runs in this thread while it does.

    Flows run without heartbeats on a temporary server (this one, or the one ``stages.run``
    started: :data:`TEMPORARY_API`): heartbeats let a server's services mark a run whose process
    died as crashed, and a temporary server runs none of them and dies with its command, while
    the flow engine's wait for its heartbeat thread adds up to 1 s to every flow. A server of
    your own keeps Prefect's default.
    """
    url = os.environ.get("PREFECT_API_URL")
    if url:
        if meanwhile is not None:
            meanwhile()
        with _flow_settings(url, temporary=os.environ.get(TEMPORARY_API) == url):
            yield url
        return
    server = take_server()
    errors: list[BaseException] = []

    def start() -> None:
        try:
            server.wait()
        except BaseException as e:  # re-raised in the calling thread
            errors.append(e)

    starting = threading.Thread(target=start, name="prefect-server-start")
    starting.start()
    try:
        if meanwhile is not None:
            meanwhile()
    finally:
        starting.join()
    if errors:
        server.stop()
        raise errors[0]
    os.environ["PREFECT_API_URL"] = os.environ[TEMPORARY_API] = server.api_url
    try:
        with _flow_settings(server.api_url, temporary=True):
            yield server.api_url
    finally:
        _drain_prefect_workers()
        os.environ.pop("PREFECT_API_URL", None)
        os.environ.pop(TEMPORARY_API, None)
        server.stop()


@contextlib.contextmanager
def _flow_settings(url: str, temporary: bool) -> Iterator[None]:
    """Prefect's settings for flows on the API at ``url`` (no heartbeats when ``temporary``)."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    updates: dict[Any, Any] = {PREFECT_API_URL: url}
    if temporary:
        updates[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
    with temporary_settings(updates=updates):
        yield


def _drain_prefect_workers() -> None:
    """Send queued logs and events before the server goes away (else they retry for minutes)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def stage_params(path: str) -> Params:
    """``params.yaml`` for a stage's command line: an invalid file exits with its message."""
    try:
        return load_params(path)
    except ParamsError as e:
        fail(str(e))
        raise  # unreachable: fail() exits


def setup_torch(threads: int) -> None:
    """Deterministic kernels and ``threads`` CPU threads (``train.threads``: a param, because the
    thread count splits float sums and so shapes the trained weights; with it fixed and the
    kernels pinned by :mod:`pipeline.cpu_pin`, a CPU run gives the same bytes on any x86-64
    machine). cuBLAS needs its fixed workspace set before CUDA starts."""
    import torch
    from threadpoolctl import threadpool_limits

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # torch.use_deterministic_algorithms(True) without its one extra: it imports torch._inductor
    # (2 s of a stage's start-up, for torch.compile's setting; nothing here compiles).
    torch._C._set_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    threadpool_limits(threads)  # numpy's BLAS and faiss's OpenMP too (probes, k-means)


def device() -> torch.device:
    """The training / embedding device: ``VOXFACE_DEVICE``, default CUDA when present, else CPU."""
    import torch

    return torch.device(
        os.environ.get("VOXFACE_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
    )


def model_dir(method: str, seed: int, root: str = "models") -> str:
    """Where ``train@<method>-<seed>`` writes: ``models/<method>/s<seed>``."""
    return f"{root}/{method}/s{seed}"
