"""Pair sampling and the shared training loop (cid on a toy problem with a known answer)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.evaluate.scoring import Embeddings, quick_match
from pipeline.params import BipseudoSection, CidSection, CmpcSection, Wen2021Section
from pipeline.train.loop import Encoders, TrainConfig, embed_clips, train
from pipeline.train.methods.bipseudo import BiPseudo
from pipeline.train.methods.cid import CID
from pipeline.train.methods.cmpc import CMPC
from pipeline.train.methods.wen2021 import Wen2021
from pipeline.train.pairs import PairData, sample_batch


def toy_pairs(n_ids: int = 12, clips_per_id: int = 4, seed: int = 0) -> PairData:
    """Faces and voices that both encode the identity: a colour tint and a spectral bump."""
    g = np.random.default_rng(seed)
    faces, voices, f_off, v_off, ident, video = [], [], [0], [0], [], []
    tints = g.uniform(0, 1, (n_ids, 3))
    bands = g.integers(4, 28, n_ids)
    for i in range(n_ids):
        for c in range(clips_per_id):
            k = int(g.integers(1, 4))
            img = (tints[i][None, :, None, None] * 200 + g.normal(0, 20, (k, 3, 16, 16))).clip(
                0, 255
            )
            faces.append(img.astype(np.uint8))
            t = int(g.integers(20, 60))
            spec = g.normal(0, 1, (t, 32))
            spec[:, bands[i] : bands[i] + 3] += 3.0
            voices.append(spec.astype(np.float16))
            f_off.append(f_off[-1] + k)
            v_off.append(v_off[-1] + t)
            ident.append(i)
            video.append(i * clips_per_id + c)
    return PairData(
        clip_keys=[f"id{i:05d}/v/{c}" for i in range(n_ids) for c in range(clips_per_id)],
        faces=torch.from_numpy(np.concatenate(faces)),
        face_offsets=torch.tensor(f_off),
        voices=torch.from_numpy(np.concatenate(voices)),
        voice_offsets=torch.tensor(v_off),
        identity=torch.tensor(ident),
        video=torch.tensor(video),
        identities=[f"id{i:05d}" for i in range(n_ids)],
        videos=[str(v) for v in range(n_ids * clips_per_id)],
    )


CFG = TrainConfig(
    epochs=6,
    batch_size=16,
    lr=3e-3,
    weight_decay=0.0,
    embed_dim=16,
    face_encoder="face_cnn",
    voice_encoder="voice_cnn",
    voice_frames=24,
    seed=5,
)


def test_sample_batch_shapes_and_ranges() -> None:
    data = toy_pairs()
    faces, voices = sample_batch(
        data, torch.arange(len(data)), 80, torch.Generator().manual_seed(0)
    )
    assert faces.shape == (len(data), 3, 16, 16) and faces.min() >= 0 and faces.max() <= 1
    assert voices.shape == (len(data), 32, 80)  # shorter voices repeat to the crop length
    # Each clip's face comes from its own frames: the identity's tint survives.
    tint = faces.mean(dim=(2, 3))
    own = data.faces[data.face_offsets[:-1].long()].float().mean(dim=(2, 3)) / 255
    assert torch.allclose(tint, own, atol=0.1)


def toy_match_accuracy(enc: Encoders, data: PairData, n_match: int, seed: int) -> float | None:
    """1:2 V->F (U) of ``enc`` on every clip of ``data`` as one val split, drawn and scored by
    the evaluation's own trial generator and metrics (:func:`quick_match`)."""
    f, v = embed_clips(enc, data, torch.device("cpu"))
    ident = [data.identities[i] for i in data.identity.tolist()]
    clips = pd.DataFrame(
        {"clip_key": data.clip_keys, "identity": ident, "split": "val", "gender": "m"}
    ).assign(video_id=lambda d: d["clip_key"], nationality=None)
    emb = Embeddings(list(data.clip_keys), f.numpy(), v.numpy())
    return quick_match(emb, clips, "val", n_match, seed)["U"]


def test_cid_learns_the_toy_association_and_is_deterministic(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = toy_pairs()
    enc, hist = train(
        data,
        CID(CidSection(tau=0.2)),
        CidSection(tau=0.2),
        CFG,
        tmp_path / "a",
        torch.device("cpu"),
    )
    assert hist[-1]["loss"] < hist[0]["loss"] * 0.8
    acc = toy_match_accuracy(enc, data, 2000, 0)
    assert acc is not None and acc > 0.8
    _, again = train(
        data,
        CID(CidSection(tau=0.2)),
        CidSection(tau=0.2),
        CFG,
        tmp_path / "b",
        torch.device("cpu"),
    )
    assert [h["loss"] for h in again] == [h["loss"] for h in hist]


def test_a_killed_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = toy_pairs()
    full, _ = train(
        data,
        CID(CidSection(tau=0.2)),
        CidSection(tau=0.2),
        CFG,
        tmp_path / "full",
        torch.device("cpu"),
    )
    part = tmp_path / "part"
    calls = {"n": 0}

    def stop_after_three(row: dict[str, float]) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    with contextlib.suppress(KeyboardInterrupt):
        train(
            data,
            CID(CidSection(tau=0.2)),
            CidSection(tau=0.2),
            CFG,
            part,
            torch.device("cpu"),
            stop_after_three,
        )
    resumed, hist = train(
        data, CID(CidSection(tau=0.2)), CidSection(tau=0.2), CFG, part, torch.device("cpu")
    )
    assert len(hist) == 6
    for k, val in full.state_dict().items():
        assert torch.equal(val, resumed.state_dict()[k]), k


def test_a_finished_run_is_reused_and_a_foreign_checkpoint_ignored(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = toy_pairs()
    short = TrainConfig(**{**CFG.__dict__, "epochs": 2})
    _, first = train(
        data, CID(CidSection(tau=0.2)), CidSection(tau=0.2), short, tmp_path, torch.device("cpu")
    )
    seen: list[dict[str, float]] = []
    _, again = train(
        data,
        CID(CidSection(tau=0.2)),
        CidSection(tau=0.2),
        short,
        tmp_path,
        torch.device("cpu"),
        seen.append,
    )
    assert again == first and seen == []  # nothing trained: the finished run is reused
    other = toy_pairs(seed=1)  # other data, same config: a fresh run, not a resume
    _, fresh = train(
        other, CID(CidSection(tau=0.2)), CidSection(tau=0.2), short, tmp_path, torch.device("cpu")
    )
    assert len(fresh) == 2 and fresh[0]["loss"] != first[0]["loss"]


def test_a_finished_run_under_other_numerics_is_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread count or other kernel pins train other floats: their checkpoint is not
    reused (a pin changed in the repository once let every training stage 'rerun' in seconds by
    reusing weights trained under the old kernels)."""
    data = toy_pairs()
    short = TrainConfig(**{**CFG.__dict__, "epochs": 2})

    def run() -> list[int]:
        seen: list[dict[str, float]] = []
        cid = CidSection(tau=0.2)
        train(data, CID(cid), cid, short, tmp_path, torch.device("cpu"), seen.append)
        return [int(r["epoch"]) for r in seen]

    torch.set_num_threads(1)
    assert run() == [1, 2] and run() == []  # trained, then reused
    try:
        torch.set_num_threads(2)
        assert run() == [1, 2]  # other thread count: trained again
    finally:
        torch.set_num_threads(1)
    monkeypatch.setenv("MKL_CBWR", "AUTO")  # another kernel branch: trained again
    assert run() == [1, 2] and run() == []


def _method(name: str, data: PairData) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(
        3
    )  # the classifier's init, as pipeline.train.methods.registry.build_method does
    if name == "cmpc":
        cp = CmpcSection(
            tau=0.2, clusters=[4, 8], start_epoch=1, every_epochs=2, memory_momentum=0.5,
            delta=-1.0, kappa=0.1, phi_mean=0.2, kmeans_iters=10, prototypes=True,
            recalibration=True, published_code=False,
        )  # fmt: skip
        return CMPC(cp, len(data.videos), CFG.embed_dim, seed=3), cp
    if name == "wen2021":
        wp = Wen2021Section(
            published_code=False,
            reweight_epochs=6,
            warmup_steps=4,
            every_steps=2,
            initial_hardness=100.0,
        )
        return Wen2021(wp, len(data.identities), CFG.embed_dim), wp
    bp = BipseudoSection(
        tau=0.2, proto_tau=0.2, clusters=[4, 8], start_epoch=1, every_epochs=2,
        memory_momentum=0.5, kmeans_iters=10, weight_pseudo=1.0, weight_pull=0.5, weight_push=1.0,
    )  # fmt: skip
    return BiPseudo(bp, len(data), CFG.embed_dim, seed=3), bp


@pytest.mark.parametrize("name", ["wen2021", "cmpc", "bipseudo"])
def test_each_method_trains_and_is_deterministic(name: str, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = toy_pairs()
    runs = []
    for sub in ("a", "b"):
        method, mp = _method(name, data)
        cfg = TrainConfig(**{**CFG.__dict__, "head": getattr(method, "head", "none")})
        enc, hist = train(data, method, mp, cfg, tmp_path / sub, torch.device("cpu"))
        runs.append((enc, hist))
    (enc, hist), (enc2, hist2) = runs
    # Epoch 2 is the first with clusters or identity weights (its loss has every term): from
    # there the loss goes down.
    assert hist[-1]["loss"] < hist[1]["loss"] * 0.9
    assert hist == hist2  # the history holds results only (no speed): equal across runs
    for k, val in enc.state_dict().items():
        assert torch.equal(val, enc2.state_dict()[k]), k


@pytest.mark.parametrize("name", ["cmpc", "bipseudo"])
def test_clustering_methods_resume_to_the_same_weights(name: str, tmp_path: Path) -> None:
    """Memory banks, clusters and counters live in buffers: a run killed after epoch 3 (clusters
    refreshed at epochs 1 and 3) resumes to the uninterrupted run's weights and memory."""
    torch.set_num_threads(1)
    data = toy_pairs()
    method, mp = _method(name, data)
    cfg = TrainConfig(**{**CFG.__dict__, "head": getattr(method, "head", "none")})
    full, hist = train(data, method, mp, cfg, tmp_path / "full", torch.device("cpu"))
    full_memory = method.state_dict()

    def stop_after_three(row: dict[str, float]) -> None:
        if row["epoch"] == 3:
            raise KeyboardInterrupt

    with contextlib.suppress(KeyboardInterrupt):
        m1, _ = _method(name, data)
        train(data, m1, mp, cfg, tmp_path / "part", torch.device("cpu"), stop_after_three)
    m2, _ = _method(name, data)
    resumed, again = train(data, m2, mp, cfg, tmp_path / "part", torch.device("cpu"))
    assert [h["loss"] for h in again] == [h["loss"] for h in hist]
    for k, val in full.state_dict().items():
        assert torch.equal(val, resumed.state_dict()[k]), k
    for k, val in full_memory.items():
        assert torch.equal(val, m2.state_dict()[k]), k


def test_model_files_are_the_same_bytes_for_the_same_weights(tmp_path: Path) -> None:
    """The file's bytes depend on the weights only (not on the temporary name it was written
    under), so retraining to identical weights leaves DVC's hash, and everything downstream, as
    it was."""
    from pipeline.train.loop import Encoders, load_model, save_model

    torch.manual_seed(0)
    enc = Encoders(CFG)
    a, b = tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt"
    save_model(a, CFG, "cid", enc)
    save_model(b, CFG, "cid", enc)
    assert a.read_bytes() == b.read_bytes()
    loaded, cfg = load_model(b, torch.device("cpu"))
    assert cfg == CFG
    for k, v in enc.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
