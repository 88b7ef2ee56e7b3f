"""Check the data against the params before any heavy stage runs.

The manifest stage calls :func:`check` on the clips it indexed, before the faces and voice stages
decode anything. A *problem* is a setting the data cannot honour (training would crash hours later
or the figures would be meaningless): the stage stops with one line that names the setting and
the fix. A *warning* is a run that can go on but whose figures are weak (few identities, few
clips per identity, positives that are the probe's own recording): it is written to the stage's
report (``reports/manifest.json``, ``warnings``), printed, and shown at the top of the report.

Counts here are of indexed clips; clips the faces or voice stage later fails on can only lower
them, so the training and trials stages check again what they depend on (one-line errors too).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from pipeline.params import Params

#: Below this many identities in a test split, the figures' intervals are wide: a warning.
FEW_IDENTITIES = 10


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)  # stop: the run cannot be honest
    warnings: list[str] = field(default_factory=list)  # go on: the figures are weak


def _ids(clips: pd.DataFrame, split: str) -> pd.Series:
    """Clips per identity in ``split``."""
    return clips.loc[clips["split"] == split].groupby("identity").size()


def _suggest_k(identities: int, limit: int) -> list[int]:
    """K per granularity scaled like the papers' (~0.4 / 0.8 / 1.2 x the identities), capped."""
    ks = sorted({max(2, min(limit, round(f * identities))) for f in (0.4, 0.8, 1.2)})
    return [k for k in ks if k <= limit] or [max(1, limit)]


def check_splits(clips: pd.DataFrame, params: Params, findings: Findings) -> None:
    m, t = params.manifest, params.trials
    train = _ids(clips, "train")
    if len(train) < 2:
        findings.problems.append(
            f"split 'train' has {len(train)} identities (needs >= 2): raise "
            f"manifest.train_fraction (now {m.train_fraction}) or add identities"
        )
    unseen = _ids(clips, "test_unseen")
    usable = int((unseen >= t.min_clips_per_identity).sum())
    if usable < 2:
        findings.problems.append(
            f"split 'test_unseen' has {usable} identities with >= "
            f"trials.min_clips_per_identity ({t.min_clips_per_identity}) clips (needs >= 2): "
            f"lower manifest.train_fraction (now {m.train_fraction}) / val_fraction (now "
            f"{m.val_fraction}), add clips, or set trials.min_clips_per_identity: 1 (the true "
            "candidate is then the probe's own clip)"
        )
    seen_wanted = params.data.split_file is not None or (
        m.seen_heard_fraction > 0 and m.seen_heard_videos > 0
    )
    seen = _ids(clips, "test_seen")
    seen_usable = int((seen >= t.min_clips_per_identity).sum())
    if seen_wanted and seen_usable < 2:
        findings.problems.append(
            f"split 'test_seen' has {seen_usable} identities with >= "
            f"trials.min_clips_per_identity ({t.min_clips_per_identity}) clips (needs >= 2; "
            "only training identities with >= 2 videos can give one): set "
            "manifest.seen_heard_fraction: 0 to run without a seen-heard test, or raise it "
            f"(now {m.seen_heard_fraction})"
        )
    val = _ids(clips, "val")
    if m.val_fraction > 0 and len(val) < 2:
        findings.warnings.append(
            f"split 'val' has {len(val)} identities: the training stages' quick check is skipped"
        )
    for split, per in (("test_unseen", unseen), ("test_seen", seen)):
        if len(per) == 0:
            continue
        if len(per) < FEW_IDENTITIES:
            findings.warnings.append(
                f"split '{split}' has {len(per)} identities: its figures have wide intervals"
            )
        single = int((per == 1).sum())
        if single and t.min_clips_per_identity <= 1:
            findings.warnings.append(
                f"split '{split}': {single} of {len(per)} identities have one clip; their true "
                "candidate is the probe's own recording (same-clip positives)"
            )
        elif single:
            findings.warnings.append(
                f"split '{split}': {single} of {len(per)} identities have one clip and are left "
                f"out of the trials (trials.min_clips_per_identity: "
                f"{t.min_clips_per_identity})"
            )
        if len(per) and float(per.median()) < 2:
            findings.warnings.append(
                f"split '{split}': a median of {float(per.median()):g} clips per identity"
            )


def check_training(clips: pd.DataFrame, params: Params, findings: Findings) -> None:
    train = clips.loc[clips["split"] == "train"]
    n_clips = len(train)
    n_ids = int(train["identity"].nunique())
    n_videos = int(train[["identity", "video_id"]].drop_duplicates().shape[0])
    batch = params.train.batch_size
    if n_clips < batch:
        findings.warnings.append(
            f"train.batch_size ({batch}) exceeds the {n_clips} training clips: each epoch is one "
            "step over all of them"
        )
    trained = set(params.methods) | set(params.lowshot.methods)
    for name, ks, limit, unit in (
        ("cmpc", params.cmpc.clusters, n_videos, "training videos (CMPC keeps one memory row per "
         "video)"),
        ("bipseudo", params.bipseudo.clusters, n_clips, "training clips"),
    ):  # fmt: skip
        if name in trained and max(ks) > limit:
            findings.problems.append(
                f"{name}.clusters {list(ks)}: K cannot exceed the {limit} {unit}: set "
                f"{name}.clusters to e.g. {_suggest_k(n_ids, limit)}"
            )
    if "wen2021" in params.methods:
        w = params.wen2021
        steps = w.reweight_epochs * max(1, n_clips // batch)
        if w.warmup_steps >= steps:
            findings.problems.append(
                f"wen2021.warmup_steps ({w.warmup_steps}) >= the re-weighting run's {steps} steps "
                f"(wen2021.reweight_epochs {w.reweight_epochs} x {max(1, n_clips // batch)} steps "
                f"of {batch} over {n_clips} training clips): the identity re-weighting would never "
                "run; lower wen2021.warmup_steps or raise wen2021.reweight_epochs"
            )
    if params.lowshot.methods and n_ids >= 2 and round(params.lowshot.fraction * n_ids) < 2:
        findings.warnings.append(
            f"lowshot.fraction {params.lowshot.fraction} of {n_ids} training identities is "
            "fewer than 2: the low-shot stages label 2"
        )


def check(clips: pd.DataFrame, params: Params) -> Findings:
    """Problems (stop) and warnings (go on) of the indexed ``clips`` (manifest rows) under
    ``params``; see the module docstring."""
    findings = Findings()
    check_splits(clips, params, findings)
    check_training(clips, params, findings)
    return findings
