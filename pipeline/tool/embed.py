"""Embed a researcher's own files with a trained ``model.pt``, preprocessed as the stages do.

- Videos: the faces stage's :func:`~pipeline.preprocess.face_tracks.face_shard` (frames sampled at
  ``face.rate_fps``, MTCNN, the clip's face track, crops stored as JPEG) and the voice stage's
  :func:`~pipeline.preprocess.voice_features.voice_shard` (VAD, log-mel features stored as float16)
  run on them as they run on a shard of the corpus, into a temporary folder.
- Face images: the same detector, track choice and crop
  (:func:`~pipeline.preprocess.face_tracks.select_track`,
  :func:`~pipeline.preprocess.face_tracks.crop_face`), the crop passed through the stage's JPEG
  encoding; with ``aligned`` the image is taken as the face crop itself.
- Audio files: the voice stage's path alone.

Crops and features then become tensors as :mod:`pipeline.train.pairs` makes them for evaluation
(crops resized to ``train.face_size_px``) and are embedded by the evaluation's code
(:func:`~pipeline.train.loop.embed_faces`, :func:`~pipeline.train.loop.embed_voices`): a face is
the mean over its frames and their mirror images, a voice one pass over its whole speech.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from PIL import Image

from pipeline.params import MethodName, ParamsError, load_params
from pipeline.preprocess.face_tracks import (
    FaceConfig,
    crop_face,
    detector,
    face_shard,
    select_track,
)
from pipeline.preprocess.jpeg import decode_jpeg, encode_jpeg
from pipeline.preprocess.manifest import AUDIO_EXTS, IMAGE_EXTS, VIDEO_EXTS
from pipeline.preprocess.shards import ClipRef, ShardResult
from pipeline.preprocess.voice_features import VoiceConfig, voice_shard
from pipeline.schema import (
    FACE_FRAMES,
    VOICE_FEATURES,
    SchemaError,
    TableSchema,
    features_of,
    read_table,
)
from pipeline.schema import write_table as _write_table
from pipeline.train.loop import (
    Encoders,
    ModelFileError,
    embed_faces,
    embed_voices,
    load_model,
    model_state,
)


class ToolError(Exception):
    """Bad input for the command line: one line for the user, exit status 2."""


# The containers the manifest's generic layout indexes: what the stages decode, the tool takes.
VIDEO_SUFFIXES = tuple(sorted(VIDEO_EXTS))
IMAGE_SUFFIXES = tuple(sorted(IMAGE_EXTS))
AUDIO_SUFFIXES = tuple(sorted(AUDIO_EXTS))
MODALITIES = ("face", "voice")
CARRIES = {"video": ("face", "voice"), "image": ("face",), "audio": ("voice",)}

#: The embeddings file ``voxface embed`` writes: one row per (clip, modality).
EMBEDDINGS = TableSchema(
    name="voxface_embeddings",
    version=1,
    schema=pa.schema(
        [
            pa.field("clip", pa.string(), nullable=False),  # the file's path as given
            pa.field("modality", pa.string(), nullable=False),  # "face" | "voice"
            pa.field("embedding", pa.list_(pa.float32()), nullable=False),  # L2-normalised
            pa.field("model", pa.string(), nullable=False),  # the model.pt's path as given
            pa.field("method", pa.string(), nullable=False),
            pa.field("model_sha256", pa.string(), nullable=False),
        ]
    ),
    sort_by=("clip", "modality"),
)


def kind_of(path: Path) -> str:
    """``video``, ``image`` or ``audio`` by the file's suffix; a ToolError for a missing file or
    another suffix."""
    if not path.exists():
        raise ToolError(f"{path}: file not found")
    suffix = path.suffix.lower()
    for kind, suffixes in (
        ("video", VIDEO_SUFFIXES),
        ("image", IMAGE_SUFFIXES),
        ("audio", AUDIO_SUFFIXES),
    ):
        if suffix in suffixes:
            return kind
    raise ToolError(f"{path}: not a video, image or audio file (suffix {suffix or 'none'!r})")


def expand(items: Iterable[str], kinds: tuple[str, ...]) -> list[Path]:
    """Files and folders as files: a folder gives its files of ``kinds`` (by suffix), sorted."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f for f in p.iterdir() if f.is_file() and _suffix_kind(f.suffix) in kinds
            )
            if not found:
                raise ToolError(f"{p}: no {' or '.join(kinds)} files in the folder")
            out += found
        else:
            if kind_of(p) not in kinds:
                raise ToolError(f"{p}: a {kind_of(p)} file, expected {' or '.join(kinds)}")
            out.append(p)
    return out


def _suffix_kind(suffix: str) -> str | None:
    s = suffix.lower()
    if s in VIDEO_SUFFIXES:
        return "video"
    if s in IMAGE_SUFFIXES:
        return "image"
    if s in AUDIO_SUFFIXES:
        return "audio"
    return None


# ---------------------------------------------------------------- settings and the model


@dataclass(frozen=True)
class Settings:
    """The preprocessing of the ``faces`` and ``voice`` stages and evaluation's crop size."""

    face: FaceConfig
    voice: VoiceConfig
    face_size: int
    timeout_s: float


def settings(params_path: Path) -> Settings:
    """From ``params.yaml``'s ``face``, ``voice`` and ``train`` sections, through the stages' own
    conversions (so that a stage's setting and the tool's cannot drift apart)."""
    from stages._shards import decode_timeout_s
    from stages.faces import face_config
    from stages.voice import voice_config

    try:
        p = load_params(params_path)
    except ParamsError as e:  # its first lines, on one: the file, the error, the first field
        raise ToolError(" ".join(x.strip() for x in str(e).splitlines()[:3])) from e
    return Settings(
        face_config(p.face), voice_config(p.voice), p.train.face_size_px, decode_timeout_s()
    )


@dataclass(frozen=True)
class Model:
    path: Path
    method: str
    sha256: str
    encoders: Encoders
    device: torch.device


def known_methods() -> list[str]:
    base = list(get_args(MethodName))
    return [*base, *(f"lowshot_{m}" for m in base)]


def open_model(path: Path) -> Model:
    """A trained ``model.pt`` (read with ``weights_only``): ToolError for a missing file, a file
    that carries code, another file format or a method this code does not know."""
    from stages._runtime import device

    if not path.is_file():
        raise ToolError(f"{path}: model file not found")
    dev = device()
    try:
        state = model_state(path, dev)
        method = state["method"]
        if method not in known_methods():
            raise ToolError(
                f"{path}: a model of method {method!r}; this tool knows "
                f"{', '.join(known_methods())}"
            )
        encoders, _ = load_model(path, dev)
    except ModelFileError as e:
        raise ToolError(str(e)) from e
    except RuntimeError as e:  # load_state_dict: weights of other shapes than the config's
        raise ToolError(f"{path}: its weights do not fit its config") from e
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Model(path, str(method), digest, encoders, dev)


# ---------------------------------------------------------------- preprocessing


@dataclass
class Prepared:
    """Per input file: face crops (K, S, S, 3) uint8 at the model's face size, voice features
    (T, n_mels) float16, as evaluation reads them from the shards."""

    faces: dict[str, np.ndarray]
    voices: dict[str, np.ndarray]


def _resized(img: np.ndarray, size: int) -> np.ndarray:
    """A crop at ``size`` px, as :func:`pipeline.train.pairs.load_pairs` resizes stored crops."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))


#: The stages' failure reasons (schema.FAILURES) in words.
REASONS = {
    "decode": "unreadable",
    "no_audio": "no audio track",
    "no_video": "no video track",
    "no_face": "no face found",
    "no_speech": "no speech found",
    "timeout": "decoding timed out",
    "crash": "the decoder crashed",
}


def _first_failure(res: ShardResult, refs: dict[str, Path]) -> None:
    """A ToolError for a shard function's first failure row, naming the file."""
    if res.failures:
        f = res.failures[0]
        path, text = refs[f["clip_key"]], f["message"]
        reason = REASONS.get(f["reason"], f["reason"])
        if str(path) in text:
            text = text.replace(f"{path}: ", "", 1)
        raise ToolError(f"{path}: {reason}: {text}")


def _shard_rows(paths: Sequence[Path], stage: str, s: Settings, tmp: Path) -> pd.DataFrame:
    """The ``faces`` or ``voice`` stage's shard function run on ``paths`` as on a shard of the
    corpus (clip key: the path as given; media path: absolute, which replaces the root the
    function joins it to), its rows read back; its first failure raises a ToolError."""
    refs = [ClipRef(str(p), str(p.resolve()), "video", None) for p in paths]
    out = tmp / f"{stage}-00000.parquet"
    if stage == "faces":
        res, spec = face_shard(refs, Path.cwd(), s.face, out, s.timeout_s), FACE_FRAMES
    else:
        res, spec = voice_shard(refs, Path.cwd(), s.voice, out, s.timeout_s), VOICE_FEATURES
    _first_failure(res, {str(p): p for p in paths})
    return read_table(out, spec)


def video_faces(paths: Sequence[Path], s: Settings, tmp: Path) -> dict[str, np.ndarray]:
    """The faces stage's crops of each video."""
    if not paths:
        return {}
    rows = _shard_rows(paths, "faces", s, tmp)
    return {
        key: np.stack([_resized(decode_jpeg(bytes(j)), s.face_size) for j in g["crop_jpeg"]])
        for key, g in rows.groupby("clip_key", sort=False)
    }


def audio_voices(paths: Sequence[Path], s: Settings, tmp: Path) -> dict[str, np.ndarray]:
    """The voice stage's features of each file's audio."""
    if not paths:
        return {}
    rows = _shard_rows(paths, "voice", s, tmp)
    return {str(r["clip_key"]): features_of(r).astype(np.float16) for _, r in rows.iterrows()}


def image_face(path: Path, s: Settings, aligned: bool) -> np.ndarray:
    """(1, S, S, 3) uint8: the face of a still image, found and cropped as the faces stage does
    (or the image itself with ``aligned``)."""
    try:
        with Image.open(path) as im:
            frame = np.array(im.convert("RGB"))  # writable, as decoded video frames are
    except OSError as e:  # PIL's UnidentifiedImageError is an OSError
        raise ToolError(f"{path}: cannot read the image ({type(e).__name__})") from e
    if not aligned:
        det = detector(s.face.detector).detect(frame[None])[0]
        k = select_track([det], frame.shape[1], frame.shape[0], s.face.min_prob)[0]
        if k is None:
            raise ToolError(
                f"{path}: no face found: no detection with prob >= {s.face.min_prob} "
                f"({len(det.probs)} below it)"
            )
        crop = crop_face(frame, det.boxes[k], s.face.margin, s.face.crop_size_px)
        frame = decode_jpeg(encode_jpeg(crop, s.face.jpeg_quality))  # as the shards store it
    return _resized(frame, s.face_size)[None]


def prepare(
    paths: Sequence[Path], s: Settings, modalities: tuple[str, ...], aligned: bool = False
) -> Prepared:
    """Face crops of the videos and images, voice features of the videos and audio files
    (``modalities`` limits what is computed); the first bad file raises a ToolError."""
    kinds = {p: kind_of(p) for p in paths}
    for p, k in kinds.items():
        if not set(CARRIES[k]) & set(modalities):
            raise ToolError(f"{p}: {k} file, no {' or '.join(modalities)} in it")
    faces: dict[str, np.ndarray] = {}
    voices: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="voxface-") as d:
        tmp = Path(d)
        if "face" in modalities:
            faces |= video_faces([p for p in paths if kinds[p] == "video"], s, tmp)
            for p in paths:
                if kinds[p] == "image":
                    faces[str(p)] = image_face(p, s, aligned)
        if "voice" in modalities:
            voices |= audio_voices([p for p in paths if kinds[p] != "image"], s, tmp)
    return Prepared(faces, voices)


# ---------------------------------------------------------------- embeddings


def embed(model: Model, prepared: Prepared) -> pd.DataFrame:
    """The EMBEDDINGS rows (in memory, ``embedding`` as float32 arrays) of prepared inputs."""
    rows: list[dict[str, object]] = []
    for modality, items in (("face", prepared.faces), ("voice", prepared.voices)):
        if not items:
            continue
        keys = list(items)
        arrays = [items[k] for k in keys]
        offsets = torch.from_numpy(np.concatenate([[0], np.cumsum([len(a) for a in arrays])]))
        if modality == "face":
            x = torch.from_numpy(np.concatenate(arrays)).permute(0, 3, 1, 2).contiguous()
            emb = embed_faces(model.encoders, x, offsets, model.device)
        else:
            emb = embed_voices(
                model.encoders, torch.from_numpy(np.concatenate(arrays)), offsets, model.device
            )
        vectors = emb.numpy().astype(np.float32)
        rows += [
            {
                "clip": k,
                "modality": modality,
                "embedding": vectors[i],
                "model": str(model.path),
                "method": model.method,
                "model_sha256": model.sha256,
            }
            for i, k in enumerate(keys)
        ]
    frame = pd.DataFrame(rows, columns=EMBEDDINGS.schema.names)
    return frame.sort_values(["clip", "modality"], kind="mergesort").reset_index(drop=True)


def write_embeddings(frame: pd.DataFrame, out: Path) -> Path:
    """The EMBEDDINGS table, written atomically (temporary file, then rename)."""
    return _write_table(frame, out, EMBEDDINGS)


def read_embeddings(path: Path) -> pd.DataFrame:
    """An EMBEDDINGS file, ``embedding`` as float32 arrays; ToolError for another file."""
    try:
        frame = read_table(path, EMBEDDINGS)
    except SchemaError as e:
        raise ToolError(str(e).splitlines()[0]) from e
    frame["embedding"] = [np.asarray(v, dtype=np.float32) for v in frame["embedding"]]
    return frame


def matrix(frame: pd.DataFrame, modality: str) -> tuple[list[str], np.ndarray]:
    """(clips, (N, d) float32) of one modality's rows."""
    part = frame[frame["modality"] == modality]
    if part.empty:
        return [], np.zeros((0, 0), np.float32)
    return list(part["clip"]), np.stack(part["embedding"].to_list()).astype(np.float32)
