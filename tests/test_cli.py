"""The ``voxface`` command line on a tiny rendered corpus: its rankings are evaluation's, its
exported embeddings reload exactly, the index finds what brute force finds, bad input is one line
and exit status 2, and a model file that carries code is refused without running it."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from pipeline.cli import main
from pipeline.evaluate.scoring import _ranked, model_embeddings
from pipeline.params import CidSection, load_params
from pipeline.preprocess.face_tracks import face_shard
from pipeline.preprocess.jpeg import decode_jpeg
from pipeline.preprocess.media import read_audio, read_frames
from pipeline.preprocess.shards import clip_refs
from pipeline.preprocess.voice_features import voice_shard
from pipeline.schema import (
    FACE_FRAMES,
    FAILURES,
    MANIFEST,
    VOICE_FEATURES,
    read_table,
    write_table,
)
from pipeline.tool import embed as em
from pipeline.train.loop import (
    ModelFileError,
    load_model,
    load_state,
    save_model,
    train,
)
from pipeline.train.methods.cid import CID
from pipeline.train.pairs import load_pairs
from tests.conftest import REPO
from tests.test_stages import _manifest
from tests.test_train import CFG as TRAIN_CFG

PARAMS = str(REPO / "params.yaml")
CFG = replace(TRAIN_CFG, epochs=2, batch_size=4, seed=3)  # a tiny cid model


@dataclass(frozen=True)
class Setup:
    root: Path
    manifest: Path
    faces: Path
    voice: Path
    model: Path
    files: dict[str, Path]  # clip key -> its video


@pytest.fixture(scope="module")
def setup(
    small_corpus: tuple[Path, pd.DataFrame, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> Setup:
    """The stages' shards of the corpus (face_shard, voice_shard with params.yaml's settings, as
    the faces and voice stages run them) and a tiny cid model trained on them."""
    root, clips, _ = small_corpus
    tmp = tmp_path_factory.mktemp("cli")
    manifest = _manifest(root, clips, tmp / "clips.parquet")
    s = em.settings(Path(PARAMS))
    refs = clip_refs(read_table(manifest, MANIFEST))
    faces, voice = tmp / "faces", tmp / "voice"
    faces.mkdir()
    voice.mkdir()
    assert not face_shard(refs, root, s.face, faces / "faces-00000.parquet", 60).failures
    assert not voice_shard(refs, root, s.voice, voice / "voice-00000.parquet", 60).failures
    failure = {"clip_key": "zz/bad/00001", "media_path": "zz.mp4", "reason": "no_face"}
    failure |= {"error_type": "Check", "message": "no face with prob >= 0.8 in 2 sampled frames"}
    write_table(pd.DataFrame([failure]), faces / "failures.parquet", FAILURES)
    data = load_pairs(manifest, faces, voice, ("train",), s.face_size)
    torch.manual_seed(0)
    enc, _ = train(
        data, CID(CidSection(tau=0.1)), CidSection(tau=0.1), CFG, tmp / "state", torch.device("cpu")
    )
    save_model(tmp / "model.pt", CFG, "cid", enc)
    files = {r.clip_key: root / r.media_path for r in refs}
    return Setup(root, manifest, faces, voice, tmp / "model.pt", files)


def _run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _listing(out: str) -> list[tuple[float, str]]:
    """(score, clip) of each ranked line of ``match`` / ``index query``."""
    rows = [line.split() for line in out.splitlines()[1:]]
    return [(float(r[1]), r[2]) for r in rows]


def test_match_ranks_faces_as_evaluation_does(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    enc, _ = load_model(setup.model, torch.device("cpu"))
    train_params = load_params(PARAMS).train
    emb = model_embeddings(
        enc, setup.manifest, setup.faces, setup.voice, train_params, torch.device("cpu"), ("train",)
    )
    m = read_table(setup.manifest, MANIFEST)
    identity = dict(zip(m["clip_key"], m["identity"], strict=True))
    keys = emb.clip_keys
    # Evaluation's ranked examples (ranked.json): each identity's first voice against every face.
    ranked = _ranked(emb, keys, identity, n=len(set(identity.values())), top=len(keys))
    assert len(ranked) == 4
    by_path = {str(p): k for k, p in setup.files.items()}
    for entry in ranked:
        rc, out, err = _run(
            capsys, "match", "--model", setup.model, "--params", PARAMS,
            "--voice", setup.files[entry["probe"]], "--faces", *setup.files.values(),
        )  # fmt: skip
        assert rc == 0, err
        got = [(score, by_path[clip]) for score, clip in _listing(out)]
        assert [k for _, k in got] == [r["clip_key"] for r in entry["ranked"]]
        np.testing.assert_allclose(
            [s for s, _ in got], [r["score"] for r in entry["ranked"]], atol=2e-4
        )
    # The embeddings behind the rankings: the tool's, from the raw media, are evaluation's, from
    # the shards.
    prepared = em.prepare(list(setup.files.values()), em.settings(Path(PARAMS)), em.MODALITIES)
    frame = em.embed(em.open_model(setup.model), prepared)
    for modality, want in (("face", emb.face), ("voice", emb.voice)):
        clips, x = em.matrix(frame, modality)
        np.testing.assert_allclose(x, want[emb.rows([by_path[c] for c in clips])], atol=1e-5)


def _wav(path: Path, audio: np.ndarray, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def test_embed_exports_reload_exactly_and_the_index_finds_them(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = next(iter(setup.files.values()))
    _, frames = read_frames(video, 1.0)
    still = tmp_path / "still.png"
    Image.fromarray(frames[0]).save(still)
    crop = tmp_path / "crop.png"
    Image.fromarray(decode_jpeg(read_table(setup.faces / "faces-00000.parquet", FACE_FRAMES)
                                .crop_jpeg.iloc[0])).save(crop)  # fmt: skip
    speech = _wav(tmp_path / "speech.wav", read_audio(video))
    inputs = [*setup.files.values(), still, speech]
    out = tmp_path / "emb.parquet"
    rc, text, err = _run(
        capsys, "embed", "--model", setup.model, "--params", PARAMS, *inputs, "--out", out
    )
    assert rc == 0, err
    assert "9 face and 9 voice embeddings of 10 files" in text
    assert pq.read_schema(out).field("embedding").type == pa.list_(pa.float32())
    assert not list(tmp_path.glob(".*tmp*"))  # written through a temporary file, renamed
    got = em.read_embeddings(out)
    model = em.open_model(setup.model)
    want = em.embed(model, em.prepare(inputs, em.settings(Path(PARAMS)), em.MODALITIES))
    assert list(got["clip"]) == list(want["clip"]) == sorted(want["clip"])
    assert list(got["modality"]) == list(want["modality"])
    for g, w in zip(got["embedding"], want["embedding"], strict=True):
        assert g.dtype == w.dtype == np.float32 and np.array_equal(g, w)
    assert set(got["method"]) == {"cid"} and set(got["model"]) == {str(setup.model)}
    # --aligned: the stored crop of the video's first frame is taken as the face itself.
    aligned = em.embed(model, em.prepare([crop], em.settings(Path(PARAMS)), ("face",), True))
    assert aligned["embedding"].iloc[0].shape == (CFG.embed_dim,)

    idx = tmp_path / "idx"
    rc, text, err = _run(capsys, "index", "build", out, "--out", idx)
    assert rc == 0 and "9 face embeddings, 9 voice embeddings" in text, err
    faces, fx = em.matrix(got, "face")
    v = got[(got["clip"] == str(video)) & (got["modality"] == "voice")]["embedding"].iloc[0]
    s = fx @ v
    best = np.argsort(-s, kind="stable")[:5]
    rc, text, err = _run(
        capsys, "index", "query", idx, "--embedding-from", out, "--clip", video,
        "--modality", "voice", "-k", "5",
    )  # fmt: skip
    assert rc == 0, err
    # faiss's scores are brute force's; the order too, but for near ties (the still image is a
    # frame of ``video``, whose face it nearly equals).
    hits = _listing(text)
    np.testing.assert_allclose([h for h, _ in hits], s[best], atol=6e-5)  # printed: 4 places
    assert {c for _, c in hits} == {faces[j] for j in best}
    rc, text2, err = _run(
        capsys, "index", "query", idx, "--voice", video, "--model", setup.model,
        "--params", PARAMS, "-k", "5",
    )  # fmt: skip
    assert rc == 0 and _listing(text2) == _listing(text), err
    # A query embedded with another model than the index's is refused.
    other = tmp_path / "other.pt"
    save_model(other, CFG, "cid", load_model(setup.model, torch.device("cpu"))[0].apply(_zero))
    rc, _, err = _run(
        capsys, "index", "query", idx, "--voice", video, "--model", other, "--params", PARAMS
    )
    assert rc == 2 and "the query's model differs" in err


def _zero(m: torch.nn.Module) -> None:
    for p in m.parameters(recurse=False):
        p.data.zero_()


def test_inspect_shows_the_shards_rows_and_draws_a_sheet(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = next(iter(setup.files))
    frames = read_table(setup.faces / "faces-00000.parquet", FACE_FRAMES)
    frames = frames[frames.clip_key == key]
    sheet = tmp_path / "sheet.png"
    dirs = ("--faces", setup.faces, "--voice", setup.voice)
    rc, out, err = _run(capsys, "inspect", key, *dirs, "--sheet", sheet)
    assert rc == 0, err
    assert f"faces: {len(frames)} frames with the clip's face" in out
    for r in frames.itertuples():
        assert f"{r.time_s:6.2f}  {r.frame_index:11d}  {r.prob:.4f}" in out
    v = (
        read_table(setup.voice / "voice-00000.parquet", VOICE_FEATURES)
        .set_index("clip_key")
        .loc[key]
    )
    segs = ", ".join(
        f"{a:.2f}-{b:.2f}" for a, b in zip(v.segment_start_s, v.segment_end_s, strict=True)
    )
    assert f"segments (s): {segs}\n" in out
    assert f"features: fbank64, {v.n_frames} frames x 64 bins" in out
    with Image.open(sheet) as im:
        assert im.size[0] == 112 * len(frames)
    rc, out, err = _run(capsys, "inspect", "zz/bad/00001", *dirs)
    assert rc == 0 and "faces: failed (no_face, Check): no face with prob >= 0.8" in out
    rc, _, err = _run(capsys, "inspect", "no/such/clip", *dirs)
    assert rc == 2 and err.startswith("voxface: error: no/such/clip: no such clip")


class _RunsCode:
    """Pickles as a call of ``open(marker, "w")``: loading it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _carrying_code(path: Path, marker: Path) -> Path:
    state = torch.load(path, weights_only=True)
    torch.save({**state, "method": _RunsCode(marker)}, path.with_name("bad.pt"))
    return path.with_name("bad.pt")


def test_a_model_file_carrying_code_is_refused_without_running_it(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    # The file does carry code: a trusting load runs it.
    control = tmp_path / "control"
    torch.load(_carrying_code(Path(setup.model), control), weights_only=False)
    assert control.exists()
    bad = _carrying_code(Path(setup.model), marker)
    with pytest.raises(ModelFileError, match="refused"):
        load_model(bad, torch.device("cpu"))
    with pytest.raises(ModelFileError, match="refused"):
        load_state(bad)
    rc, out, err = _run(capsys, "embed", "--model", bad, next(iter(setup.files.values())),
                        "--out", tmp_path / "e.parquet")  # fmt: skip
    assert rc == 2 and out == ""
    assert err == f"voxface: error: {bad}: refused: it holds objects other than tensors and " \
        "plain data (io.open), whose loading could run code\n"  # fmt: skip
    # A checkpoint that carries code stops training instead of running.
    (tmp_path / "state").mkdir()
    os.replace(bad, tmp_path / "state" / "checkpoint.pt")
    data = load_pairs(setup.manifest, setup.faces, setup.voice, ("train",), 64)
    with pytest.raises(ModelFileError, match="checkpoint.pt: refused"):
        train(
            data,
            CID(CidSection(tau=0.1)),
            CidSection(tau=0.1),
            CFG,
            tmp_path / "state",
            torch.device("cpu"),
        )
    assert not marker.exists() and not (tmp_path / "e.parquet").exists()
    # The installed command's way: a fresh interpreter, exit status 2, one line, no traceback.
    bad, video = _carrying_code(Path(setup.model), marker), next(iter(setup.files.values()))
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "match", "--model", str(bad), "--voice", str(video),
         "--faces", str(video)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"voxface: error: {bad}: refused")
    assert not marker.exists()


def _bad_inputs(setup: Setup, tmp: Path) -> list[tuple[list[str | Path], str]]:
    """(arguments, the one line they must print) per bad input."""
    video = next(iter(setup.files.values()))
    model: list[str | Path] = ["--model", setup.model, "--params", PARAMS]
    grey = tmp / "grey.png"
    Image.fromarray(np.full((224, 224, 3), 128, np.uint8)).save(grey)
    silent = _wav(tmp / "silent.wav", np.zeros(16000 * 2, np.float32))
    empty = tmp / "empty.mp4"
    empty.write_bytes(b"")
    junk = tmp / "junk.png"
    junk.write_bytes(b"not an image")
    (tmp / "notes.txt").write_text("not media")
    state = torch.load(setup.model, weights_only=True)
    models = {}
    for name, content in (
        ("other_method", {**state, "method": "oracle"}),
        ("format2", {**state, "format": 2}),
        ("checkpoint", {"digest": "x", "epoch": 1, "encoders": state["encoders"]}),
    ):
        models[name] = tmp / f"{name}.pt"
        torch.save(content, models[name])
    faces: list[str | Path] = ["--faces", video]
    return [
        (["match", *model, "--voice", tmp / "missing.wav", *faces],
         f"{tmp / 'missing.wav'}: file not found"),
        (["match", *model, "--voice", empty, *faces], f"{empty}: unreadable: empty file"),
        (["match", *model, "--voice", video, "--faces", junk],
         f"{junk}: cannot read the image (UnidentifiedImageError)"),
        (["match", *model, "--voice", video, "--faces", grey], f"{grey}: no face found: "),
        (["match", *model, "--voice", silent, *faces], f"{silent}: no speech found: 0.00 s"),
        (["embed", "--model", models["other_method"], video, "--out", tmp / "e.parquet"],
         f"{models['other_method']}: a model of method 'oracle'; this tool knows cid, "),
        (["embed", "--model", models["format2"], video, "--out", tmp / "e.parquet"],
         f"{models['format2']}: model file format 2, this code reads format 1"),
        (["embed", "--model", models["checkpoint"], video, "--out", tmp / "e.parquet"],
         f"{models['checkpoint']}: not a model.pt (no config, method; holds digest, encoders"),
        (["embed", "--model", tmp / "none.pt", video, "--out", tmp / "e.parquet"],
         f"{tmp / 'none.pt'}: model file not found"),
        (["embed", *model, tmp / "notes.txt", "--out", tmp / "e.parquet"],
         f"{tmp / 'notes.txt'}: not a video, image or audio file (suffix '.txt')"),
        (["index", "build", tmp / "grey.png", "--out", tmp / "idx"],
         f"{tmp / 'grey.png'}: not a readable Parquet file"),
    ]  # fmt: skip


def test_each_bad_input_is_one_line_and_status_2(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, line in _bad_inputs(setup, tmp_path):
        rc, out, err = _run(capsys, *argv)
        assert rc == 2, (argv, err)
        assert err.startswith(f"voxface: error: {line}"), (err, line)
        assert err.count("\n") == 1 and out == "", err
    assert not (tmp_path / "e.parquet").exists() and not (tmp_path / "idx").exists()
