"""Smoke tests of the benchmarks' command lines and the field-style set building (no MTCNN)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import field_faces, stage_startup


def test_help_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        field_faces.main(["--help"])
    assert e.value.code == 0
    assert "field-style" in capsys.readouterr().out


def test_stage_startup_help_names_its_phases(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        stage_startup.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(phase in out for phase in ("imports", "warm", "server up", "flow body"))


def test_field_faces_reports_the_frames_each_side_sampled() -> None:
    """The clip-s/s ratio and, beside it, the sampled-frames-per-second ratio (the sides sample
    different frame counts at the same rate)."""
    base = field_faces.summarise(
        {"wall_s": 20.0, "frames_sampled": 600, "frames_with_face": 590, "extractor": "x"}, 600.0
    )
    stage = field_faces.summarise(
        {
            "wall_s": 10.0,
            "frames_sampled": 500,
            "frames_with_face": 490,
            "flow_wall_s": 5.0,
            "prefect": "p",
        },
        600.0,
    )
    assert (base["frames_per_s"], stage["frames_per_s"]) == (30.0, 50.0)
    r = {"clips": 2, "distinct_files": 1, "media_s": 600.0, "workers": 2}
    r |= {"baseline": base, "stage": stage, "stage_vs_baseline_clip_s_per_s": 2.0}
    r["stage_vs_baseline_frames_per_s"] = 1.67
    lines = field_faces.report_lines("synth", r)
    assert lines[-2] == "  stage / field-style clip-s/s: 2.00x"
    assert lines[-1] == "  stage / field-style sampled frames/s: 1.67x (500 against 600 frames)"


def test_field_faces_reports_fixed_cost_and_cost_per_added_clip() -> None:
    """Per added clip: (wall on all clips - wall on the few) / the clips added, each side; the
    speed-up line sets the stage's fixed cost beside the wall the target needs."""
    r: dict = {"clips": 204, "distinct_files": 1, "media_s": 600.0, "workers": 2}
    r["baseline"] = field_faces.summarise(
        {"wall_s": 24.0, "frames_sampled": 6, "frames_with_face": 6, "extractor": "x"}, 600.0
    )
    r["stage"] = field_faces.summarise(
        {"wall_s": 10.0, "frames_sampled": 6, "frames_with_face": 6, "flow_wall_s": 5.0,
         "prefect": "p"}, 600.0,
    )  # fmt: skip
    r["fixed"] = {"clips": 4, "baseline_wall_s": 4.0, "stage_wall_s": 6.0}
    r |= field_faces.fixed_and_marginal(r)
    assert r["per_added_clip_s"] == {"baseline": 0.1, "stage": 0.02}
    assert r["stage_vs_baseline_per_added_clip"] == 5.0
    lines = field_faces.report_lines("real", r, target=3.0)
    assert lines[-3] == (
        "  fixed cost (the whole command on 4 clips): field-style 4.00 s, faces stage 6.00 s"
    )
    assert lines[-2] == (
        "  per added clip: field-style 100.0 ms, faces stage 20.0 ms -> 5.00x "
        "(the ratio on many more clips)"
    )
    assert (
        lines[-1]
        == "  3x on this set needs the stage within 8.00 s; its fixed cost alone is 6.00 s"
    )


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


def test_scale_benchmark_keys_and_memory_projection(tmp_path: Path) -> None:
    """The scale benchmark's copied manifest (new keys, 6 clips per identity, every row of the
    source reused in turn) and its linear projection of peak memory."""
    import pandas as pd

    from benchmarks import scale
    from pipeline.schema import MANIFEST, read_table

    source = pd.DataFrame(
        {
            "clip_key": ["a/v/1", "b/v/1"],
            "identity": ["a", "b"],
            "video_id": ["v", "v"],
            "utterance": ["1", "1"],
            "split": ["test_unseen", "train"],
            "gender": ["m", "f"],
            "nationality": [None, None],
            "media_path": ["a.mp4", "b.mp4"],
            "media_kind": ["video", "video"],
            "face_dir": [None, None],
            "n_face_crops": [0, 0],
            "size_bytes": [10, 20],
        }
    )
    m = read_table(scale.copy_manifest(source, 13, tmp_path / "m.parquet"), MANIFEST)
    assert len(m) == 13 and m.clip_key.is_unique and set(m.split) == {"train"}
    assert m.identity.value_counts().max() == 6 and m.identity.nunique() == 3
    assert list(m.media_path[:3]) == ["a.mp4", "b.mp4", "a.mp4"]
    rows = [{"clips": 100, "peak_rss_mb": 1000}, {"clips": 300, "peak_rss_mb": 2000}]
    assert scale._projected_mb(rows, 700) == 4000  # 1000 + 5 MB per clip x 600
    assert scale._projected_mb(rows[:1], 400) == 4000  # one point: proportional
    assert scale._projected_mb([], 10**9) == 0
