"""``python -m stages.run``: the command's output passed through, the stages' wall times."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stages import run


def test_stage_times_run_from_each_stage_line_to_the_next() -> None:
    lines = [
        (0.0, "Stage 'synth' didn't change, skipping\n"),
        (1.0, "Running stage 'faces':\n"),
        (2.5, "> python -m stages.faces\n"),
        (4.0, "Running stage 'train@cid-1':\n"),
        (9.0, "Updating lock file 'dvc.lock'\n"),
    ]
    assert run.stage_times(lines, end=10.0) == [("faces", 3.0), ("train@cid-1", 6.0)]
    assert run.stage_times(lines[:1], end=10.0) == []
    table = run.timing_table([("faces", 3.0), ("train@cid-1", 6.0)], total=10.0)
    assert table.splitlines()[1].startswith("train@cid-1") and "60.0%" in table


def test_main_passes_output_through_and_logs_the_stage_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """With ``PREFECT_API_URL`` set no server starts; the command's exit code is returned."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    script = (
        "import time, sys\n"
        "print(\"Running stage 'a':\")\n"
        "time.sleep(0.3)\n"
        "print(\"Running stage 'b':\")\n"
        "print('the stage says hello', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    assert run.main([sys.executable, "-c", script]) == 3
    out, err = capfd.readouterr()
    assert "the stage says hello" in out and "Running stage 'b'" in out
    assert "total (command)" in err
    logged = dict(
        line.split("\t") for line in (tmp_path / "logs/timings/repro.tsv").read_text().splitlines()
    )
    assert set(logged) == {"a", "b"} and float(logged["a"]) >= 0.3
