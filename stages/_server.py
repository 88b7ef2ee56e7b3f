"""A temporary Prefect API server for a command, started before the command's imports.

A stage needs a Prefect API for its flow. Without ``PREFECT_API_URL`` a stage command (or
``stages.run``) starts a temporary server of its own (:func:`stages._runtime.prefect_api`).
Prefect's ``SubprocessASGIServer`` does that by running uvicorn on ``prefect.server``'s app in a
subprocess, but it first imports ``prefect.server`` into the calling process (1.7 s of a 2-core
machine's CPU, for a class whose work is done in the subprocess), and it starts only when asked,
after the command's own imports. This module starts the same subprocess with the standard
library alone, so ``stages/__init__.py`` can start it as the first thing a ``python -m
stages.<name>`` command does (:func:`prestart`): the server's own start-up (its imports, the
database: 4-5 s) then overlaps with the stage's imports and model loading.

The server runs in Prefect's ephemeral mode (``PREFECT__SERVER_EPHEMERAL=1``, no UI, none of the
background services), as Prefect's own temporary server does, without Prefect's usage telemetry
unless ``PREFECT_SERVER_ANALYTICS_ENABLED`` asks for it (left on, a temporary server's heartbeat
tried to reach Prefect's servers, which machines without internet cannot, and to record its
session in the database while the flow wrote to it: "database is locked" tracebacks on the
console of a stage command run without the Makefile's settings), on a port of its own, and stops
when its command does (:meth:`Server.stop`, also registered with ``atexit``), or, when the
command is killed outright, by itself once it sees its parent gone (:data:`_WATCHED`).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

#: uvicorn's exit status when its port is taken: the server is started again on another port.
_PORT_IN_USE = 3
#: ``python -m uvicorn ARGS`` that also stops (SIGTERM to itself: uvicorn's own shutdown) once
#: the process given first has gone: a command killed outright (SIGKILL, no ``atexit``) leaves
#: no server behind. A plain ``-c`` program: ``-m stages...`` would import this package again.
_WATCHED = """\
import os, runpy, signal, sys, threading, time
parent = int(sys.argv.pop(1))
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=watch, name="parent-watch", daemon=True).start()
sys.argv[0] = "uvicorn"
runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
"""
_early: Server | None = None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that no one listens on now (the system's pick): for a temporary
    Prefect server, or a DDP rendezvous (tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def startup_timeout_s() -> float:
    """How long to wait for the server: ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``, the
    setting Prefect's own temporary server obeys (default here 120 s: Prefect's 20 s is too short
    on a loaded 2-core machine)."""
    return float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))


def answers(api_url: str) -> bool:
    """Whether the Prefect API at ``api_url`` answers its health check now."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=5) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class Server:
    """One temporary Prefect server subprocess: :meth:`wait` until it answers, :meth:`stop`."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._launch()
        atexit.register(self.stop)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _launch(self) -> None:
        spec = importlib.util.find_spec("prefect")  # finds the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("the prefect package is not installed")
        app_dir = Path(next(iter(spec.submodule_search_locations))).parent
        self.port = free_port()
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1"}
        env["PREFECT__SERVER_FINAL"] = "1"
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # see the module doc
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WATCHED, str(os.getpid()), "--app-dir", str(app_dir),
             "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
            env=env,
        )  # fmt: skip

    def wait(self, timeout_s: float | None = None) -> str:
        """Block until the server answers its health check; return its API URL. Raises
        RuntimeError when it exits or does not answer within ``timeout_s``
        (:func:`startup_timeout_s` by default)."""
        limit = startup_timeout_s() if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        while True:
            proc = self._proc
            if proc is None:
                raise RuntimeError("the temporary Prefect server was stopped")
            code = proc.poll()
            if code == _PORT_IN_USE:  # someone took the port meanwhile: another one
                self._launch()
                continue
            if code is not None:
                raise RuntimeError(f"the temporary Prefect server exited with status {code}")
            if answers(self.api_url):
                return self.api_url
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the temporary Prefect server did not answer within {limit:g} s "
                    "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the server (kill it after 5 s) and reap it; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def prestart() -> None:
    """Start a server now, for :func:`take` to hand over later, unless ``PREFECT_API_URL`` is
    set (a server already serves this command) or one was prestarted already."""
    global _early
    if _early is None and not os.environ.get("PREFECT_API_URL"):
        _early = Server()


def take() -> Server:
    """The prestarted server (handed over once), else a new one."""
    global _early
    server, _early = _early, None
    return server if server is not None else Server()
