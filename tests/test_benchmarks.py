"""Smoke tests of the field-style faces benchmark's command line and set building (no MTCNN)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import field_faces


def test_help_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        field_faces.main(["--help"])
    assert e.value.code == 0
    assert "field-style" in capsys.readouterr().out


@pytest.mark.realdata
def test_real_set_repeats_files_under_distinct_names(realdata: Path, tmp_path: Path) -> None:
    sources = field_faces.real_sources(realdata)[:2]
    clips = field_faces.cycle_clips(sources, 3)
    assert len({c.name for c in clips}) == 3
    assert clips[0].source == clips[2].source  # cycled: the first file again, its own name
    listing = field_faces.materialise(clips, tmp_path / "clips")
    project = tmp_path / "project"
    project.mkdir()
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    manifest = field_faces.stage_project(params, tmp_path / "clips", listing, project)
    from pipeline.schema import MANIFEST, read_table

    m = read_table(manifest, MANIFEST)
    assert len(m) == 3 and set(m["media_kind"]) == {"video"}
    assert field_faces.media_seconds(tmp_path / "clips" / clips[0].name) > 0
