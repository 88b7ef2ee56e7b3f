"""End to end: `dvc repro` on the tiny preset in a fresh repository, twice."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.schema import MANIFEST, read_table
from tests.conftest import REPO

COPY = [
    "pipeline",
    "stages",
    "dvc.yaml",
    "params.yaml",
    "pyproject.toml",
    ".dvcignore",
    ".dvc/config",
    ".gitignore",
]


def assert_stages(out: str, ran: tuple[str, ...] = (), skipped: tuple[str, ...] = ()) -> None:
    """``dvc repro`` output ``out`` ran every stage of ``ran`` and none of ``skipped``."""
    for stage in ran:
        assert f"Running stage '{stage}'" in out, stage
    for stage in skipped:
        assert f"Running stage '{stage}'" not in out, stage


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], float]:
    repo = tmp_path_factory.mktemp("e2e") / "repo"
    for item in COPY:
        src, dst = REPO / item, repo / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    params = repo / "params.yaml"
    # The tiny corpus has ~24 training videos: the clustering methods' K scale down with it.
    text = params.read_text().replace("preset: default", "preset: tiny", 1)
    params.write_text(text.replace("clusters: [40, 80, 120]", "clusters: [4, 8, 12]"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PREFECT_API_URL", None)
    _run(["git", "init", "-q"], repo, env)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], repo, env)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], repo, env)
    t0 = time.perf_counter()
    out = _run([sys.executable, "-m", "stages.run", "dvc", "repro"], repo, env)
    wall = time.perf_counter() - t0
    print(f"tiny dvc repro: {wall:.1f} s")
    assert_stages(out, ran=ALL_STAGES)
    # Commit the results, so later tests can compare metrics with this commit.
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], repo, env)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run"], repo, env)
    return repo, env, wall


METHODS = ("cid", "wen2021", "cmpc", "bipseudo")
ALL_STAGES = (
    "synth", "manifest", "faces", "voice", "trials", "oracle", "ceiling",
    *(f"train@{m}" for m in METHODS), *(f"evaluate@{m}" for m in METHODS),
    "lowshot@cid", "lowshot@cmpc", "report",
)  # fmt: skip


@pytest.mark.e2e
@pytest.mark.slow
def test_outputs_exist_and_are_consistent(tiny_repo: tuple[Path, dict[str, str], float]) -> None:
    repo, _, _ = tiny_repo
    synth = json.loads((repo / "reports/synth.json").read_text())
    report = json.loads((repo / "reports/manifest.json").read_text())
    assert synth["clips"] == 24 * 2 * 2 == report["clips"]
    clips = read_table(repo / "data/manifest/clips.parquet", MANIFEST)
    assert set(clips.split) == {"train", "val", "test_unseen", "test_seen"}
    assert all((repo / "data/synth" / p).is_file() for p in clips.media_path)
    assert (repo / "data/synth/ground_truth/identities.parquet").is_file()
    faces = json.loads((repo / "reports/faces.json").read_text())
    voice = json.loads((repo / "reports/voice.json").read_text())
    assert faces["clips_in"] == voice["clips_in"] == 96
    assert faces["face_rate"] >= 0.95 and voice["clips_out"] == 96
    assert (repo / "data/faces/faces-00000.parquet").is_file()
    assert (repo / "data/voice/failures.parquet").is_file()
    train = json.loads((repo / "reports/train/cid.json").read_text())
    history = json.loads((repo / "reports/train/cid_history.json").read_text())
    assert len(history) == train_epochs(repo) and train["final_loss"] < history[0]["loss"]
    assert (repo / "models/cid/model.pt").is_file()


@pytest.mark.e2e
@pytest.mark.slow
def test_every_method_is_evaluated_and_reported(
    tiny_repo: tuple[Path, dict[str, str], float],
) -> None:
    repo, _, _ = tiny_repo
    for name in (*METHODS, "oracle", "ceiling", "lowshot_cid", "lowshot_cmpc"):
        m = json.loads((repo / f"reports/metrics/{name}.json").read_text())
        for split in ("test_unseen", "test_seen"):
            for direction in ("v2f", "f2v"):
                assert 0.0 <= m["match_1to2"][direction]["U"][split] <= 1.0, (name, split)
                assert 0.0 <= m["retrieve_map"][direction]["U"][split] <= 1.0
            assert 0.0 <= m["verify_auc"]["vf"]["G"][split] <= 1.0
            assert 0.0 <= m["verify_eer"]["vf"]["U"][split] <= 1.0
        assert ("oracle_fraction" in m) == (name != "oracle")
        assert (repo / f"reports/eval/{name}/roc.csv").is_file()
    oracle = json.loads((repo / "reports/metrics/oracle.json").read_text())
    assert oracle["match_1to2"]["v2f"]["U"]["test_unseen"] > 0.6  # the ground truth ceiling
    summary = (repo / "reports/summary.md").read_text()
    for name in (*METHODS, "oracle", "chance", "lowshot_cmpc"):
        assert name in summary, name
    html = (repo / "reports/summary.html").read_text()
    assert "data:image/png;base64," in html
    assert (repo / "reports/figures/match_curve.png").is_file()


def train_epochs(repo: Path) -> int:
    from pipeline.params import load_params

    return load_params(repo / "params.yaml").train.epochs


@pytest.mark.e2e
@pytest.mark.slow
def test_second_repro_does_nothing(tiny_repo: tuple[Path, dict[str, str], float]) -> None:
    repo, env, _ = tiny_repo
    out = _run(["dvc", "repro"], repo, env)
    assert "Running stage" not in out
    assert "Data and pipelines are up to date" in out


@pytest.mark.e2e
@pytest.mark.slow
def test_metrics_and_oracle_commands(tiny_repo: tuple[Path, dict[str, str], float]) -> None:
    repo, env, _ = tiny_repo
    shown = _run(["dvc", "metrics", "show", "--json"], repo, env)
    assert "speech_fraction_truth_mean" in shown and "test_unseen" in shown
    assert "reports/metrics/bipseudo.json" in shown and "reports/metrics/oracle.json" in shown
    plots = _run(["dvc", "plots", "show", "--json"], repo, env)
    assert "reports/eval/cmpc/roc.csv" in plots and "reports/train/wen2021_history.json" in plots
    oracle = json.loads(_run([sys.executable, "-m", "pipeline.oracle"], repo, env))
    assert oracle["test_identities"] >= 4 and 0.5 < oracle["oracle_1to2_v2f_U"] <= 1.0


@pytest.mark.e2e
@pytest.mark.slow
def test_changing_a_voice_param_reruns_only_the_voice_branch(
    tiny_repo: tuple[Path, dict[str, str], float],
) -> None:
    repo, env, _ = tiny_repo
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("vad_padding_ms: 300", "vad_padding_ms: 240", 1))
    out = _run([sys.executable, "-m", "stages.run", "dvc", "repro"], repo, env)
    assert_stages(out, ran=("voice",), skipped=("synth", "manifest", "faces"))


@pytest.mark.e2e
@pytest.mark.slow
def test_changing_a_method_param_reruns_only_that_method(
    tiny_repo: tuple[Path, dict[str, str], float],
) -> None:
    repo, env, _ = tiny_repo
    _run(["dvc", "repro"], repo, env)  # settle anything an earlier test changed, and commit it
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], repo, env)
    _run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "pre",
        ],
        repo,
        env,
    )
    params = repo / "params.yaml"
    text = params.read_text()
    cid = text.index("\ncid:\n")
    params.write_text(text[:cid] + text[cid:].replace("  tau: 0.1", "  tau: 0.2", 1))
    out = _run([sys.executable, "-m", "stages.run", "dvc", "repro"], repo, env)
    others = [s for s in ALL_STAGES if "cid" not in s and s != "report"]
    assert_stages(out, ran=("train@cid", "evaluate@cid", "lowshot@cid", "report"), skipped=others)
    # The committed figures against the new ones, side by side.
    diff = json.loads(_run(["dvc", "metrics", "diff", "--json"], repo, env))
    assert "reports/metrics/cid.json" in diff and "reports/metrics/wen2021.json" not in diff
    assert "match_1to2.v2f.U.test_unseen" in diff["reports/metrics/cid.json"]


@pytest.mark.e2e
@pytest.mark.slow
def test_changing_split_params_reruns_only_the_manifest(
    tiny_repo: tuple[Path, dict[str, str], float],
) -> None:
    repo, env, _ = tiny_repo
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("val_fraction: 0.10", "val_fraction: 0.15", 1))
    out = _run([sys.executable, "-m", "stages.run", "dvc", "repro"], repo, env)
    # faces and voice depend on the manifest's content: it changed, so they rerun.
    assert_stages(out, ran=("manifest", "faces"), skipped=("synth",))
