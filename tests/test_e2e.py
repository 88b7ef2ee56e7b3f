"""End to end: `dvc repro` on the tiny preset in a fresh repository, then what a second run and
edits to params would do (the forced reruns and the ablation: tests/test_e2e_reruns.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.schema import MANIFEST, read_table
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("prefect_server")  # see tests/conftest.py

COPY = [
    "pipeline",
    "stages",
    "reports/ablation",  # the report stage reads the ablations found there
    "dvc.yaml",
    "params.yaml",
    "pyproject.toml",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvc/plots",
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


def repo_env() -> dict[str, str]:
    """The environment to run a test repository's commands in (this interpreter's tools first)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def commit_all(repo: Path, env: dict[str, str], message: str) -> None:
    """``git add -A`` and commit in ``repo`` (an empty commit when nothing changed)."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _run([*git, "add", "-A"], repo, env)
    _run([*git, "commit", "-q", "--allow-empty", "-m", message], repo, env)


def copy_repo(
    repo: Path, edit_params: Callable[[str], str] | None = None
) -> tuple[Path, dict[str, str]]:
    """The pipeline's files copied to ``repo`` (params edited by ``edit_params``), committed to a
    fresh git repository; returns it with the environment to run it in."""
    for item in COPY:
        src, dst = REPO / item, repo / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    if edit_params is not None:
        params = repo / "params.yaml"
        params.write_text(edit_params(params.read_text()))
    env = repo_env()
    _run(["git", "init", "-q"], repo, env)
    commit_all(repo, env, "init")
    return repo, env


def build_tiny(dest: Path) -> float:
    """The tiny preset's whole ``python -m stages.run dvc repro`` in a fresh repository at
    ``dest``, its results committed (so later tests can compare metrics with that commit);
    returns its wall seconds. Built once per test session: the ``tiny_build`` fixture
    (tests/conftest.py)."""
    repo, env = copy_repo(dest, tiny_params)
    t0 = time.perf_counter()
    out = _run([sys.executable, "-m", "stages.run", "dvc", "repro"], repo, env)
    wall = time.perf_counter() - t0
    assert_stages(out, ran=ALL_STAGES)
    commit_all(repo, env, "run")
    return wall


def tiny_copy(build: tuple[Path, float], dest: Path) -> tuple[Path, dict[str, str], float]:
    """A copy of the session's tiny build at ``dest`` (git history and DVC cache included), to
    rerun and edit without touching what other tests see; with its environment and the build's
    wall seconds."""
    shutil.copytree(build[0], dest, symlinks=True)
    return dest, repo_env(), build[1]


@pytest.fixture(scope="module")
def tiny_repo(
    tiny_build: tuple[Path, float], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str], float]:
    return tiny_copy(tiny_build, tmp_path_factory.mktemp("e2e") / "repo")


def tiny_params(text: str) -> str:
    """The repository's params on the tiny preset, with a schedule scaled to its size."""
    for old, new in (
        ("preset: default", "preset: tiny"),
        ("  epochs: 10\n", "  epochs: 3\n"),  # low-shot fine-tuning (its section comes first)
        # ~24 training videos: the clustering methods' K scale down with them
        ("clusters: [40, 80, 120]", "clusters: [4, 8, 12]"),
        ("clusters: [40, 80, 120]", "clusters: [4, 8, 12]"),
        (f"seeds: {list(REPO_SEEDS)}".replace("'", ""), f"seeds: {list(SEEDS)}"),
        ("  epochs: 40\n", "  epochs: 8\n"),
        ("  start_epoch: 14\n", "  start_epoch: 3\n"),
        ("  start_epoch: 14\n", "  start_epoch: 3\n"),
        ("  reweight_epochs: 20 ", "  reweight_epochs: 6 "),
        # ~1 step per epoch: re-weight from step 2, every step (the preflight check refuses a
        # warm-up longer than the re-weighting run)
        ("  warmup_steps: 40 ", "  warmup_steps: 2 "),
        ("  every_steps: 6\n", "  every_steps: 1\n"),
        ("  bootstrap: 1000\n", "  bootstrap: 200\n"),
        # the media ceiling's: 2 cross-fitted networks of 3 epochs (the stage's code path is the
        # same; its figures on 24 identities mean nothing anyway)
        ("  epochs: 40\n", "  epochs: 3\n"),
        ("  folds: 5 ", "  folds: 2 "),
    ):
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


METHODS = ("cid", "wen2021", "cmpc", "bipseudo")
REPO_SEEDS = (1, 2, 3)
SEEDS = (1,)  # the tiny run's training seed (test_adding_a_seed_trains_only_that_seed adds one)


def seeded(seeds: tuple[int, ...] = SEEDS) -> tuple[str, ...]:
    """The per-(method, seed) stages."""
    return (
        *(f"train@{m}-{s}" for m in METHODS for s in seeds),
        *(f"evaluate@{m}-{s}" for m in METHODS for s in seeds),
        *(f"lowshot@{m}-{s}" for m in ("cid", "cmpc") for s in seeds),
    )


ALL_STAGES = (
    "synth", "manifest", "faces", "voice", "trials", "oracle", "ceiling", *seeded(), "aggregate",
    "report",
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
    shards = sorted((repo / "data/faces").glob("faces-*.parquet"))  # each with its result file
    assert shards and all(f.with_suffix(".json").is_file() for f in shards)
    assert (repo / "data/voice/failures.parquet").is_file()
    for seed in SEEDS:
        train = json.loads((repo / f"reports/train/cid/s{seed}.json").read_text())
        history = json.loads((repo / f"reports/train/cid/s{seed}_history.json").read_text())
        assert len(history) == train_epochs(repo) and train["final_loss"] < history[0]["loss"]
        assert train["seed"] == seed and (repo / f"models/cid/s{seed}/model.pt").is_file()


@pytest.mark.e2e
@pytest.mark.slow
def test_every_method_is_evaluated_and_reported(
    tiny_repo: tuple[Path, dict[str, str], float],
) -> None:
    repo, _, _ = tiny_repo
    files = [
        (n, repo / f"reports/metrics/{n}.json", repo / f"reports/eval/{n}")
        for n in ("oracle", "ceiling")
    ]
    for name in (*METHODS, "lowshot_cid", "lowshot_cmpc"):
        for seed in SEEDS:
            m_file = repo / f"reports/metrics/seeds/{name}-s{seed}.json"
            files.append((name, m_file, repo / f"reports/eval/{name}/s{seed}"))
    for name, m_file, eval_dir in files:
        m = json.loads(m_file.read_text())
        for split in ("test_unseen", "test_seen"):
            for direction in ("v2f", "f2v"):
                assert 0.0 <= m["match_1to2"][direction]["U"][split] <= 1.0, (name, split)
                assert 0.0 <= m["retrieve_map"][direction]["U"][split] <= 1.0
            assert 0.0 <= m["verify_auc"]["vf"]["G"][split] <= 1.0
            assert 0.0 <= m["verify_eer"]["vf"]["U"][split] <= 1.0
        assert ("oracle_fraction" in m) == (name != "oracle")
        assert (eval_dir / "roc.csv").is_file() and (eval_dir / "outcomes.parquet").is_file()
    # Aggregates over the seeds: the mean of the per-seed values, with a 95 % interval.
    for name in (*METHODS, "lowshot_cid", "lowshot_cmpc"):
        agg = json.loads((repo / f"reports/metrics/aggregate/{name}.json").read_text())
        leaf = agg["match_1to2"]["v2f"]["U"]["test_unseen"]
        per_seed = [
            json.loads((repo / f"reports/metrics/seeds/{name}-s{s}.json").read_text())[
                "match_1to2"
            ]["v2f"]["U"]["test_unseen"]
            for s in SEEDS
        ]
        assert agg["seeds"] == list(SEEDS) and leaf["n"] == len(SEEDS)
        assert abs(leaf["mean"] - sum(per_seed) / len(per_seed)) < 1e-4
        assert "half_width" not in leaf  # one seed: no interval over seeds ...
        assert leaf["boot95_low"] <= leaf["boot95_high"]  # ... but one over test identities
    verdicts = json.loads((repo / "reports/metrics/aggregate/verdicts.json").read_text())
    head = verdicts["metrics"]["match_1to2"]["v2f"]["U"]["test_unseen"]
    assert head["top"] in head["tied_for_first"] and set(head["vs_reference"]) == set(METHODS) - {
        "cid"
    }
    assert {v["verdict"] for v in head["vs_top"].values()} <= {
        "better", "worse", "not distinguishable"
    }  # fmt: skip
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


def stale(repo: Path, env: dict[str, str]) -> set[str]:
    """The stages ``dvc status`` finds changed (what ``dvc repro`` would start with; stages below
    them rerun only if their outputs change)."""
    return set(json.loads(_run(["dvc", "status", "--json"], repo, env) or "{}"))


def stale_after_edit(repo: Path, env: dict[str, str], old: str, new: str) -> set[str]:
    """:func:`stale` with ``old`` replaced by ``new`` in params.yaml (put back afterwards)."""
    params = repo / "params.yaml"
    text = params.read_text()
    assert old in text, old
    params.write_text(text.replace(old, new, 1))
    try:
        return stale(repo, env)
    finally:
        params.write_text(text)


def git_changes(repo: Path, env: dict[str, str]) -> str:
    return _run(["git", "status", "--porcelain"], repo, env).strip()


@pytest.mark.e2e
@pytest.mark.slow
def test_second_repro_does_nothing(tiny_repo: tuple[Path, dict[str, str], float]) -> None:
    repo, env, _ = tiny_repo
    out = _run([sys.executable, "-m", "stages.run", "dvc", "repro"], repo, env)
    assert "Running stage" not in out
    assert "Data and pipelines are up to date" in out
    assert git_changes(repo, env) == ""  # the first run's results were committed: nothing moved


@pytest.mark.e2e
@pytest.mark.slow
def test_metrics_and_oracle_commands(tiny_repo: tuple[Path, dict[str, str], float]) -> None:
    repo, env, _ = tiny_repo
    shown = _run(["dvc", "metrics", "show", "--json"], repo, env)
    assert "speech_fraction_truth_mean" in shown and "test_unseen" in shown
    assert "reports/metrics/aggregate/bipseudo.json" in shown
    assert "reports/metrics/oracle.json" in shown and "reports/metrics/seeds/cid-s1.json" in shown
    plots = _run(["dvc", "plots", "show", "--json"], repo, env)
    assert "reports/eval/cmpc/s1/roc.csv" in plots
    assert "reports/train/wen2021/s1_history.json" in plots
    oracle = json.loads(_run([sys.executable, "-m", "pipeline.evaluate.oracle"], repo, env))
    assert oracle["test_identities"] >= 4 and 0.5 < oracle["oracle_1to2_v2f_U"] <= 1.0


@pytest.mark.e2e
@pytest.mark.slow
def test_changing_a_voice_param_reruns_only_the_voice_branch(
    tiny_repo: tuple[Path, dict[str, str], float],
) -> None:
    repo, env, _ = tiny_repo
    # Checked without running: DVC reruns what is stale, then what a changed output feeds.
    assert stale_after_edit(repo, env, "vad_padding_ms: 300", "vad_padding_ms: 240") == {"voice"}
    assert stale(repo, env) == set()


@pytest.mark.e2e
@pytest.mark.slow
def test_changing_a_method_param_reruns_only_that_method(
    tiny_repo: tuple[Path, dict[str, str], float],
) -> None:
    """After an edit of ``cid.tau`` DVC finds only cid's training stages changed (below them run
    cid's scoring, ``aggregate`` and ``report``, as the ablation test shows with a real run of a
    changed method, and its ``dvc metrics diff``)."""
    repo, env, _ = tiny_repo
    assert stale(repo, env) == set()
    params = repo / "params.yaml"
    text = params.read_text()
    cid = text.index("\ncid:\n")
    params.write_text(text[:cid] + text[cid:].replace("  tau: 0.1", "  tau: 0.2", 1))
    try:
        assert stale(repo, env) == {f"train@cid-{s}" for s in SEEDS}
    finally:
        params.write_text(text)
    assert stale(repo, env) == set()


@pytest.mark.e2e
@pytest.mark.slow
def test_adding_a_seed_trains_only_that_seed(
    tiny_repo: tuple[Path, dict[str, str], float],
) -> None:
    """What ``dvc repro`` would run after a seed is added, asked of DVC itself (``dvc status``:
    the decision a real run starts from, without training; aggregating over seeds is tested in
    tests/test_aggregate.py, different seeds giving different weights in
    tests/test_registry.py)."""
    repo, env, _ = tiny_repo
    assert stale(repo, env) == set()
    params = repo / "params.yaml"
    old = f"seeds: {list(SEEDS)}"
    text = params.read_text()
    assert old in text
    params.write_text(text.replace(old, f"seeds: {[*SEEDS, 7]}", 1))
    try:
        # every stage of seed 7, and aggregate and report (the seeds list is their param);
        # nothing of seed 1, nothing upstream
        assert stale(repo, env) == {*seeded((7,)), "aggregate", "report"}
    finally:
        params.write_text(text)  # back to the committed seeds: nothing to do
    assert stale(repo, env) == set()


@pytest.mark.e2e
@pytest.mark.slow
def test_changing_split_params_reruns_only_the_manifest(
    tiny_repo: tuple[Path, dict[str, str], float],
) -> None:
    repo, env, _ = tiny_repo
    # Only the manifest is stale; the new splits then reach every stage below it.
    edit = ("val_fraction: 0.10", "val_fraction: 0.15")
    assert stale_after_edit(repo, env, *edit) == {"manifest"}
