"""Preflight: each setting the data cannot honour is a problem naming it; weak data a warning."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from pipeline.params import Params, load_params
from pipeline.preprocess.preflight import check
from tests.conftest import REPO

#: (identities, videos each, clips per video) per split, shaped like the default synthetic
#: corpus: 104 training identities (208 videos, 416 clips), half of them with a held-out video.
HEALTHY = {
    "train": (104, 2, 2),
    "val": (16, 3, 2),
    "test_unseen": (40, 3, 2),
    "test_seen": (52, 1, 2),
}


def manifest(shape: dict[str, tuple[int, int, int]]) -> pd.DataFrame:
    """Manifest rows (the columns preflight reads) for ``split -> (ids, videos, clips/video)``.
    Seen-heard identities are the first training identities, as the manifest stage makes them."""
    rows = []
    for split, (n_ids, videos, utts) in shape.items():
        prefix = "tr" if split in ("train", "test_seen") else split[:2]
        for i in range(n_ids):
            for v in range(videos):
                vid = f"seen{v}" if split == "test_seen" else f"v{v}"
                for u in range(utts):
                    ident = f"{prefix}{i:03d}"
                    rows.append(
                        {
                            "clip_key": f"{ident}/{vid}/{u:05d}",
                            "identity": ident,
                            "video_id": vid,
                            "split": split,
                        }
                    )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def params() -> Params:
    return load_params(REPO / "params.yaml")


def with_(params: Params, **sections: dict[str, Any]) -> Params:
    """``params`` with fields of some sections replaced (``methods`` / ``seeds`` directly)."""
    top = {k: v for k, v in sections.items() if not isinstance(v, dict)}
    for name, fields in sections.items():
        if isinstance(fields, dict):
            top[name] = getattr(params, name).model_copy(update=fields)
    return params.model_copy(update=top)


def only(problems: list[str], setting: str) -> str:
    """The one problem that names ``setting``."""
    hits = [p for p in problems if setting in p]
    assert len(hits) == 1, (setting, problems)
    return hits[0]


def test_a_healthy_manifest_has_no_problems_and_no_warnings(params: Params) -> None:
    findings = check(manifest(HEALTHY), params)
    assert findings.problems == [] and findings.warnings == []


def test_cmpc_clusters_beyond_the_training_videos(params: Params) -> None:
    bad = with_(params, cmpc={"clusters": [40, 80, 209]})
    msg = only(check(manifest(HEALTHY), bad).problems, "cmpc.clusters")
    assert "[40, 80, 209]" in msg and "208 training videos" in msg
    # Exactly as many clusters as videos is allowed; bipseudo is not involved.
    assert check(manifest(HEALTHY), with_(params, cmpc={"clusters": [208]})).problems == []
    # Nobody trains CMPC: its K does not matter.
    unused = with_(bad, methods=["cid"], lowshot={"methods": []})
    assert check(manifest(HEALTHY), unused).problems == []
    # Low-shot CMPC trains it too.
    lowshot_only = with_(bad, methods=["cid"], lowshot={"methods": ["cmpc"]})
    assert "cmpc.clusters" in " ".join(check(manifest(HEALTHY), lowshot_only).problems)


def test_bipseudo_clusters_beyond_the_training_clips(params: Params) -> None:
    bad = with_(params, bipseudo={"clusters": [40, 417]})
    problems = check(manifest(HEALTHY), bad).problems
    msg = only(problems, "bipseudo.clusters")
    assert "416 training clips" in msg
    assert len(problems) == 1  # 417 > 208 videos, but CMPC's K is what counts for videos
    assert check(manifest(HEALTHY), with_(params, bipseudo={"clusters": [416]})).problems == []


def test_wen_warmup_that_never_ends(params: Params) -> None:
    # 416 clips / 64 per batch = 6 steps per epoch, x 20 re-weighting epochs = 120 steps.
    problems = check(manifest(HEALTHY), with_(params, wen2021={"warmup_steps": 120})).problems
    msg = only(problems, "wen2021.warmup_steps")
    assert "(120) >= the re-weighting run's 120 steps" in msg
    assert "wen2021.reweight_epochs" in msg
    assert check(manifest(HEALTHY), with_(params, wen2021={"warmup_steps": 119})).problems == []
    not_trained = with_(params, methods=["cid", "cmpc"], wen2021={"warmup_steps": 500})
    assert check(manifest(HEALTHY), not_trained).problems == []


def test_batch_larger_than_the_training_clips_is_a_warning(params: Params) -> None:
    # The loop then takes one step per epoch over every clip: weak, not impossible.
    small = with_(params, methods=["cid"], lowshot={"methods": []})
    findings = check(manifest(HEALTHY), with_(small, train={"batch_size": 417}))
    assert findings.problems == []
    assert (
        "train.batch_size (417) exceeds the 416 training clips: each epoch is one step over all "
        "of them"
    ) in findings.warnings
    ok = check(manifest(HEALTHY), with_(small, train={"batch_size": 416}))
    assert not any("train.batch_size" in w for w in ok.warnings)


def test_test_unseen_with_one_identity(params: Params) -> None:
    problems = check(manifest({**HEALTHY, "test_unseen": (1, 3, 2)}), params).problems
    msg = only(problems, "'test_unseen'")
    assert "trials.min_clips_per_identity (2)" in msg and "manifest.train_fraction" in msg


def test_single_clip_unseen_identities_count_only_with_min_clips_one(params: Params) -> None:
    shape = {**HEALTHY, "test_unseen": (12, 1, 1)}
    problems = check(manifest(shape), params).problems
    assert "split 'test_unseen' has 0 identities with >= trials.min_clips_per_identity (2)" in (
        only(problems, "trials.min_clips_per_identity")
    )
    one = with_(params, trials={"min_clips_per_identity": 1})
    findings = check(manifest(shape), one)
    assert findings.problems == []
    assert (
        "split 'test_unseen': 12 of 12 identities have one clip; their true candidate is the "
        "probe's own recording (same-clip positives)"
    ) in findings.warnings
    # With the default 2 they are not same-clip positives but left out: another warning.
    assert not any("same-clip" in w for w in check(manifest(HEALTHY), one).warnings)


def test_single_clip_identities_left_out_under_min_clips_two(params: Params) -> None:
    shape = {**HEALTHY, "test_unseen": (40, 3, 2)}
    frame = manifest(shape)
    lonely = frame[frame.identity.isin(["te000", "te001"])].groupby("identity").head(1)
    frame = pd.concat([frame[~frame.identity.isin(["te000", "te001"])], lonely])
    findings = check(frame, params)
    assert findings.problems == []
    assert (
        "split 'test_unseen': 2 of 40 identities have one clip and are left out of the trials "
        "(trials.min_clips_per_identity: 2)"
    ) in findings.warnings
    assert not any("same-clip" in w for w in findings.warnings)


def test_test_seen_with_one_identity(params: Params) -> None:
    assert params.manifest.seen_heard_fraction > 0
    problems = check(manifest({**HEALTHY, "test_seen": (1, 1, 2)}), params).problems
    msg = only(problems, "'test_seen'")
    assert "manifest.seen_heard_fraction: 0" in msg
    assert f"(now {params.manifest.seen_heard_fraction})" in msg


def test_no_seen_split_asked_for_is_not_a_problem(params: Params) -> None:
    shape = {k: v for k, v in HEALTHY.items() if k != "test_seen"}
    off = with_(params, manifest={"seen_heard_fraction": 0.0})
    findings = check(manifest(shape), off)
    assert findings.problems == [] and findings.warnings == []
    no_videos = with_(params, manifest={"seen_heard_videos": 0})
    assert check(manifest(shape), no_videos).problems == []
    # Asked for but absent: a problem.
    assert "'test_seen' has 0 identities" in only(check(manifest(shape), params).problems, "seen")


def test_weak_data_warnings(params: Params) -> None:
    shape = {**HEALTHY, "val": (1, 3, 2), "test_unseen": (5, 3, 2)}
    findings = check(manifest(shape), params)
    assert findings.problems == []
    assert findings.warnings == [
        "split 'val' has 1 identities: the training stages' quick check is skipped",
        "split 'test_unseen' has 5 identities: its figures have wide intervals",
    ]


def test_problems_accumulate_one_per_setting(params: Params) -> None:
    tiny = {"train": (2, 1, 2), "test_unseen": (1, 1, 1)}
    problems = check(manifest(tiny), params).problems
    for setting in (
        "'test_unseen'",
        "'test_seen'",
        "cmpc.clusters",
        "bipseudo.clusters",
        "wen2021.warmup_steps",
    ):
        only(problems, setting)
    assert len(problems) == 5
