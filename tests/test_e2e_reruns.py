"""End to end, the reruns: forced reruns that must change no tracked file, and a paper's ablation
run as DVC experiments, on a copy of the session's tiny build (tests/test_e2e.py).

Apart from tests/test_e2e.py so that pytest-xdist can run them on another worker than that
file's tests while the build is shared (the ``tiny_build`` fixture, tests/conftest.py).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.test_e2e import (
    ALL_STAGES,
    METHODS,
    SEEDS,
    _run,
    assert_stages,
    commit_all,
    git_changes,
    stale,
    tiny_copy,
)

pytestmark = pytest.mark.usefixtures("prefect_server")  # see tests/conftest.py


@pytest.fixture(scope="module")
def tiny_repo(
    tiny_build: tuple[Path, float], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str], float]:
    return tiny_copy(tiny_build, tmp_path_factory.mktemp("e2e-reruns") / "repo")


@pytest.mark.e2e
@pytest.mark.slow
def test_a_rerun_that_changes_no_result_changes_no_tracked_file(
    tiny_repo: tuple[Path, dict[str, str], float],
) -> None:
    """Forced reruns of a preprocessing, a training (from scratch), a scoring and the reporting
    stages, as fresh processes where the first run's came from the warm-start zygote: the same
    results, so the same bytes in every tracked file (speed goes to untracked logs)."""
    repo, env, _ = tiny_repo
    shutil.rmtree(repo / "models/cid/s1/state")  # no checkpoint to resume: train again
    stages = ["voice", "train@cid-1", "evaluate@cid-1", "aggregate", "report"]
    cmd = [sys.executable, "-m", "stages.run", "dvc", "repro", "-f", "-s", *stages]
    out = _run(cmd, repo, env | {"VOXFACE_WARM_START": "0"})
    assert_stages(out, ran=tuple(stages))
    assert git_changes(repo, env) == ""
    timing = json.loads((repo / "logs/timings/train_cid-1.json").read_text())
    assert timing["stage"] == "train@cid-1" and timing["pairs_per_s"] > 0  # it trained


MINI_ABLATION = """\
mini:
  paper: a two-variant ablation of wen2021
  variants:
    full: {model: wen2021}
    local_only: {model: wen2021, set: {wen2021.global_alignment: false, wen2021.reweighting: false}}
  effects:
    - {component: global and re-weighting, claim: they add, with: full, without: local_only}
"""


@pytest.mark.e2e
@pytest.mark.slow
def test_an_ablation_trains_only_its_method_and_reports_its_effects(
    tiny_repo: tuple[Path, dict[str, str], float], tmp_path: Path
) -> None:
    repo, env, _ = tiny_repo

    assert stale(repo, env) == set()  # the forced reruns before changed nothing
    spec = tmp_path / "ablations.yaml"
    spec.write_text(MINI_ABLATION)
    ablate = [sys.executable, "-m", "stages.run", sys.executable, "-m", "pipeline.ablate"]
    out = _run([*ablate, "run", "mini", "--ablations", str(spec)], repo, env)
    # The experiment reruns the changed method's stages only, then the aggregates; preprocessing
    # and the other methods are restored as they are, and it renders no report of its own.
    wen = [s for s in ALL_STAGES if "@wen2021-" in s]
    others = [s for s in ALL_STAGES if s not in wen and s != "aggregate"]
    assert_stages(out, ran=(*wen, "aggregate"), skipped=others)
    result = json.loads((repo / "reports/ablation/mini.json").read_text())
    effect = result["effects"][0]["1:2 V->F"]
    assert effect["verdict"] in ("better", "worse", "not distinguishable")
    assert effect["ci95_low"] <= effect["difference"] <= effect["ci95_high"]
    assert set(result["variants"]) == {"full", "local_only"} and result["seeds"] == list(SEEDS)
    assert result["experiments"]["local_only"]  # the experiment's commit, for tracing
    # The figures of the committed run against the experiment's, side by side: wen2021's moved,
    # no other method's.
    rev = result["experiments"]["local_only"]
    diff = json.loads(_run(["dvc", "metrics", "diff", "HEAD", rev, "--json"], repo, env))
    assert "match_1to2.v2f.U.test_unseen.mean" in diff["reports/metrics/aggregate/wen2021.json"]
    assert not any(m in path for path in diff for m in METHODS if m != "wen2021"), list(diff)
    # An edit to another method's code, rerun and committed: the ablation trains nothing again
    # (the variant's stages come back from DVC's run cache).
    cmpc = repo / "pipeline/train/methods/cmpc.py"
    cmpc.write_text(cmpc.read_text() + "\n# an edit\n")
    out = _run([sys.executable, "-m", "stages.run", "dvc", "repro"], repo, env)
    # (cmpc retrains, to the same weights: a comment changes no float, so its scores are kept)
    assert_stages(out, ran=[f"train@cmpc-{s}" for s in SEEDS], skipped=wen)
    commit_all(repo, env, "cmpc edited")
    out = _run([*ablate, "run", "mini", "--ablations", str(spec)], repo, env)
    assert "Running stage 'train@" not in out and "Running stage 'evaluate@" not in out
    again = json.loads((repo / "reports/ablation/mini.json").read_text())
    assert again["variants"] == result["variants"]  # the same figures
    # The ablation's result is an input of the report stage (which renders its section:
    # tests/test_report.py, through the stage's main).
    assert "report" in stale(repo, env)
