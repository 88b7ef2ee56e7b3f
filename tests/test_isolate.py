"""Isolated child-process calls with a timeout."""

from __future__ import annotations

import os
import time

import pytest

from pipeline.isolate import CallTimeout, ChildDied, Isolated, shared


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
    with Isolated(1.0) as iso:
        first = iso.call(_pid)
        t0 = time.perf_counter()
        with pytest.raises(CallTimeout, match=r"no result after 1 s"):
            iso.call(time.sleep, 30)
        assert time.perf_counter() - t0 < 5
        assert iso.call(_pid) not in (first, os.getpid())


def test_a_crashing_child_is_reported_and_replaced() -> None:
    with Isolated(10) as iso:
        first = iso.call(_pid)
        with pytest.raises(ChildDied, match="exited with code 3"):
            iso.call(_die)
        assert iso.call(_pid) != first


def test_shared_child_is_reused_and_timeout_must_be_positive() -> None:
    assert shared(7.0) is shared(7.0)
    with pytest.raises(ValueError, match="positive"):
        Isolated(0)


def _sleep_or_echo(x: float) -> float:
    if x < 0:
        time.sleep(30)
    if x == 99:
        os._exit(1)
    return x


def test_map_keeps_order_and_survives_a_hang_and_a_crash() -> None:
    with Isolated(1.0) as iso:
        out = list(iso.map(_sleep_or_echo, [(1.0,), (-1.0,), (2.0,), (99,), (3.0,)]))
    assert out[0] == 1.0 and out[2] == 2.0 and out[4] == 3.0
    assert isinstance(out[1], CallTimeout) and isinstance(out[3], ChildDied)
