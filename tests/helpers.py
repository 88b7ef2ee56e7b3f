"""Small builders used by several test modules."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.synth.corpus import CorpusSpec, plan_corpus, render_jobs, render_video
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
    rows = []
    for job in render_jobs(root, spec, identities, videos, clips):
        rows += render_video(*job)
    return identities, videos, clips, pd.DataFrame(rows)
