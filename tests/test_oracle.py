"""The oracle: the linear map, and the corpus calibration it certifies (scored on trials from
:func:`pipeline.evaluate.trials.generate_trials` by :mod:`pipeline.evaluate.metrics`, as the oracle
stage does)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluate.oracle import clip_parameters, fit_oracle
from pipeline.evaluate.scoring import Embeddings, quick_match
from pipeline.params import load_params
from pipeline.synth.corpus import CorpusSpec, plan_corpus
from pipeline.synth.people import Calibration
from tests.conftest import REPO


def test_exact_linear_relation_is_recovered() -> None:
    rng = np.random.default_rng(0)
    voice = rng.normal(size=(200, 4))
    face = voice @ rng.normal(size=(4, 6))
    oracle = fit_oracle(voice, face, ridge=1e-6)
    np.testing.assert_allclose(oracle.embed_voice(voice), oracle.embed_face(face), atol=1e-4)


def test_fit_needs_pairs() -> None:
    with pytest.raises(ValueError, match="paired rows"):
        fit_oracle(np.zeros((3, 2)), np.zeros((4, 2)))


def oracle_accuracy(
    identities: pd.DataFrame,
    clips: pd.DataFrame,
    train_ids: set[str],
    test_ids: set[str],
    seed: int,
) -> dict[str, float | None]:
    """Fit on ``train_ids``' clips; 1:2 V->F accuracy (U, G) on 10,000 trials per constraint
    over ``test_ids``' clips, drawn and scored by the evaluation's code."""
    voice, face = clip_parameters(identities, clips)
    is_train = clips["identity"].isin(train_ids).to_numpy()
    is_test = clips["identity"].isin(test_ids).to_numpy()
    oracle = fit_oracle(voice[is_train], face[is_train])
    test = clips[is_test].merge(identities[["identity", "gender", "nationality"]], on="identity")
    test = test.assign(clip_key=test["path"], split="test_unseen")
    emb = Embeddings(
        test["clip_key"].tolist(),
        oracle.embed_face(face[is_test]),
        oracle.embed_voice(voice[is_test]),
    )
    return quick_match(emb, test, "test_unseen", 10000, seed)


def test_default_corpus_calibration_lands_in_the_target_band() -> None:
    """The corpus's target: oracle 1:2 U in 85-92 %, G in 70-80 % on unseen identities."""
    p = load_params(REPO / "params.yaml")
    preset = p.synth.presets["default"]
    cal = p.synth.calibration
    us, gs = [], []
    for seed in (p.base.seed, 1, 2):
        spec = CorpusSpec(
            preset.identities,
            preset.videos_per_identity,
            preset.utterances_per_video,
            preset.min_duration_s,
            preset.max_duration_s,
            224,
            25,
            16000,
            seed,
            Calibration(cal.face_noise, cal.voice_noise, cal.gender_strength),
        )
        ids, _, clips = plan_corpus(spec)
        order = np.random.default_rng(seed).permutation(ids.identity.to_numpy())
        n_test = round(len(order) * (1 - p.manifest.train_fraction - p.manifest.val_fraction))
        acc = oracle_accuracy(ids, clips, set(order[n_test + 16 :]), set(order[:n_test]), seed)
        us.append(acc["U"])
        gs.append(acc["G"])
    assert 0.85 <= np.mean(us) <= 0.92, us
    assert 0.70 <= np.mean(gs) <= 0.80, gs
