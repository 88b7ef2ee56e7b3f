"""The streamed training data (pipeline.train.stream) against the in-memory loader."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.preprocess.jpeg import encode_jpeg
from pipeline.schema import FACE_FRAMES, MANIFEST, VOICE_FEATURES, write_table
from pipeline.train import stream as stream_module
from pipeline.train.loop import Encoders, embed_clips, train
from pipeline.train.methods.bipseudo import BiPseudo
from pipeline.train.pairs import PairData, load_pairs
from pipeline.train.stream import StreamData
from tests.test_train import CFG as TRAIN_CFG
from tests.test_train import toy_pairs

CFG = replace(TRAIN_CFG, epochs=2, batch_size=8)


def write_shards(root: Path, pairs: PairData, face_cuts: int, voice_cuts: int) -> tuple[Path, ...]:
    """``pairs`` as a manifest and as faces / voice shards cut at different clips (so a faces
    shard's clips lie in one or two voice shards); every fourth identity is a val identity."""
    m, faces, voices = [], [], []
    for c, key in enumerate(pairs.clip_keys):
        ident = pairs.identities[int(pairs.identity[c])]
        split = "val" if int(pairs.identity[c]) % 4 == 3 else "train"
        m.append(
            {
                "clip_key": key,
                "identity": ident,
                "video_id": pairs.videos[int(pairs.video[c])],
                "utterance": f"{c:05d}",
                "split": split,
                "gender": None,
                "nationality": None,
                "media_path": f"{key}.mp4",
                "media_kind": "video",
                "face_dir": None,
                "n_face_crops": 0,
                "size_bytes": 1,
            }
        )
        lo, hi = int(pairs.face_offsets[c]), int(pairs.face_offsets[c + 1])
        for k in range(lo, hi):
            img = pairs.faces[k].permute(1, 2, 0).numpy()
            faces.append(
                {
                    "clip_key": key,
                    "frame_index": k - lo,
                    "time_s": float(k - lo),
                    "box_px": [0.0, 0.0, 16.0, 16.0],
                    "landmarks_px": [0.0] * 10,
                    "prob": 0.99,
                    "n_faces": 1,
                    "crop_size_px": 16,
                    "crop_jpeg": encode_jpeg(img, 95),
                }
            )
        v = pairs.voices[int(pairs.voice_offsets[c]) : int(pairs.voice_offsets[c + 1])].numpy()
        voices.append(
            {
                "clip_key": key,
                "sample_rate_hz": 16000,
                "duration_s": len(v) / 100,
                "speech_s": len(v) / 100,
                "segment_start_s": [0.0],
                "segment_end_s": [len(v) / 100],
                "front_end": "fbank32",
                "hop_ms": 10.0,
                "n_frames": len(v),
                "n_bins": v.shape[1],
                "features_f16": v.astype("<f2").tobytes(),
            }
        )
    manifest = root / "clips.parquet"
    write_table(pd.DataFrame(m), manifest, MANIFEST)
    keys = np.array(pairs.clip_keys)
    for name, rows, spec, cuts in (
        ("faces", faces, FACE_FRAMES, face_cuts),
        ("voice", voices, VOICE_FEATURES, voice_cuts),
    ):
        (root / name).mkdir()
        df = pd.DataFrame(rows)
        for i, part in enumerate(np.array_split(keys, cuts)):
            write_table(
                df[df["clip_key"].isin(part)], root / name / f"{name}-{i:04d}.parquet", spec
            )
    return manifest, root / "faces", root / "voice"


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ...]:
    return write_shards(tmp_path_factory.mktemp("stream"), toy_pairs(), face_cuts=5, voice_cuts=3)


def open_stream(shards: tuple[Path, ...], **kw: Any) -> StreamData:
    return StreamData(*shards, ("train",), 16, **kw)


def test_the_stream_holds_the_same_clips_and_arrays_as_the_in_memory_loader(
    shards: tuple[Path, ...],
) -> None:
    mem = load_pairs(*shards, ("train",), 16)
    s = open_stream(shards)
    assert s.clip_keys == mem.clip_keys and len(s) == len(mem) == 36  # 9 of 12 identities
    assert s.identities == mem.identities and s.videos == mem.videos
    assert torch.equal(s.identity, mem.identity) and torch.equal(s.video, mem.video)
    seen = np.concatenate([u.clips for u in s.units])
    assert sorted(seen.tolist()) == list(range(len(mem)))  # every clip in exactly one unit
    assert len(s.units) == 5 and max(len(u.voice_files) for u in s.units) == 2
    for u, spec in enumerate(s.units):
        part = s.unit(u)
        assert part.clip_keys == [mem.clip_keys[c] for c in spec.clips]
        for i, c in enumerate(spec.clips):
            fm = mem.faces[mem.face_offsets[c] : mem.face_offsets[c + 1]]
            fs = part.faces[part.face_offsets[i] : part.face_offsets[i + 1]]
            vm = mem.voices[mem.voice_offsets[c] : mem.voice_offsets[c + 1]]
            vs = part.voices[part.voice_offsets[i] : part.voice_offsets[i + 1]]
            assert torch.equal(fm, fs) and torch.equal(vm, vs)
        assert torch.equal(part.identity, mem.identity[torch.from_numpy(spec.clips)])


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_draws_each_clip_at_most_once_and_depends_only_on_the_seed(
    shards: tuple[Path, ...], workers: int
) -> None:
    s = open_stream(shards, workers=workers, buffer_clips=10)
    a = list(s.batches(11, 8, 24, True))
    b = list(s.batches(11, 8, 24, True))
    c = list(s.batches(12, 8, 24, True))
    clips = torch.cat([x[0] for x in a])
    assert len(clips.unique()) == len(clips)  # no clip twice in an epoch
    # Each worker drops only its last partial batch.
    assert len(s) - max(workers, 1) * 7 <= len(clips) <= len(s) and len(clips) % 8 == 0
    assert all(x[1].shape == (8, 3, 16, 16) and x[2].shape == (8, 32, 24) for x in a)
    assert all(
        torch.equal(x, y) for p, q in zip(a, b, strict=True) for x, y in zip(p, q, strict=True)
    )
    assert not torch.equal(clips, torch.cat([x[0] for x in c]))
    # The shuffle crosses units: some batch mixes clips of different faces shards.
    unit_of = {int(c): u for u, spec in enumerate(s.units) for c in spec.clips}
    assert any(len({unit_of[int(c)] for c in x[0]}) > 1 for x in a)


def test_the_shuffle_buffer_stays_bounded(
    shards: tuple[Path, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    draw = stream_module._draw

    def spy(buf: list[torch.Tensor], n: int, gen: torch.Generator) -> Any:
        sizes.append(len(buf[0]))
        return draw(buf, n, gen)

    monkeypatch.setattr(stream_module, "_draw", spy)
    s = open_stream(shards, buffer_clips=10)
    list(s.batches(3, 8, 24, True))
    largest_unit = max(len(u.clips) for u in s.units)
    assert sizes and max(sizes) <= 10 + 8 + largest_unit


def test_cached_units_are_not_read_again_and_give_the_same_batches(
    shards: tuple[Path, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[Path] = []
    read = stream_module._read_rows
    monkeypatch.setattr(stream_module, "_read_rows", lambda p, *a: reads.append(p) or read(p, *a))
    plain = list(open_stream(shards).batches(4, 8, 24, True))
    cached = open_stream(shards, cache_mb=64)
    list(cached.batches(4, 8, 24, True))
    before = len(reads)
    again = list(cached.batches(4, 8, 24, True))
    assert len(reads) == before  # the second epoch read nothing
    assert all(
        torch.equal(x, y)
        for p, q in zip(plain, again, strict=True)
        for x, y in zip(p, q, strict=True)
    )


def test_streamed_embeddings_equal_the_in_memory_ones(shards: tuple[Path, ...]) -> None:
    torch.manual_seed(0)
    enc = Encoders(CFG).eval()
    f_mem, v_mem = embed_clips(enc, load_pairs(*shards, ("train", "val"), 16), torch.device("cpu"))
    s = StreamData(*shards, ("train", "val"), 16)
    f_s, v_s = embed_clips(enc, s, torch.device("cpu"))
    torch.testing.assert_close(f_s, f_mem, atol=1e-5, rtol=0)
    torch.testing.assert_close(v_s, v_mem, atol=1e-5, rtol=0)


@pytest.mark.parametrize("workers", [0, 2])
def test_training_from_the_stream_is_deterministic_and_resumes(
    shards: tuple[Path, ...], workers: int, tmp_path: Path
) -> None:
    """bipseudo (per-clip memory rows indexed by the batch's global clip indices) from the stream:
    the same weights twice, and after a run stopped at epoch 1 and resumed."""
    from pipeline.params import BipseudoSection

    section = BipseudoSection(
        tau=0.1, proto_tau=0.1, clusters=[3, 4], start_epoch=1, every_epochs=1,
        memory_momentum=0.5, kmeans_iters=5, weight_pseudo=1.0, weight_pull=0.5,
        weight_push=1.0, shared_residual=True, pseudo_labels=True, pull=True, push=True,
    )  # fmt: skip
    data = open_stream(shards, workers=workers, buffer_clips=10)

    def run(out: Path, epochs: int) -> tuple[Encoders, list[dict[str, float]]]:
        cfg = replace(CFG, epochs=epochs, head="shared_residual")
        return train(
            data, BiPseudo(section, len(data), 16, 5), section, cfg, out, torch.device("cpu")
        )

    a, hist = run(tmp_path / "a", 2)
    b, _ = run(tmp_path / "b", 2)
    run(tmp_path / "c", 1)
    c, hist_c = run(tmp_path / "c", 2)
    assert len(hist) == 2 and all(np.isfinite(r["loss"]) for r in hist)
    assert hist_c == hist
    for x, y, z in zip(
        a.state_dict().values(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y) and torch.equal(x, z)
