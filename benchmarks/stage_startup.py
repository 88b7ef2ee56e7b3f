"""Where a preprocessing stage command's fixed cost goes: a timeline of its start-up and end.

``python -m benchmarks.stage_startup --stage faces --clips 20`` runs the stage's ``main`` in this
process as ``python -m stages.faces`` would run it (its temporary Prefect server started first
thing, as ``stages/__init__.py`` does for the command, unless ``PREFECT_API_URL`` is set), on
the first ``--clips`` video clips of the manifest, and prints when each phase ended, in seconds
from the benchmark's start:

- ``imports``: the stage module and what it imports (Prefect, pandas, pyarrow, the library);
- ``warm``: what the stage does while its server starts: start its decoder processes (without
  waiting for their imports: torch and its Kaldi front end for ``voice``), load torch and MTCNN
  (``faces``), read its code's imports;
- ``server up``: the temporary server answers (it started at ~0 s);
- ``flow body``: from the flow's first line to its last (the shards' work);
- ``flow returned``, ``server stopped``, ``main returned``: Prefect's end of the flow run, the
  server's shutdown, the report written.

With few clips the flow body is short and what remains is the stage's fixed cost. Run after
``make demo`` (it reads ``data/manifest`` and the corpus); writes into a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

T0 = time.perf_counter()  # after the standard library's few milliseconds, before anything else

MARKS: list[tuple[str, float]] = []


def mark(what: str) -> None:
    MARKS.append((what, time.perf_counter() - T0))


def timeline(stage: str, clips: int, manifest: Path) -> list[tuple[str, float]]:
    """Run ``stages.<stage>``'s main on the first ``clips`` video clips of ``manifest``; return
    the marks (phase, seconds since this module started)."""
    from stages import _server

    _server.prestart()  # what stages/__init__.py does for `python -m stages.<stage>`
    mod = importlib.import_module(f"stages.{stage}")
    import stages._runtime as runtime
    import stages._shards as shards
    from pipeline.schema import MANIFEST, read_table, write_table

    mark("imports")
    fan_out = shards._fan_out

    def timed_fan_out(*args: Any, **kwargs: Any) -> Any:
        mark("flow body start")
        out = fan_out(*args, **kwargs)
        mark("flow body end")
        return out

    api = runtime.prefect_api

    @contextlib.contextmanager
    def timed_api(meanwhile: Callable[[], object] | None = None) -> Iterator[str]:
        def timed_meanwhile() -> None:
            if meanwhile is not None:
                meanwhile()
            mark("warm (and decoders started)")

        with api(timed_meanwhile) as url:
            mark("server up")
            yield url
            mark("flow returned")
        mark("server stopped")

    shards._fan_out, shards.prefect_api = timed_fan_out, timed_api
    with tempfile.TemporaryDirectory() as tmp:
        m = read_table(manifest, MANIFEST)
        video = m[m.media_kind == "video"].iloc[:clips]
        sub = write_table(video, Path(tmp) / "clips.parquet", MANIFEST)
        argv = ["--manifest", str(sub), "--out", f"{tmp}/{stage}", "--metrics", f"{tmp}/r.json"]
        mod.main(argv)
    mark("main returned")
    return MARKS


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--stage", choices=("faces", "voice"), default="faces")
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--manifest", type=Path, default=Path("data/manifest/clips.parquet"))
    args = ap.parse_args(argv)
    marks = timeline(args.stage, args.clips, args.manifest)
    print(f"stages.{args.stage} on {args.clips} clips, seconds since this benchmark started:")
    for what, t in sorted(marks, key=lambda m: m[1]):
        print(f"  {t:6.2f}  {what}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
