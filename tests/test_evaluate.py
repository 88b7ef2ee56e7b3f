"""Scoring embeddings on trial lists: the nested metrics keys, perfect and random embeddings,
the oracle fraction, the ranked examples; the low-shot loss and clip selection."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.evaluate.scoring import (
    Embeddings,
    match_accuracy,
    oracle_fraction,
    quick_match,
    score,
)
from pipeline.evaluate.trials import TrialSpec, generate_trials
from pipeline.schema import OUTCOMES, read_table
from pipeline.train.methods.lowshot import LowShot, LowShotParams
from pipeline.train.pairs import select_clips
from tests.test_train import toy_pairs


def _clips(n_ids: int = 12) -> pd.DataFrame:
    rows = [
        {
            "clip_key": f"{split[5:]}{i:03d}/v{v}/{u}",
            "identity": f"{split[5:]}{i:03d}",
            "video_id": f"v{v}",
            "split": split,
            "gender": "mf"[i % 2],
            "nationality": "ab"[i // 6 % 2],
        }
        for split in ("test_unseen", "test_seen")
        for i in range(n_ids)
        for v in range(2)
        for u in range(2)
    ]
    return pd.DataFrame(rows)


def _embeddings(clips: pd.DataFrame, noise: float, seed: int = 0) -> Embeddings:
    """Face and voice of a clip = its identity's direction + noise (noise=inf: random)."""
    rng = np.random.default_rng(seed)
    ids = sorted(set(clips["identity"]))
    centre = {k: rng.normal(size=16) for k in ids}

    def side() -> np.ndarray:
        base = np.stack([centre[k] for k in clips["identity"]])
        if math.isinf(noise):
            base = np.zeros_like(base)
        x = base + (1.0 if math.isinf(noise) else noise) * rng.normal(size=base.shape)
        out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
        return out

    return Embeddings(list(clips["clip_key"]), side(), side())


def test_metric_keys_and_perfect_embeddings() -> None:
    clips = _clips()
    trials, _ = generate_trials(clips, TrialSpec(n_match=300, n_verify=200, seed=1))
    identity = dict(zip(clips["clip_key"], clips["identity"], strict=True))
    s = score(_embeddings(clips, 0.0), trials, identity)
    m = s.metrics
    for protocol, direction in (
        ("match_1to2", "v2f"), ("match_1to2", "f2v"), ("match_1to10", "v2f"),
        ("verify_auc", "vf"), ("verify_eer", "vf"), ("retrieve_map", "v2f"),
    ):  # fmt: skip
        for split in ("test_unseen", "test_seen"):
            # 6 identities per gender / nationality: the G and N trials have 6 candidates, so
            # they have no 1:10 figure.
            constraints = ("U",) if protocol in ("retrieve_map", "match_1to10") else ("U", "G", "N")
            for c in constraints:
                v = m[protocol][direction][c][split]
                assert v == (0.0 if protocol == "verify_eer" else 1.0), (protocol, c, split)
    assert m["retrieve_gallery"]["test_unseen"] == {"clips": 48, "identities": 12}
    assert m["trials"]["match"] == 2 * 2 * 3 * 300 and m["trials"]["verify"] == 2 * 3 * 200
    assert list(s.match_curve["n"]) == list(range(2, 11))
    assert (s.match_curve["v2f"] == 1.0).all()
    assert s.roc.iloc[0].tolist() == [0.0, 0.0] and s.roc.iloc[-1].tolist() == [1.0, 1.0]
    assert len(s.ranked) == 6 and all(r["ranked"][0]["true"] for r in s.ranked)


def test_match_accuracy_is_the_reported_1to2_figure() -> None:
    clips = _clips()
    trials, _ = generate_trials(clips, TrialSpec(n_match=300, n_verify=200, seed=1))
    identity = dict(zip(clips["clip_key"], clips["identity"], strict=True))
    emb = _embeddings(clips, 1.0)
    m = score(emb, trials, identity).metrics
    for split, c, d in (("test_unseen", "U", "v2f"), ("test_seen", "G", "f2v")):
        acc = match_accuracy(emb, trials, split, c, d)
        assert acc is not None and round(acc, 4) == m["match_1to2"][d][c][split]
    assert match_accuracy(emb, trials, "val", "U") is None


def test_quick_match_on_the_val_split() -> None:
    clips = _clips().assign(split=lambda d: d["split"].replace("test_seen", "val"))
    emb = _embeddings(clips, 0.0)
    acc = quick_match(emb, clips, "val", 500, 3)
    assert acc == {"U": 1.0, "G": 1.0}
    assert quick_match(emb, clips, "val", 500, 3) == acc  # seeded
    # Two identities of different genders: no G trial; one identity: no trial at all.
    two = clips[clips["identity"].isin(["seen000", "seen001"])]
    assert quick_match(_embeddings(two, 0.0), two, "val", 100, 3)["G"] is None
    one = clips[clips["identity"] == "seen000"]
    assert quick_match(_embeddings(one, 0.0), one, "val", 100, 3) == {"U": None, "G": None}
    # The trials are the trial generator's: the test splits' draws do not depend on val.
    with_val = generate_trials(clips, TrialSpec(50, 2, 1), ("test_unseen",))[0]
    without = generate_trials(_clips(), TrialSpec(50, 2, 1), ("test_unseen",))[0]
    pd.testing.assert_frame_equal(with_val, without)


def test_random_embeddings_score_at_chance() -> None:
    # A fixed random embedding set is correlated across trials (every clip serves in many), so
    # average over several sets.
    clips = _clips(20)
    trials, _ = generate_trials(clips, TrialSpec(n_match=2000, n_verify=2000, seed=2))
    identity = dict(zip(clips["clip_key"], clips["identity"], strict=True))
    runs = [
        score(_embeddings(clips, math.inf, seed), trials, identity).metrics for seed in range(8)
    ]

    def mean(*keys: str) -> float:
        vals = []
        for m in runs:
            x: Any = m
            for k in keys:
                x = x[k]
            vals.append(x)
        return float(np.mean(vals))

    for split in ("test_unseen", "test_seen"):
        assert mean("match_1to2", "v2f", "U", split) == pytest.approx(0.5, abs=0.03)
        assert mean("match_1to10", "f2v", "U", split) == pytest.approx(0.1, abs=0.02)
        assert mean("verify_auc", "vf", "G", split) == pytest.approx(0.5, abs=0.03)
        assert mean("retrieve_map", "v2f", "U", split) == pytest.approx(
            runs[0]["chance"]["retrieve_map"][split], abs=0.02
        )


def test_oracle_fraction() -> None:
    values = {
        "chance": {"match_1to2": 0.5, "verify_eer": 0.5, "retrieve_map": {"test_unseen": 0.1}},
        "match_1to2": {"v2f": {"U": {"test_unseen": 0.7, "test_seen": 0.8}}},
        "verify_eer": {"vf": {"U": {"test_unseen": 0.3}}},
        "retrieve_map": {"v2f": {"U": {"test_unseen": 0.2}}},
    }
    oracle = {
        "match_1to2": {"v2f": {"U": {"test_unseen": 0.9}}},  # no test_seen figure: no fraction
        "verify_eer": {"vf": {"U": {"test_unseen": 0.1}}},
        "retrieve_map": {"v2f": {"U": {"test_unseen": 0.5}}},
    }
    f = oracle_fraction(values, oracle)
    assert f["match_1to2"]["v2f"]["U"] == {"test_unseen": 0.5}
    assert f["verify_eer"]["vf"]["U"]["test_unseen"] == 0.5  # (0.3 − 0.5) / (0.1 − 0.5)
    assert f["retrieve_map"]["v2f"]["U"]["test_unseen"] == 0.25


def test_select_clips_reindexes() -> None:
    data = toy_pairs(n_ids=4, clips_per_id=3)
    sub = select_clips(data, torch.tensor([3, 4, 9]))
    assert sub.clip_keys == [data.clip_keys[i] for i in (3, 4, 9)]
    assert sub.identities == [data.identities[1], data.identities[3]]
    assert sub.identity.tolist() == [0, 0, 1]
    c = 2  # its third clip is the original clip 9
    assert torch.equal(
        sub.faces[sub.face_offsets[c] : sub.face_offsets[c + 1]],
        data.faces[data.face_offsets[9] : data.face_offsets[10]],
    )
    assert torch.equal(
        sub.voices[sub.voice_offsets[c] : sub.voice_offsets[c + 1]],
        data.voices[data.voice_offsets[9] : data.voice_offsets[10]],
    )


def test_lowshot_loss_matches_the_formula() -> None:
    g = torch.Generator().manual_seed(0)
    face = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    voice = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1, 0])
    model = LowShot(LowShotParams(tau=0.4, labelled_identities=3), 4).double()
    batch = type("B", (), {"identity": y})()
    w = model.classifier.weight.detach()

    def ce(x: torch.Tensor, i: int) -> float:
        logits = (w @ x.detach()).tolist()
        return -logits[y[i]] + math.log(sum(math.exp(z) for z in logits))

    def nce(a: torch.Tensor, o: torch.Tensor, i: int) -> float:
        an = torch.nn.functional.normalize(a.detach(), dim=1)
        on = torch.nn.functional.normalize(o.detach(), dim=1)
        logits = (an[i] @ on.T / 0.4).tolist()
        return -logits[i] + math.log(sum(math.exp(z) for z in logits))

    want = sum(0.5 * (ce(face[i], i) + ce(voice[i], i)) for i in range(5)) / 5
    want += 0.5 * sum(nce(voice, face, i) + nce(face, voice, i) for i in range(5)) / 5
    assert model(face, voice, batch)["loss"].item() == pytest.approx(want, rel=1e-10)
    assert torch.autograd.gradcheck(lambda f, v: model(f, v, batch)["loss"], (face, voice))
    with pytest.raises(ValueError, match="at least 2"):
        LowShotParams(tau=0.1, labelled_identities=1)


def test_a_split_with_fewer_than_ten_identities_has_a_shorter_curve() -> None:
    clips = _clips(6)  # 5 impostors at most: trials of 6 candidates
    trials, _ = generate_trials(clips, TrialSpec(n_match=100, n_verify=40, seed=3))
    identity = dict(zip(clips["clip_key"], clips["identity"], strict=True))
    s = score(_embeddings(clips, 0.0), trials, identity)
    assert list(s.match_curve.columns) == ["n", "v2f", "f2v"]
    assert list(s.match_curve["n"]) == [2, 3, 4, 5, 6] and (s.match_curve["f2v"] == 1.0).all()
    assert "match_1to10" not in s.metrics and s.metrics["match_1to2"]["v2f"]["U"]["test_seen"] == 1


@pytest.mark.parametrize("history", [False, True])
def test_unavailable_method_writes_every_declared_output(tmp_path: Path, history: bool) -> None:
    from stages.evaluate import write_unavailable

    out, metrics = tmp_path / "eval" / "oracle", tmp_path / "metrics" / "oracle.json"
    payload = write_unavailable("oracle", "no ground truth", metrics, out, history=history)
    assert payload == {"method": "oracle", "available": False, "reason": "no ground truth"}
    assert json.loads(metrics.read_text()) == payload
    files = {"match_curve.csv", "roc.csv", "ranked.json", "outcomes.parquet"}
    assert {f.name for f in out.iterdir()} == files | ({"history.json"} if history else set())
    for name, header in (("match_curve.csv", ["n", "v2f", "f2v"]), ("roc.csv", ["fpr", "tpr"])):
        table = pd.read_csv(out / name)
        assert table.empty and list(table.columns) == header
    assert json.loads((out / "ranked.json").read_text()) == []
    if history:
        assert json.loads((out / "history.json").read_text()) == []
    outcomes = read_table(out / "outcomes.parquet", OUTCOMES)
    assert outcomes.empty and list(outcomes.columns) == OUTCOMES.schema.names
