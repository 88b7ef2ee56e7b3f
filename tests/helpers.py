"""Small builders used by several test modules."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.synth.corpus import CorpusSpec, plan_corpus, render_video
from pipeline.synth.people import Calibration

CAL = Calibration(face_noise=0.75, voice_noise=0.8, gender_strength=1.0)


def small_spec(
    seed: int = 7, identities: int = 4, videos: int = 2, utts: int = 1, dur: float = 1.6
) -> CorpusSpec:
    return CorpusSpec(identities, videos, utts, dur, dur + 0.4, 224, 25, 16000, seed, CAL)


def render_corpus(
    root: Path, spec: CorpusSpec
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Render a whole (small) corpus serially; returns (identities, videos, clips, truth)."""
    identities, videos, clips = plan_corpus(spec)
    by_id = identities.set_index("identity", drop=False)
    rows = []
    for v in videos.itertuples(index=False):
        video = pd.Series(v._asdict())
        rows += render_video(
            root, by_id.loc[video.identity], video, clips[clips.video_id == video.video_id], spec
        )
    return identities, videos, clips, pd.DataFrame(rows)
