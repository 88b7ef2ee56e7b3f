"""``pipeline.dvc_run``: DVC's lock-file updates, spared a re-parse, are the bytes DVC writes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dvc.utils.serialize import _yaml, modify_yaml, parse_yaml

from pipeline import dvc_run
from tests.conftest import REPO


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The texts DVC's own round-trip parse is called on (counted beneath the wrapper)."""
    seen: list[str] = []
    original = _yaml.parse_yaml_for_update

    def counted(text: str, path: Any) -> Any:
        seen.append(text)
        return original(text, path)

    monkeypatch.setattr(_yaml, "parse_yaml_for_update", counted)
    yield seen
    dvc_run.uninstall()


def small_lock(dest: Path, stages: int = 6) -> Path:
    """The repository's ``dvc.lock`` cut to its first ``stages`` stages (a lock file of the same
    form; parsing the whole one takes DVC 1.5 CPU-s a time), written at ``dest``."""
    lines = (REPO / "dvc.lock").read_text().splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("  ") and line[2] != " "]
    assert len(starts) > stages, "dvc.lock has fewer stages than the test needs"
    dest.write_text("".join(lines[: starts[stages]]))
    return dest


def _updates(path: Path) -> list[bytes]:
    """Four lock updates as ``Lockfile.dump_stages`` makes them (a stage's entry replaced by a
    fresh plain dict, a new stage added, an entry replaced again); the file's bytes after each."""
    stages = parse_yaml(path.read_text(), str(path))["stages"]
    names = list(stages)
    first, last = names[0], names[-1]
    moved = {**stages[first], "cmd": stages[first]["cmd"] + " --again"}
    out = []
    for name, entry in (
        (first, moved),
        (last, {**stages[last], "params": {"params.yaml": {"base.seed": 7, "x": 0.1}}}),
        ("added@1", {"cmd": "python -m stages.added", "outs": [{"path": "a", "md5": "0" * 32}]}),
        (first, stages[first]),
    ):
        with modify_yaml(str(path)) as data:
            data["stages"].update({name: entry})
        out.append(path.read_bytes())
    return out


def test_successive_lock_updates_are_the_bytes_plain_dvc_writes(
    tmp_path: Path, parses: list[str]
) -> None:
    plain = small_lock(tmp_path / "plain.lock")
    cached = Path(shutil.copy(plain, tmp_path / "cached.lock"))
    expected = _updates(plain)
    assert len(parses) == 4  # DVC alone parses before every update
    assert expected[-1] != expected[0] and len(set(expected)) == 4
    with dvc_run.installed() as on:
        assert on
        got = _updates(cached)
    assert got == expected
    assert len(parses) == 4 + 1  # through the cache: only the first read parses


def test_a_file_changed_in_between_is_parsed_again(tmp_path: Path, parses: list[str]) -> None:
    lock = small_lock(tmp_path / "dvc.lock")
    assert dvc_run.install()
    with modify_yaml(str(lock)) as data:
        data["schema"] = "2.0"
    lock.write_text(lock.read_text().replace("schema: '2.0'", "schema: '2.0'\n# edited"))
    with modify_yaml(str(lock)) as data:
        data["stages"].update({"added": {"cmd": "true"}})
    assert len(parses) == 2 and "# edited" in lock.read_text()  # the edit was read and kept
    # A read whose update failed leaves nothing kept: the next read parses.
    with pytest.raises(RuntimeError), modify_yaml(str(lock)) as data:
        data["stages"].clear()
        raise RuntimeError
    with modify_yaml(str(lock)) as data:
        assert "added" in data["stages"] and len(data["stages"]) > 1
    assert len(parses) == 3


def test_switched_off_it_is_plain_dvc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXFACE_DVC_LOCK_CACHE", "0")
    assert not dvc_run.install()
    assert not hasattr(_yaml.parse_yaml_for_update, "_voxface_lock_cache")


def test_it_runs_dvc_commands() -> None:
    res = subprocess.run(
        dvc_run.command(["version"]), cwd=REPO, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    assert "DVC version" in res.stdout
    assert dvc_run.command(["repro"])[:3] == [sys.executable, "-m", "pipeline.dvc_run"]
