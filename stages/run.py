"""Run a command (default: ``dvc repro``) with one Prefect server shared by all its stages.

Without a server, every stage process pays Prefect's start-up (a temporary server: 3.5-5 s on 2
cores, overlapping the stage's own imports, :mod:`stages._server`).
``python -m stages.run dvc repro`` starts one server, exports ``PREFECT_API_URL`` to the command
and stops the server afterwards. With ``PREFECT_API_URL`` already set (your own ``prefect server
start``, e.g. to watch the runs in its UI), that server is used and nothing is started. Its first
stage command starts a warm-start zygote, which spares the later ones the import of torch and
Prefect (:mod:`stages._zygote`; ``VOXFACE_WARM_START=0`` switches it off). A ``dvc`` command
runs as ``python -m pipeline.dvc_run``: ``dvc`` itself, with its rewrite of ``dvc.lock`` after
each stage spared a re-parse of the text it has just written (the same bytes;
``VOXFACE_DVC_LOCK_CACHE=0`` switches it off).

The command's output is passed through line by line; each ``Running stage '<name>'`` line that
DVC prints starts that stage's clock, and at the end a table of the stages' wall times (from that
line to the next stage's, or to the command's end) goes to stderr and to
``logs/timings/repro.tsv`` (not tracked: speeds are not results).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable

from pipeline.dvc_run import command as dvc_command
from stages import TIMINGS
from stages._zygote import zygote

_STAGE = re.compile(r"^Running stage '([^']+)'")


def stage_times(lines: Iterable[tuple[float, str]], end: float) -> list[tuple[str, float]]:
    """(stage, seconds) for each ``Running stage`` line among the timestamped ``lines``: the time
    until the next such line, the last one's until ``end``."""
    starts = [(t, m.group(1)) for t, line in lines if (m := _STAGE.match(line))]
    return [
        (name, (starts[i + 1][0] if i + 1 < len(starts) else end) - t)
        for i, (t, name) in enumerate(starts)
    ]


def timing_table(times: list[tuple[str, float]], total: float) -> str:
    """The stages' wall times, longest first, with their share of ``total``."""
    rows = [f"{'stage':<28} {'wall s':>8} {'share':>6}"]
    for name, s in sorted(times, key=lambda x: -x[1]):
        rows.append(f"{name:<28} {s:8.1f} {100 * s / max(total, 1e-9):5.1f}%")
    rows.append(f"{'total (command)':<28} {total:8.1f}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    cmd = list(sys.argv[1:] if argv is None else argv) or ["dvc", "repro"]
    if cmd[0] == "dvc":  # the same command, its lock-file updates spared a re-parse
        cmd = dvc_command(cmd[1:])
    t0 = time.monotonic()
    seen: list[tuple[float, str]] = []
    # Prefect (and the pipeline's settings) only when a server is to be started here: with
    # PREFECT_API_URL set, this wrapper costs 0.1 s of CPU instead of 1 s.
    serving: contextlib.AbstractContextManager[str]
    if os.environ.get("PREFECT_API_URL"):
        serving = contextlib.nullcontext(os.environ["PREFECT_API_URL"])
    else:
        from stages._runtime import prefect_api

        serving = prefect_api()
    with serving as url:
        # Unbuffered, so that each line arrives (and is timed) when it is printed.
        env = {**os.environ, "PREFECT_API_URL": url, "PYTHONUNBUFFERED": "1"}
        with (
            zygote(env) as env,
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
            ) as proc,
        ):
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                if _STAGE.match(line):
                    seen.append((time.monotonic(), line))
        code = proc.returncode
    end = time.monotonic()
    times = stage_times(seen, end)
    if times:
        table = timing_table(times, end - t0)
        print(table, file=sys.stderr)
        TIMINGS.mkdir(parents=True, exist_ok=True)
        (TIMINGS / "repro.tsv").write_text("".join(f"{n}\t{s:.1f}\n" for n, s in times))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
