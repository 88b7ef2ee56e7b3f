"""The oracle: the linear map, the 1:2 trials, and the corpus calibration it certifies."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.oracle import evaluate_oracle, fit_oracle, matching_accuracy, matching_trials
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


def test_trials_respect_constraints() -> None:
    rng = np.random.default_rng(1)
    ident = np.repeat([f"id{i:05d}" for i in range(10)], 3)
    gender = np.repeat(np.array(["m", "f"] * 5), 3)
    for c in ("U", "G"):
        t = matching_trials(ident, gender, 500, c, rng)
        assert (ident[t[:, 0]] == ident[t[:, 1]]).all()
        assert (t[:, 0] != t[:, 1]).all()
        assert (ident[t[:, 0]] != ident[t[:, 2]]).all()
        if c == "G":
            assert (gender[t[:, 0]] == gender[t[:, 2]]).all()
    u = matching_trials(ident, gender, 2000, "U", rng)
    assert 0.4 < np.mean(gender[u[:, 0]] != gender[u[:, 2]]) < 0.65  # U mixes genders
    with pytest.raises(ValueError, match="unknown constraint"):
        matching_trials(ident, gender, 1, "X", rng)


def test_accuracy_hand_case() -> None:
    voice = np.array([[1.0, 0.0], [0.0, 1.0]])
    face = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    trials = np.array([[0, 0, 1], [1, 1, 0], [0, 2, 1], [1, 0, 1]])  # right, right, right, wrong
    assert matching_accuracy(voice, face, trials) == 0.75


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
        acc = evaluate_oracle(
            ids, clips, set(order[n_test + 16 :]), set(order[:n_test]), 10000, seed
        )
        us.append(acc["U"])
        gs.append(acc["G"])
    assert 0.85 <= np.mean(us) <= 0.92, us
    assert 0.70 <= np.mean(gs) <= 0.80, gs
