"""Warm start: a zygote process with the heavy libraries imported forks one child per stage.

DVC runs every stage command as a fresh ``python -m stages.<name>`` process, and importing
torch (with ``torch._dynamo``, which ``torch.optim`` imports on its first call), Prefect, pandas
and pyarrow costs a stage 3-5 s of CPU before it does any work: on the tiny preset, about a
third of a ``dvc repro``. Under ``python -m stages.run`` a zygote (the name of Android's process
that app processes are forked from) serves the stage commands instead: a process that pins the
numeric kernels as every stage does first (:mod:`stages._pinned`), imports those libraries once
(:data:`PRELOAD`), and waits on a Unix socket.

``stages.run`` only names a folder for it (``VOXFACE_ZYGOTE``); the first stage command starts
the zygote there and waits for it (the zygote's imports are the ones that command would have
done; running it fresh meanwhile doubled that CPU on a loaded machine), so a ``dvc repro`` with
nothing to do starts none. Every stage command hands itself off from ``stages/__init__.py``,
before anything heavy is imported (:func:`hand_off`): it sends its arguments, working directory,
environment and standard streams. The zygote forks; the child leads a process group of its own,
takes the command's streams, directory and environment, keeps the project's library code the
zygote imported only if the command runs in the same directory and no source file there changed
since (else the stage imports the project's code itself, from the command's working directory),
and runs the stage module as ``python -m`` would, then exits as the stage's own process would
(``stages._runtime.run_main``). The command waits and exits with the child's status (or dies of
the signal that killed it); the signals it receives go on to the child's group, and a command
killed outright takes that group with it. The zygote ends with ``stages.run``.

Results cannot tell the difference: the zygote serves only commands whose interpreter, flags and
environment (after pinning) agree with its own on every variable that the preloaded libraries
read when they load (:data:`LOAD_TIME_ENV`: thread counts, kernel choices, paths, Prefect's
settings); anything else is declined (a line on stderr says why) and runs as a fresh process, as
does every command when the zygote is not there or not ready in time. ``VOXFACE_WARM_START=0``
switches it off (tests/test_e2e_reruns.py retrains and scores a method that way: the same
bytes); it needs Linux (``pidfd_open``, descriptor passing).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: ``<stages.run pid>:<folder>``, in the environment of the commands a zygote is to serve: the
#: zygote's pid file and socket are in the folder, and it ends with that process.
ENV = "VOXFACE_ZYGOTE"
#: ``0`` switches the warm start off.
SWITCH = "VOXFACE_WARM_START"
#: What the zygote imports (measured on this project's 2-core machine: torch 1.5 s,
#: torch._dynamo 1.5 s, Prefect 0.9 s + its flow engine 0.4 s, prefect_dask 0.6 s, pandas 0.4 s;
#: matplotlib's figure and Agg canvas, which only the report stage draws with, 0.7 s).
PRELOAD = (
    "numpy",
    "pandas",
    "pyarrow.parquet",
    "torch",
    "torch._dynamo",
    "torchaudio",
    "facenet_pytorch",
    "faiss",
    "prefect",
    "prefect.flow_engine",
    # What a process's first flow run imports (0.11 CPU-s): ``Flow.__call__`` its visualisation
    # tracker (with graphviz), the parameters' serialisation FastAPI (with Starlette and
    # OpenTelemetry), and anyio its asyncio back end (loaded by name on first use).
    "prefect.utilities.visualization",
    "fastapi.encoders",
    "anyio._backends._asyncio",
    "prefect_dask",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
)
#: Environment variables (name prefixes) that the preloaded libraries read when they load: a
#: command that differs from the zygote in any of them runs as a fresh process.
LOAD_TIME_ENV = (
    "OMP_",
    "GOMP_",
    "KMP_",
    "MKL_",
    "OPENBLAS_",
    "NPY_",
    "NUMPY_",
    "ATEN_",
    "ONEDNN_",
    "DNNL_",
    "TORCH",
    "PYTORCH_",
    "CUDA_",
    "FAISS_",
    "LD_",
    "MALLOC_",
    "PYTHON",
    "PREFECT_",
    "DASK_",
    "VOXFACE_NATIVE_SIMD",
    "TZ",
    "MPL",  # matplotlib: its config and font-cache folders, its backend
    "XDG_",
    "HOME",
)
#: Project packages: a child keeps the zygote's copy of their library code only while it is the
#: command's (same directory, same sources); else it imports them from the command's directory.
PROJECT = ("pipeline", "stages")
#: How long a command waits for a zygote that is still importing before it runs on its own.
READY_WAIT_S = 60.0
#: Signals a command passes on to its child's process group (a terminal's Ctrl-C included: the
#: child is not in the terminal's foreground group).
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)


def available() -> bool:
    """Whether this platform and the environment allow a warm start."""
    return (
        os.environ.get(SWITCH, "1") != "0"
        and sys.platform == "linux"
        and hasattr(os, "pidfd_open")
        and hasattr(socket, "send_fds")
    )


def load_time_env(env: dict[str, str]) -> dict[str, str]:
    """The variables of ``env`` that libraries read when they load (:data:`LOAD_TIME_ENV`)."""
    return {k: v for k, v in env.items() if k.startswith(LOAD_TIME_ENV)}


def _identity() -> dict[str, Any]:
    """What must match between a command and the zygote besides the environment."""
    return {"executable": sys.executable, "version": sys.version, "flags": list(sys.flags)}


def _send(sock: socket.socket, msg: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(msg).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.sendall(data)


def _recv(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """One message (a SOCK_SEQPACKET record) and the descriptors that came with it; None at EOF."""
    data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 3)
    return (json.loads(data) if data else None), fds


# ---------------------------------------------------------------- the command's side


def _module_of_command() -> str | None:
    """``stages.<name>`` when this process is ``python -m stages.<name> ...`` (no interpreter
    options) and is importing the ``stages`` package on its way there, else None."""
    argv: list[str] = sys.orig_argv
    if sys.argv[:1] != ["-m"] or len(argv) < 3 or argv[1] != "-m":
        return None
    name = argv[2]
    if not name.startswith("stages.") or name in ("stages.run", "stages._zygote"):
        return None
    return name


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True  # PermissionError too: it exists, someone else's


def _parse(spec: str) -> tuple[int, Path] | None:
    """``(owner pid, folder)`` of a ``VOXFACE_ZYGOTE`` value, None if it is not one."""
    owner, _, folder = spec.partition(":")
    return (int(owner), Path(folder)) if owner.isdigit() and folder else None


def _zygote_pid(folder: Path) -> int | None:
    """The pid in ``folder/pid``: None when there is no such file (no zygote started yet), 0
    while its starter is still writing it."""
    try:
        text = (folder / "pid").read_text()
    except FileNotFoundError:
        return None
    return int(text) if text.strip().isdigit() else 0


def _start(folder: Path, owner: int) -> None:
    """Start the zygote of ``folder`` unless another command did. It runs in a session of its
    own (a signal to this command's group is not for it), with its output in
    ``folder/zygote.log``, and exits with ``owner``."""
    try:
        fd = os.open(folder / "pid", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    with (folder / "zygote.log").open("ab") as log, os.fdopen(fd, "w") as pid_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stages._zygote", str(folder), str(owner)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        pid_file.write(str(proc.pid))


def _connect(spec: str) -> socket.socket | None:
    """A connection to the zygote of ``spec`` (started by this command if it is the first),
    waiting while it imports. None (run as a fresh process) when it is gone or not ready in
    time."""
    parsed = _parse(spec)
    if parsed is None or not _alive(parsed[0]):
        return None
    owner, folder = parsed
    deadline = time.monotonic() + READY_WAIT_S
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(str(folder / "socket"))
            return sock
        except OSError:
            sock.close()
        pid = _zygote_pid(folder)
        if pid is None:
            _start(folder, owner)  # unless another command just did
            continue
        if (pid and not _alive(pid)) or time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def hand_off() -> None:
    """Run this stage command in a child of the zygote, then exit with its status; return (and
    let the command run as a fresh process) when there is no zygote or it declines."""
    module, spec = _module_of_command(), os.environ.get(ENV)
    if module is None or not spec or not available():
        return
    sock = _connect(spec)
    if sock is None:
        return
    import stages._pinned  # noqa: F401  (the stage's own first import: pins os.environ)

    fds = [fd for fd in (0, 1, 2) if _is_open(fd)]
    request = {
        "module": module,
        "args": sys.orig_argv[3:],
        "orig_argv": sys.orig_argv,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "fds": fds,
        **_identity(),
    }
    try:
        _send(sock, request, fds)
        reply, _ = _recv(sock)
    except OSError:
        reply = None
    if reply is None or "pid" not in reply:
        sock.close()
        why = (reply or {}).get("declined") or "no answer"
        print(f"warm start declined ({why}): running {module} as a fresh process", file=sys.stderr)
        return
    child = int(reply["pid"])

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child, signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    try:
        done, _ = _recv(sock)
    except OSError:
        done = None
    if done is None:
        print("error: the warm-start zygote went away while the stage ran", file=sys.stderr)
        os._exit(1)
    code = int(done["status"])
    if code < 0:  # killed by a signal: die of the same one
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code
    os._exit(code)


def _is_open(fd: int) -> bool:
    """Whether file descriptor ``fd`` is open in this process."""
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


# ---------------------------------------------------------------- the zygote's side


def _decline_reason(req: dict[str, Any], own_env: dict[str, str]) -> str | None:
    ident = _identity()
    for key, value in ident.items():
        if req.get(key) != value:
            return f"{key} differs"
    theirs, ours = load_time_env(req["env"]), load_time_env(own_env)
    if theirs != ours:
        keys = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
        return "load-time environment differs: " + ", ".join(keys)
    return None


def _sources(root: Path) -> dict[str, tuple[int, int]]:
    """``(mtime_ns, size)`` of every Python file of the project's packages under ``root``."""
    out = {}
    for pkg in PROJECT:
        for path in sorted((root / pkg).rglob("*.py")):
            st = path.stat()
            out[str(path)] = (st.st_mtime_ns, st.st_size)
    return out


def _library_modules(root: Path) -> list[str]:
    """The project's library code under ``root``: every ``pipeline`` module and the stages'
    shared helpers (``stages._*``), not the stage modules themselves (a child runs its stage as
    ``__main__``) nor this one."""
    import pkgutil

    names = ["pipeline"]
    names += [m.name for m in pkgutil.walk_packages([str(root / "pipeline")], "pipeline.")]
    names += [
        f"stages.{m.name}"
        for m in pkgutil.iter_modules([str(root / "stages")])
        if m.name.startswith("_") and m.name != "_zygote"
    ]
    return names


def preload(
    root: Path,
) -> tuple[dict[str, str], dict[str, str | None], dict[str, tuple[int, int]] | None]:
    """Pin the kernels as every stage does first, then import :data:`PRELOAD` and the project's
    library code from ``root`` (:func:`_library_modules`); refuse to serve if that started a
    thread (forking a process with threads is not safe). Returns the pinned environment the
    libraries loaded in, what importing them changed in it (torch sets a cache folder, for one;
    None: removed), which a fresh process would have too, and the stamps of the project's
    sources as imported (None when one changed meanwhile: then no child keeps that code)."""
    import importlib

    import stages._pinned  # noqa: F401

    before = dict(os.environ)
    for name in PRELOAD:
        importlib.import_module(name)
    stamps: dict[str, tuple[int, int]] | None = _sources(root)
    for name in _library_modules(root):
        importlib.import_module(name)
    if _sources(root) != stamps or not _all_from(root):
        stamps = None
    if threading.active_count() != 1:
        raise RuntimeError(f"the preloaded imports started threads: {threading.enumerate()}")
    after = dict(os.environ)
    changed: dict[str, str | None] = {k: v for k, v in after.items() if before.get(k) != v}
    changed |= {k: None for k in before.keys() - after.keys()}
    return before, changed, stamps


def _project_modules() -> list[str]:
    """The names of the project's modules loaded in this process."""
    return [m for m in sys.modules if m.split(".")[0] in PROJECT]


def _all_from(root: Path) -> bool:
    """Whether every project module loaded comes from a file under ``root``."""
    for name in _project_modules():
        file = getattr(sys.modules[name], "__file__", None)
        if not file or not Path(file).resolve().is_relative_to(root):
            return False
    return True


def serve(folder: Path, owner: int, own_env: dict[str, str]) -> dict[str, Any]:
    """Accept commands on the Unix socket ``folder/socket`` and fork a child for each (commands
    whose environment agrees with ``own_env``, the one the libraries loaded in) until process
    ``owner`` (``stages.run``) ends; returns only in a child, with the request it is to run
    (see :func:`run_child`)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    tmp = folder / f"socket.{os.getpid()}.tmp"
    listener.bind(str(tmp))
    listener.listen(64)
    os.rename(tmp, folder / "socket")  # the socket appears when it is ready
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, ("listen", None))
    sel.register(os.pidfd_open(owner), selectors.EVENT_READ, ("owner", None))
    while True:
        for key, _ in sel.select():
            kind, data = key.data
            if kind == "listen":  # a command connects
                peer, _ = listener.accept()
                sel.register(peer, selectors.EVENT_READ, ("request", None))
            elif kind == "request":  # ... and sends its request: fork, or decline
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                sel.unregister(sock)
                req = _fork_for(sock, own_env, sel)
                if req is not None:
                    return req  # in the child
            elif kind == "exit":  # a child ended: tell its command how
                pid, peer = data
                _, status = os.waitpid(pid, 0)
                sel.unregister(key.fd)
                os.close(key.fd)
                with contextlib.suppress(KeyError):  # unless the command is gone already
                    sel.unregister(peer)
                with contextlib.suppress(OSError):
                    _send(peer, {"status": os.waitstatus_to_exitcode(status)})
                peer.close()
            elif kind == "command":  # the command sent nothing more: it is gone, kill its child
                sel.unregister(key.fileobj)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(data, signal.SIGKILL)  # the child's group: its children go too
            elif kind == "owner":  # stages.run has ended
                raise SystemExit(0)


def _fork_for(
    peer: socket.socket, own_env: dict[str, str], sel: selectors.BaseSelector
) -> dict[str, Any] | None:
    """Read a command's request from ``peer``; decline it, or fork a child for it. Returns the
    request in the child, None in the zygote (which then watches the child and the command)."""
    try:
        req, fds = _recv(peer)
    except OSError:
        req, fds = None, []
    why = "no request" if req is None else _decline_reason(req, own_env)
    if req is None or why is not None:
        with contextlib.suppress(OSError):
            _send(peer, {"declined": why})
        peer.close()
        for fd in fds:
            os.close(fd)
        return None
    pid = os.fork()
    if pid == 0:
        _become_child(sel, req, fds)
        return req
    for fd in fds:
        os.close(fd)
    with contextlib.suppress(OSError):  # as the child does (whichever runs first)
        os.setpgid(pid, pid)
    with contextlib.suppress(OSError):
        _send(peer, {"pid": pid})
    sel.register(os.pidfd_open(pid), selectors.EVENT_READ, ("exit", (pid, peer)))
    sel.register(peer, selectors.EVENT_READ, ("command", pid))
    return None


def _become_child(sel: selectors.BaseSelector, req: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: drop the zygote's sockets, take the command's place."""
    for key in list(sel.get_map().values()):
        obj = key.fileobj
        if isinstance(obj, socket.socket):
            obj.close()
        else:
            os.close(key.fd)
    sel.close()
    for sig in FORWARDED:  # a fresh interpreter's handlers
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    os.setpgid(0, 0)  # a group of its own: the command's signals and death reach all of it
    # The command's stdin, stdout and stderr, as fds 0, 1, 2 (a closed one stays closed).
    for i in (0, 1, 2):
        if i in req["fds"]:
            os.dup2(fds[req["fds"].index(i)], i)
        else:
            with contextlib.suppress(OSError):
                os.close(i)
    for fd in fds:
        if fd > 2:
            os.close(fd)


def run_child(
    req: dict[str, Any],
    changed: dict[str, str | None],
    root: Path,
    stamps: dict[str, tuple[int, int]] | None,
) -> None:
    """Run the request's stage module as ``python -m`` would, in the command's directory and
    environment (with the ``changed`` variables that the preloaded libraries set on import);
    the interpreter then exits as after any ``python -m`` run. The project's library code that
    the zygote imported from ``root`` is kept when the command runs in ``root`` and every source
    file of the project there has the ``stamps`` it had then (the check Python makes of a cached
    ``.pyc``, on the whole tree: a file added or removed counts); otherwise, and always for the
    stage module itself, the child imports the command's code afresh."""
    import io
    import runpy
    import types

    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    for key, value in changed.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        if fd not in req["fds"]:
            setattr(sys, name, None)
            continue
        mode = "rb" if fd == 0 else "wb"
        old = getattr(sys, name)
        # The process's own stream, never closed (as sys.stdout is not).
        binary = open(fd, mode, buffering=0 if unbuffered and fd else -1, closefd=False)  # noqa: SIM115
        stream = io.TextIOWrapper(
            binary,
            encoding=old.encoding if old else None,
            errors=old.errors if old else None,
            line_buffering=fd == 2 or (fd == 1 and os.isatty(1)),
            write_through=unbuffered and fd > 0,
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    # (stamps is None unless every project module the zygote loaded came from root: preload)
    keep = stamps is not None and Path(req["cwd"]).resolve() == root and _sources(root) == stamps
    for name in _project_modules():
        if not keep or name == req["module"]:
            del sys.modules[name]  # imported afresh by the stage, from its directory
    sys.path[0] = req["cwd"]
    sys.orig_argv = req["orig_argv"]
    # A fresh interpreter's state where the zygote's would be shared by all its children: the
    # random seeds (random reseeds itself after a fork), multiprocessing's key and directory.
    sys.modules["numpy"].random.seed()
    import multiprocessing.process as mp_process

    mp_process.ORIGINAL_DIR = req["cwd"]  # type: ignore[attr-defined]
    mp_process.current_process().authkey = os.urandom(32)
    sys.argv = ["", *req["args"]]  # runpy puts the module's path first (not "-m": no hand-off)
    sys.modules["__main__"] = types.ModuleType("__main__")
    # What `python -m` calls (private, stable since Python 3.4): the module runs as __main__.
    runpy._run_module_as_main(req["module"], alter_argv=True)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- stages.run's side


@contextlib.contextmanager
def zygote(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Yield ``env`` with ``VOXFACE_ZYGOTE`` set, for the commands this process runs: the first
    stage command among them starts the zygote and waits for it; that one and the others run
    as its children. The zygote ends with this process, or on leaving. ``env`` is unchanged
    where a warm start is not available."""
    if not available():
        yield env
        return
    folder = Path(tempfile.mkdtemp(prefix="voxface-zygote-"))
    try:
        yield {**env, ENV: f"{os.getpid()}:{folder}"}
    finally:
        pid = _zygote_pid(folder)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    folder, owner = Path(sys.argv[1]), int(sys.argv[2])
    root = Path.cwd().resolve()  # sys.path[0] of `python -m`: where the project is imported from
    env, changed, stamps = preload(root)
    req = serve(folder, owner, env)
    run_child(req, changed, root, stamps)


if __name__ == "__main__":
    main()
