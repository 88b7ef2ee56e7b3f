"""Run fragile native calls (video decoding) in a child process with a timeout.

decord has been reported to hang in native code on damaged files; a hang inside the stage's own
worker would freeze the whole stage. :class:`Isolated` keeps one plain child interpreter
(``python -m pipeline.preprocess.isolate``, which imports only what the called functions need) and
talks to it over pipes. When a call overruns its timeout the child is killed and
:class:`CallTimeout` is raised; when the child dies (a crash in native code), :class:`ChildDied`.
The next call starts a fresh child. A plain subprocess, unlike ``fork``, is safe from a
multi-threaded parent, and unlike ``spawn``/``forkserver`` it does not re-import the parent's main
module. Shard tasks take a child each with :func:`lease` (children are kept and reused across
shards); a stage starts them with :func:`prestart` while its Prefect server starts.

A call's timeout counts its own work only: the child acknowledges each request once it has read
it (a fresh child's interpreter start-up and the called module's imports come before that), and
the call's clock starts at the acknowledgement. Reaching that point has its own, longer limit
(:data:`START_TIMEOUT_S`), so a child that cannot even start is still caught, but a loaded
machine's slow start-up no longer counts as a hung decoder.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import pickle
import re
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

T = TypeVar("T")
_HEADER = struct.Struct("<Q")
#: The most seconds a request may wait for the child to read it (a fresh child's start-up and
#: the called module's imports), beyond the call's own timeout.
START_TIMEOUT_S = 120.0
_STARTED = "started"


class CallTimeout(TimeoutError):
    """The isolated call did not finish in time; its child process was killed."""


class ChildDied(RuntimeError):
    """The child process exited during the call (e.g. a crash in native code)."""


def _send(stream: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = max(0.0, deadline - time.monotonic())
            if not select.select([fd], [], [], left)[0]:
                raise CallTimeout
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise ChildDied
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class Isolated:
    """A reusable child interpreter: ``with Isolated(30) as iso: iso.call(fn, *args)``.

    ``fn`` must be importable by its module path (it is pickled by reference).
    """

    def __init__(self, timeout_s: float, preload: tuple[str, ...] = ()) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self.preload = preload  # modules every child imports as it starts, before any request
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Isolated:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.preprocess.isolate", *self.preload],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
        return self._proc

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the child; exceptions raised there are re-raised here."""
        (out,) = self.map(fn, [args])
        if isinstance(out, BaseException):
            raise out
        return out

    def map(
        self, fn: Callable[..., T], arglist: Iterable[tuple[Any, ...]], ahead: int = 2
    ) -> Iterator[T | BaseException]:
        """``fn(*args)`` for each args, in order, keeping ``ahead`` requests in flight so the
        child decodes the next item while the caller works on this one. Yields each result, or
        the exception it raised (:class:`CallTimeout`, :class:`ChildDied` included)."""
        todo = iter(arglist)
        flight: deque[tuple[Any, ...]] = deque()
        deadline = 0.0

        def send(proc: subprocess.Popen[bytes], args: tuple[Any, ...]) -> None:
            # A dead child shows up as end of output on the next read; a write may fail first.
            assert proc.stdin is not None
            flight.append(args)
            with contextlib.suppress(BrokenPipeError):
                _send(proc.stdin, (fn, args))

        def refill(proc: subprocess.Popen[bytes]) -> None:
            while len(flight) < ahead:
                nxt = next(todo, None)
                if nxt is None:
                    return
                send(proc, nxt)

        def awaiting_start() -> tuple[float, bool]:
            """(deadline, started) until the child acknowledges the item at the head of the
            queue: the start-up limit applies; from the acknowledgement on, the call's own."""
            return time.monotonic() + max(START_TIMEOUT_S, self.timeout_s), False

        proc = self._ensure()
        refill(proc)
        deadline, started = awaiting_start()
        while flight:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            try:
                (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
                kind, value = pickle.loads(_read_exact(fd, size, deadline))
                if kind == _STARTED:
                    started = True
                    deadline = time.monotonic() + self.timeout_s
                    continue
            except (CallTimeout, ChildDied, BrokenPipeError) as e:
                if isinstance(e, CallTimeout):
                    self.close(kill=True)
                    err: BaseException = CallTimeout(
                        f"no result after {self.timeout_s:g} s"
                        if started
                        else f"the decoder process did not start within {START_TIMEOUT_S:g} s"
                    )
                else:
                    err = ChildDied(f"decoder process exited with code {proc.wait()}")
                    self._proc = None
                flight.popleft()  # the item being worked on failed; resend the others
                pending = list(flight)
                flight.clear()
                proc = self._ensure()
                for args in pending:
                    send(proc, args)
                refill(proc)
                deadline, started = awaiting_start()
                yield err
                continue
            flight.popleft()
            refill(proc)
            deadline, started = awaiting_start()  # the next item's clock: from its acknowledgement
            yield value

    def close(self, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if kill:
            proc.kill()
        else:
            assert proc.stdin is not None
            proc.stdin.close()  # the child exits on end of input
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_idle: dict[float, list[Isolated]] = {}
_idle_lock = threading.Lock()


def _kept(iso: Isolated) -> Isolated:
    """``iso``, closed when the process exits (the children :func:`lease` hands out are kept
    across callers)."""
    atexit.register(iso.close)
    return iso


@contextlib.contextmanager
def lease(timeout_s: float, preload: tuple[str, ...] = ()) -> Iterator[Isolated]:
    """A child for one caller at a time: an idle one of this timeout (prestarted, or given back
    by an earlier caller: a child starts once, ~0.3 s, and is kept across shards), else a new
    one that imports ``preload`` as it starts (what the caller's calls need: imported then, they
    count against the start-up limit, not the first call's timeout). It is given back when the
    caller is done with it, and closed instead when the caller stopped part-way (requests may
    still be in flight)."""
    with _idle_lock:
        pool = _idle.setdefault(timeout_s, [])
        iso = pool.pop() if pool else None
    if iso is None:
        iso = _kept(Isolated(timeout_s, preload))
    done = False
    try:
        yield iso
        done = True
    finally:
        if done:
            with _idle_lock:
                _idle[timeout_s].append(iso)
        else:
            iso.close(kill=True)


def prestart(n: int, timeout_s: float, preload: tuple[str, ...]) -> None:
    """Start ``n`` idle children for :func:`lease` now, each importing the modules ``preload``
    (the decoders) as it starts: a stage does this while its Prefect server starts, so its first
    shards do not wait for their decoder's interpreter and imports. Returns without waiting."""
    started = [_kept(Isolated(timeout_s, preload)) for _ in range(n)]
    for iso in started:
        iso._ensure()
    with _idle_lock:
        _idle.setdefault(timeout_s, []).extend(started)


#: The most of a failed call's decoder messages kept in its error (characters, the last ones).
DECODER_MESSAGES_KEPT = 400


def _with_messages(err: Exception, said: str) -> Exception:
    """``err`` with the decoder's own messages of the failed call appended to its message."""
    said = " | ".join(line.strip() for line in said.splitlines() if line.strip())
    # Addresses and clock times differ run to run; failure rows must not.
    said = re.sub(r"\[\d\d:\d\d:\d\d\] ?", "", re.sub(r"0x[0-9a-fA-F]+", "0x…", said))
    if said and err.args and isinstance(err.args[0], str):
        err.args = (f"{err.args[0]} [decoder: {said[-DECODER_MESSAGES_KEPT:]}]", *err.args[1:])
    return err


def _serve() -> None:
    """Child side: read (fn, args) requests until end of input, answer each.

    Whatever native code prints (FFmpeg's messages on damaged or odd files) goes to a scratch
    file, not to the console: a failed call carries the last of it in its error message, so it
    ends up in the stage's failure row; a successful call's messages are dropped.
    """
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 1)  # nothing printed may reach the protocol or the console
        os.dup2(scratch.fileno(), 2)
        while True:
            head = proto_in.read(_HEADER.size)
            if len(head) < _HEADER.size:
                return
            (size,) = _HEADER.unpack(head)
            fn, args = pickle.loads(proto_in.read(size))  # imports fn's module
            _send(proto_out, (_STARTED, None))  # the call's clock starts now
            scratch.seek(0)
            scratch.truncate()
            try:
                reply: tuple[str, object] = ("ok", fn(*args))
            except Exception as e:
                sys.stderr.flush()
                scratch.seek(0)
                reply = ("err", _with_messages(e, scratch.read().decode("utf-8", "replace")))
            try:
                _send(proto_out, reply)
            except (pickle.PicklingError, TypeError, AttributeError) as e:
                _send(proto_out, ("err", RuntimeError(f"unpicklable result or error: {e}")))


if __name__ == "__main__":
    for _module in sys.argv[1:]:  # Isolated.preload
        importlib.import_module(_module)
    _serve()
