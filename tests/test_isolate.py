"""Isolated child-process calls with a timeout."""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

import pytest

from pipeline.preprocess import isolate
from pipeline.preprocess.isolate import (
    DECODER_MESSAGES_KEPT,
    CallTimeout,
    ChildDied,
    Isolated,
    _with_messages,
    lease,
    prestart,
)


def _pid() -> int:
    return os.getpid()


def _boom() -> None:
    raise ValueError("bad input in child")


def _die() -> None:
    os._exit(3)


def test_calls_run_in_one_child_and_errors_propagate() -> None:
    with Isolated(10) as iso:
        a, b = iso.call(_pid), iso.call(_pid)
        assert a == b != os.getpid()
        with pytest.raises(ValueError, match="bad input in child"):
            iso.call(_boom)
        assert iso.call(_pid) == a  # an exception does not cost the child
        big = iso.call(bytes, 5_000_000)
        assert len(big) == 5_000_000


def test_a_hang_times_out_and_the_next_call_gets_a_fresh_child() -> None:
    with Isolated(5.0) as iso:
        first = iso.call(_pid)
        t0 = time.perf_counter()
        with pytest.raises(CallTimeout, match=r"no result after 5 s"):
            iso.call(time.sleep, 30)
        assert time.perf_counter() - t0 < 15
        assert iso.call(_pid) not in (first, os.getpid())


def test_a_crashing_child_is_reported_and_replaced() -> None:
    with Isolated(10) as iso:
        first = iso.call(_pid)
        with pytest.raises(ChildDied, match="exited with code 3"):
            iso.call(_die)
        assert iso.call(_pid) != first


SLOW_MODULE = """
import time
time.sleep(2.5)  # a slow start-up: a loaded machine, a heavy decoder library


def value():
    return 42
"""


def test_the_timeout_counts_the_call_not_the_childs_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1 s timeout holds for a call whose module takes 2.5 s to import in the fresh child (the
    clock starts when the child has read the request); a child that cannot get that far within
    ``START_TIMEOUT_S`` is a timeout of its own."""
    (tmp_path / "slow_start_mod.py").write_text(SLOW_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    slow = importlib.import_module("slow_start_mod")
    with Isolated(1.0) as iso:
        assert iso.call(slow.value) == 42
    monkeypatch.setattr(isolate, "START_TIMEOUT_S", 1.0)
    with Isolated(1.0) as iso, pytest.raises(CallTimeout, match="did not start within 1 s"):
        iso.call(slow.value)


def test_leased_children_are_reused_prestarted_and_closed_when_left_part_way() -> None:
    with lease(7.0) as a:
        first = a.call(_pid)
        with lease(7.0) as b:  # a is busy: another child
            assert b is not a and b.call(_pid) != first
    with lease(7.0) as again:  # given back, reused, same process
        assert again.call(_pid) == first
    prestart(1, 8.0, ("colorsys",))  # imported by nothing else there
    with lease(8.0) as warm:
        assert warm.preload == ("colorsys",) and "colorsys" in warm.call(_loaded)
    with lease(9.0, ("colorsys",)) as lazy:  # none idle: a new one, with what it was asked for
        assert lazy.preload == ("colorsys",) and "colorsys" in lazy.call(_loaded)
    with pytest.raises(RuntimeError, match="stopped part-way"), lease(8.0) as left:
        proc = left._ensure()
        raise RuntimeError("stopped part-way")
    assert proc.wait(timeout=10) is not None  # closed, not given back with requests in flight
    with lease(8.0) as fresh:
        assert fresh is not left
    with pytest.raises(ValueError, match="positive"):
        Isolated(0)


def _loaded() -> list[str]:
    return sorted(sys.modules)


def _sleep_or_echo(x: float) -> float:
    if x < 0:
        time.sleep(30)
    if x == 99:
        os._exit(1)
    return x


def test_map_keeps_order_and_survives_a_hang_and_a_crash() -> None:
    with Isolated(5.0) as iso:
        out = list(iso.map(_sleep_or_echo, [(1.0,), (-1.0,), (2.0,), (99,), (3.0,)]))
    assert out[0] == 1.0 and out[2] == 2.0 and out[4] == 3.0
    assert isinstance(out[1], CallTimeout) and isinstance(out[3], ChildDied)


def _chatty(fail: bool, said: bytes) -> int:
    """Native-style output on fd 2 (and fd 1, and Python's stderr), then fail or succeed."""
    os.write(2, said)
    os.write(1, b"[12:34:56] frame 3 skipped\n")
    print("python says hi", file=sys.stderr)
    if fail:
        raise ValueError("cannot decode video")
    return 7


def test_a_failed_call_carries_the_decoders_messages_off_the_console(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with Isolated(10) as iso:
        assert iso.call(_chatty, False, b"stale message of a good call\n") == 7
        with pytest.raises(ValueError) as err:
            iso.call(_chatty, True, b"[h264 @ 0x55d0c0ffee00] boom\n")
        assert str(err.value) == (
            "cannot decode video [decoder: [h264 @ 0x\u2026] boom | frame 3 skipped | "
            "python says hi]"
        )
        with pytest.raises(ValueError) as err:
            iso.call(_chatty, True, b"x" * 1000 + b" the end\n")
        said = str(err.value).removeprefix("cannot decode video [decoder: ").removesuffix("]")
        assert len(said) == DECODER_MESSAGES_KEPT and said.endswith("python says hi")
    out, errs = capfd.readouterr()
    for text in ("boom", "stale", "frame 3", "python says"):
        assert text not in out and text not in errs


def test_messages_of_an_error_without_a_text_are_not_attached() -> None:
    assert str(_with_messages(KeyError(3), "[aac @ 0x1] noise")) == "3"
    assert str(_with_messages(ValueError("bad"), "  \n \n")) == "bad"
    assert str(_with_messages(ValueError("bad"), "[00:00:01] a\n b ")) == "bad [decoder: a | b]"
