"""The media ceiling: the stage on tiny fixtures (metrics keys, the attributes key, the
unavailable case), the ridge map against a hand computation, determinism; clip attributes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from ruamel.yaml import YAML

from pipeline.evaluate.attributes import clip_attributes
from pipeline.evaluate.ceiling import fit_map, make_targets
from pipeline.evaluate.trials import TrialSpec, generate_trials, write_trials
from pipeline.params import load_params
from pipeline.preprocess.jpeg import encode_jpeg
from pipeline.schema import (
    FACE_FRAMES,
    MANIFEST,
    SYNTH_CLIPS,
    SYNTH_IDENTITIES,
    VOICE_FEATURES,
    TableSchema,
    write_table,
)
from pipeline.synth.people import sample_identities
from tests.conftest import REPO
from tests.helpers import CAL

pytestmark = pytest.mark.usefixtures("prefect_server")  # see tests/conftest.py


def test_ridge_map_by_hand() -> None:
    # Voice 0, 1, 2 -> z = ±sqrt(3/2), 0; face columns rise / fall with it: z-scored the same.
    # w = x'y / (x'x + ridge) = (3, -3) / (3 + 1) = (0.75, -0.75).
    voice = np.array([[0.0], [1.0], [2.0]])
    face = np.array([[0.0, 4.0], [2.0, 2.0], [4.0, 0.0]])
    m = fit_map(voice, face, ridge=1.0)
    np.testing.assert_allclose(m.weights, [[0.75, -0.75]])
    np.testing.assert_allclose(m.voice_mean, [1.0])
    np.testing.assert_allclose(m.face_std, [math.sqrt(8 / 3)] * 2)
    h = math.sqrt(0.5)
    np.testing.assert_allclose(m.embed_voice(np.array([[2.0], [0.0]])), [[h, -h], [-h, h]])
    np.testing.assert_allclose(m.embed_face(np.array([[4.0, 0.0], [3.0, 3.0]])), [[h, -h], [h, h]])
    # ridge = 3: w = 3 / 6 = 0.5; the direction (cosine) is the same.
    np.testing.assert_allclose(fit_map(voice, face, ridge=3.0).weights, [[0.5, -0.5]])


def test_cross_fitting_predicts_each_training_clip_with_a_network_blind_to_its_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With K folds: K networks, each trained on all but one fold of the training identities;
    every training clip is predicted by the one network that never saw its identity, the test
    clips by the mean of all K. (Networks and predictions replaced by bookkeeping stand-ins.)"""
    import torch

    import pipeline.evaluate.ceiling as ceiling
    from pipeline.train.pairs import PairData

    n_ids, per_id = 10, 3
    identity = torch.arange(n_ids).repeat_interleave(per_id)

    def data(ident: torch.Tensor) -> PairData:
        c = len(ident)
        return PairData(
            clip_keys=[f"c{i}" for i in range(c)],
            faces=torch.zeros(c, 3, 4, 4, dtype=torch.uint8),
            face_offsets=torch.arange(c + 1),
            voices=torch.zeros(c, 2, dtype=torch.float16),
            voice_offsets=torch.arange(c + 1),
            identity=ident,
            video=ident,
            identities=[f"id{i}" for i in range(n_ids)],
            videos=[f"id{i}" for i in range(n_ids)],
        )

    trained: list[set[str]] = []

    def fake_train(sub: PairData, targets: Any, cfg: Any, *_: Any) -> tuple[Any, list[Any]]:
        assert len(targets.gender) == len(sub)  # the labels follow the fold's clips
        trained.append({sub.identities[int(i)] for i in sub.identity})
        return len(trained) - 1, [{"epoch": 1.0, "loss": 0.0}]

    def fake_predict(model: int, d: PairData, k: int, *_: Any) -> tuple[np.ndarray, np.ndarray]:
        seen = np.array([d.identities[int(i)] in trained[model] for i in d.identity], float)
        out = np.column_stack([seen, np.full(len(d), float(model)), np.zeros((len(d), 1 + k))])
        return out, out.copy()

    monkeypatch.setattr(ceiling, "train_ceiling", fake_train)
    monkeypatch.setattr(ceiling, "predict", fake_predict)
    targets = ceiling.Targets(
        torch.zeros(len(identity), dtype=torch.long),
        torch.zeros(len(identity), dtype=torch.long),
        torch.zeros(len(identity)),
        torch.zeros(len(identity)),
        ["a"],
        0.0,
        1.0,
        0.0,
        1.0,
    )
    cfg = ceiling.CeilingConfig(
        train=ceiling.TrainConfig(1, 2, 1e-3, 0.0, 4, "face_cnn", "voice_cnn", 2, 7),
        weights=(1, 1, 1, 1),
        ridge=1.0,
        probe_l2=1.0,
        folds=4,
    )
    (oof, _), (test, _), history = ceiling.cross_fit(
        data(identity), targets, data(identity[:6]), cfg, torch.device("cpu")
    )
    assert len(trained) == 4 and [row["fold"] for row in history] == [1, 2, 3, 4]
    everyone = {f"id{i}" for i in range(n_ids)}
    held_out = [everyone - t for t in trained]
    assert all(held_out) and set().union(*held_out) == everyone  # folds partition identities
    assert sum(len(h) for h in held_out) == n_ids
    assert (oof[:, 0] == 0).all()  # no training clip predicted by a network that saw it
    for c in range(len(identity)):  # ... and each by the network its identity was held from
        assert f"id{int(identity[c])}" in held_out[int(oof[c, 1])]
    np.testing.assert_allclose(test[:, 1], np.mean(range(4)))  # test: the mean of the four


def _fill(spec: TableSchema, n: int) -> dict[str, Any]:
    """Placeholder values for every column of ``spec`` (n rows)."""
    out: dict[str, Any] = {}
    for f in spec.schema:
        t = f.type
        if pa.types.is_list(t):
            out[f.name] = [[0.0]] * n
        elif pa.types.is_string(t):
            out[f.name] = ["x"] * n
        elif pa.types.is_boolean(t):
            out[f.name] = [False] * n
        else:
            out[f.name] = [1] * n
    return out


def make_fixture(root: Path, n_ids: int = 12) -> dict[str, Path]:
    """Ground truth, manifest, face and voice shards and trials of a small corpus whose faces
    show gender (brightness) and voices nationality (a spectral band)."""
    rng = np.random.default_rng(0)
    ident = sample_identities(n_ids, rng, CAL)
    paths = {
        "corpus": root / "synth",
        "manifest": root / "manifest" / "clips.parquet",
        "faces": root / "faces",
        "voice": root / "voice",
        "trials": root / "trials" / "trials.parquet",
    }
    for p in ("faces", "voice"):
        paths[p].mkdir(parents=True)
    (paths["corpus"] / "ground_truth").mkdir(parents=True)
    write_table(ident, paths["corpus"] / "ground_truth" / "identities.parquet", SYNTH_IDENTITIES)
    rows, frames, voices = [], [], []
    nats = sorted(set(ident["nationality"]))
    for i, who in enumerate(ident.itertuples(index=False)):
        for v in range(2):
            split = "test_unseen" if i >= 8 else ("test_seen" if i < 4 and v == 1 else "train")
            for u in range(2):
                key = f"{who.identity}/v{v}/{u:05d}"
                rows.append(
                    {
                        "clip_key": key,
                        "identity": who.identity,
                        "video_id": f"v{v}",
                        "utterance": f"{u:05d}",
                        "split": split,
                        "gender": who.gender,
                        "nationality": who.nationality,
                        "media_path": f"mp4/{key}.mp4",
                        "media_kind": "video",
                        "face_dir": None,
                        "n_face_crops": 0,
                        "size_bytes": 1,
                    }
                )
                level = 170 if who.gender == "m" else 70
                for k in range(2):
                    img = (level + rng.normal(0, 25, (32, 32, 3))).clip(0, 255).astype(np.uint8)
                    frames.append(
                        {
                            "clip_key": key,
                            "frame_index": k,
                            "time_s": k / 25,
                            "box_px": [0.0, 0.0, 32.0, 32.0],
                            "landmarks_px": [0.0] * 10,
                            "prob": 0.99,
                            "n_faces": 1,
                            "crop_size_px": 32,
                            "crop_jpeg": encode_jpeg(img, 90),
                        }
                    )
                t = int(rng.integers(25, 40))
                spec = rng.normal(0, 1, (t, 16))
                band = 2 * nats.index(who.nationality)
                spec[:, band : band + 2] += 2.0
                voices.append(
                    {
                        "clip_key": key,
                        "sample_rate_hz": 16000,
                        "duration_s": t / 100,
                        "speech_s": t / 100,
                        "segment_start_s": [0.0],
                        "segment_end_s": [t / 100],
                        "front_end": "fbank16",
                        "hop_ms": 10.0,
                        "n_frames": t,
                        "n_bins": 16,
                        "features_f16": spec.astype("<f2").tobytes(),
                    }
                )
    manifest = pd.DataFrame(rows)
    write_table(manifest, paths["manifest"], MANIFEST)
    write_table(pd.DataFrame(frames), paths["faces"] / "faces-00000.parquet", FACE_FRAMES)
    write_table(pd.DataFrame(voices), paths["voice"] / "voice-00000.parquet", VOICE_FEATURES)
    clips = pd.DataFrame(_fill(SYNTH_CLIPS, len(manifest)))
    clips["path"] = manifest["media_path"]
    clips["identity"] = manifest["identity"]
    write_table(clips, paths["corpus"] / "ground_truth" / "clips.parquet", SYNTH_CLIPS)
    trials, _ = generate_trials(manifest, TrialSpec(n_match=60, n_verify=20, seed=1, candidates=4))
    write_trials(paths["trials"], trials)
    return paths


def tiny_params(path: Path, layout: str = "synth") -> Path:
    yaml = YAML(typ="safe")
    raw = yaml.load((REPO / "params.yaml").read_text())
    raw["data"]["layout"] = layout
    raw["train"].update(face_size_px=32, batch_size=8, embed_dim=16, voice_frames=20)
    raw["ceiling"]["epochs"] = 3
    raw["ceiling"]["folds"] = 2
    with path.open("w") as f:
        yaml.dump(raw, f)
    return path


def _args(paths: dict[str, Path], params: Path, out: Path) -> list[str]:
    return [
        "--params", str(params), "--manifest", str(paths["manifest"]),
        "--faces", str(paths["faces"]), "--voice", str(paths["voice"]),
        "--trials", str(paths["trials"]), "--corpus", str(paths["corpus"]),
        "--oracle", str(out / "oracle.json"),
        "--metrics", str(out / "metrics"), "--eval", str(out / "eval"),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    root = tmp_path_factory.mktemp("ceiling")
    return make_fixture(root), tiny_params(root / "params.yaml")


def test_clip_attributes(fixture: tuple[dict[str, Path], Path]) -> None:
    paths, _ = fixture
    attrs = clip_attributes(paths["manifest"], "synth", paths["corpus"])
    assert list(attrs.columns) == ["gender", "nationality", "age_years", "build"]
    assert attrs.index.is_monotonic_increasing and len(attrs) == 12 * 4
    ident = pd.read_parquet(paths["corpus"] / "ground_truth" / "identities.parquet")
    first = ident.iloc[0]
    row = attrs.loc[f"{first.identity}/v0/00000"]
    assert row["age_years"] == first.age_years and row["build"] == first.build
    assert row["gender"] == first.gender and row["nationality"] == first.nationality
    # Another layout: only the manifest's attributes; the synth layout needs its corpus.
    other = clip_attributes(paths["manifest"], "voxceleb2", None)
    assert other["age_years"].isna().all() and other["build"].isna().all()
    assert (other["gender"] == attrs["gender"]).all()
    with pytest.raises(ValueError, match="corpus root"):
        clip_attributes(paths["manifest"], "synth", None)
    t = make_targets(attrs)
    assert t.width == 3 + len(t.nationalities)
    assert abs(float(t.age.mean())) < 1e-5 and set(t.gender.tolist()) <= {0, 1}


@pytest.mark.slow
def test_stage_writes_standard_metrics_and_is_deterministic(
    fixture: tuple[dict[str, Path], Path], tmp_path: Path
) -> None:
    from stages.ceiling import ceiling_flow, main, parser

    paths, params = fixture
    oracle = {"match_1to2": {"v2f": {"U": {"test_unseen": 0.9, "test_seen": 0.9}}}}
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "oracle.json").write_text(json.dumps(oracle))
    main(_args(paths, params, tmp_path / "a"))  # the stage's command line, through Prefect
    ceiling_flow.fn(  # the flow's body again, as a second run
        load_params(params), parser().parse_args(_args(paths, params, tmp_path / "b"))
    )
    a = json.loads((tmp_path / "a" / "metrics" / "ceiling.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics" / "ceiling.json").read_text())
    assert a == b
    assert a["method"] == "ceiling"
    for key in ("match_1to2", "verify_auc", "verify_eer", "retrieve_map", "chance", "trials"):
        assert key in a, key
    for split in ("test_unseen", "test_seen"):
        for d in ("v2f", "f2v"):
            assert 0.0 <= a["match_1to2"][d]["U"][split] <= 1.0
    assert "test_unseen" in a["oracle_fraction"]["match_1to2"]["v2f"]["U"]
    attrs = a["attributes"]
    assert attrs["split"] == "test_unseen"
    for side in ("face", "voice"):
        assert set(attrs["heads"][side]) == {"gender", "nationality", "age_years", "build"}
        assert set(attrs["probes"][side]) == {"gender", "nationality", "age_years", "build"}
        assert attrs["heads"][side]["gender"]["test_clips"] == 16
    assert a["train"] == {
        "clips": 24, "epochs": 3, "folds": 2, "final_loss": a["train"]["final_loss"]
    }  # fmt: skip
    for f in ("roc.csv", "match_curve.csv", "ranked.json", "history.json"):
        assert (tmp_path / "a" / "eval" / "ceiling" / f).is_file()
    history = json.loads((tmp_path / "a" / "eval" / "ceiling" / "history.json").read_text())
    assert len(history) == 6 and {"face_gender", "voice_nationality"} <= set(history[0])
    assert [row["fold"] for row in history] == [1, 1, 1, 2, 2, 2]


def test_other_layouts_are_unavailable(
    fixture: tuple[dict[str, Path], Path], tmp_path: Path
) -> None:
    from stages.ceiling import ceiling_flow, parser

    paths, _ = fixture
    params = tiny_params(tmp_path / "params.yaml", layout="voxceleb2")
    args = parser().parse_args(_args(paths, params, tmp_path))
    out = ceiling_flow.fn(load_params(params), args)
    assert out["available"] is False and out["reason"].startswith("no ground-truth attributes")
    saved = json.loads((tmp_path / "metrics" / "ceiling.json").read_text())
    assert saved == out
    # Every declared output exists (empty), so DVC does not fail the stage on such data.
    folder = Path(args.eval) / "ceiling"
    names = {"roc.csv", "match_curve.csv", "history.json", "ranked.json", "outcomes.parquet"}
    assert {f.name for f in folder.iterdir()} == names


def test_params_section_is_validated(tmp_path: Path) -> None:
    from pipeline.params import ParamsError

    text = (REPO / "params.yaml").read_text().replace("  probe_l2:", "  probe_l3:", 1)
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError, match="probe_l3"):
        load_params(tmp_path / "params.yaml")
    p = load_params(REPO / "params.yaml").ceiling
    assert p.epochs >= 1 and p.loss_weights.gender >= 0 and p.ridge > 0
