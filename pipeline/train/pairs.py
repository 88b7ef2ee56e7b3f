"""Training data from the feature shards: (face crop, voice crop) pairs from the same clip.

Everything a method needs is decoded once into compact tensors (faces as uint8, voices as
float16) with per-clip offsets, so that a batch is a few index operations: the CPU's time goes to
the model, not to JPEG decoding or slicing. Each clip carries its identity and video index
(Wen uses identity labels; CMPC keeps one memory row per video).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from pipeline.preprocess.jpeg import decode_jpeg
from pipeline.schema import FACE_FRAMES, MANIFEST, VOICE_FEATURES, features_of, read_table


@dataclass
class PairData:
    """Clips usable for training, with their face frames and voice features.

    faces: (F, 3, S, S) uint8; face_offsets: (C + 1,) int64 (clip c owns rows
    face_offsets[c]:face_offsets[c+1]); voices: (T, n_mels) float16; voice_offsets: (C + 1,);
    identity / video: (C,) int64 indices into ``identities`` / ``videos``.
    """

    clip_keys: list[str]
    faces: torch.Tensor
    face_offsets: torch.Tensor
    voices: torch.Tensor
    voice_offsets: torch.Tensor
    identity: torch.Tensor
    video: torch.Tensor
    identities: list[str]
    videos: list[str]

    def __len__(self) -> int:
        return len(self.clip_keys)


def _read_all(folder: Path, prefix: str, spec: object) -> pd.DataFrame:
    files = sorted(folder.glob(f"{prefix}-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{folder}: no {prefix}-*.parquet shards")
    return pd.concat([read_table(f, spec) for f in files], ignore_index=True)  # type: ignore[arg-type]


def load_pairs(
    manifest: Path, faces_dir: Path, voice_dir: Path, splits: tuple[str, ...], face_size: int
) -> PairData:
    """Clips of ``splits`` that have both a face track and voice features, in clip-key order."""
    m = read_table(manifest, MANIFEST)
    m = m[m["split"].isin(splits)]
    faces = _read_all(faces_dir, "faces", FACE_FRAMES)
    voices = _read_all(voice_dir, "voice", VOICE_FEATURES).set_index("clip_key")
    keys = sorted(set(m["clip_key"]) & set(faces["clip_key"]) & set(voices.index))
    if not keys:
        raise ValueError(f"no clip of splits {splits} has both faces and voice features")
    meta = m.set_index("clip_key").loc[keys]
    identities, videos, identity, video = label_clips(meta)
    return assemble(keys, faces, voices, identity, video, identities, videos, face_size)


def label_clips(
    meta: pd.DataFrame,
) -> tuple[list[str], list[str], torch.Tensor, torch.Tensor]:
    """The sorted identities and videos (``<identity>/<video_id>``) of the manifest rows ``meta``
    (indexed by clip key), and each row's index into them."""
    identities = sorted(set(meta["identity"]))
    videos = sorted(set(meta["identity"] + "/" + meta["video_id"]))
    id_index = {k: i for i, k in enumerate(identities)}
    vid_index = {k: i for i, k in enumerate(videos)}
    identity = torch.tensor([id_index[i] for i in meta["identity"]])
    video = torch.tensor(
        [vid_index[i + "/" + v] for i, v in zip(meta["identity"], meta["video_id"], strict=True)]
    )
    return identities, videos, identity, video


def assemble(
    keys: list[str],
    faces: pd.DataFrame,
    voices: pd.DataFrame,
    identity: torch.Tensor,
    video: torch.Tensor,
    identities: list[str],
    videos: list[str],
    face_size: int,
) -> PairData:
    """The PairData of the clips ``keys`` (sorted) from their FACE_FRAMES rows ``faces`` (other
    clips' rows are ignored) and their VOICE_FEATURES rows ``voices`` (indexed by clip key), crops
    resized to ``face_size``; ``identity`` / ``video``: the clips' indices into ``identities`` /
    ``videos``."""
    faces = faces[faces["clip_key"].isin(keys)].sort_values(["clip_key", "frame_index"])
    face_imgs, face_counts = [], faces.groupby("clip_key", sort=True).size().loc[keys].to_numpy()
    for data in faces["crop_jpeg"]:
        img = decode_jpeg(data)
        if img.shape[0] != face_size:
            img = np.asarray(
                Image.fromarray(img).resize((face_size, face_size), Image.Resampling.BILINEAR)
            )
        face_imgs.append(img)
    feats = [features_of(voices.loc[k]) for k in keys]
    return PairData(
        clip_keys=keys,
        faces=torch.from_numpy(np.stack(face_imgs)).permute(0, 3, 1, 2).contiguous(),
        face_offsets=torch.from_numpy(np.concatenate([[0], np.cumsum(face_counts)])),
        voices=torch.from_numpy(np.concatenate(feats).astype(np.float16)),
        voice_offsets=torch.from_numpy(np.concatenate([[0], np.cumsum([len(f) for f in feats])])),
        identity=identity,
        video=video,
        identities=identities,
        videos=videos,
    )


def sample_batch(
    data: PairData, clips: torch.Tensor, voice_frames: int, gen: torch.Generator, flip: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random face frame and one random ``voice_frames`` crop of each clip in ``clips``.

    Returns faces (B, 3, S, S) float in [0, 1] (randomly mirrored when ``flip``) and voices
    (B, n_mels, voice_frames) float; a voice shorter than the crop is repeated to length.
    """
    lo, hi = data.face_offsets[clips], data.face_offsets[clips + 1]
    pick = lo + (torch.rand(len(clips), generator=gen) * (hi - lo).float()).long()
    faces = data.faces[pick].float() / 255.0
    if flip:
        mirror = torch.rand(len(clips), generator=gen) < 0.5
        faces[mirror] = faces[mirror].flip(-1)
    vlo, vhi = data.voice_offsets[clips], data.voice_offsets[clips + 1]
    length = vhi - vlo
    start = (
        torch.rand(len(clips), generator=gen) * (length - voice_frames).clamp(min=0).float()
    ).long()
    idx = vlo[:, None] + (start[:, None] + torch.arange(voice_frames)[None, :]) % length[:, None]
    voices = data.voices[idx].float().transpose(1, 2)  # (B, n_mels, T)
    return faces, voices


def select_clips(data: PairData, clips: torch.Tensor) -> PairData:
    """The clips ``clips`` (indices, in that order) of ``data`` as a PairData of their own;
    identities and videos are re-indexed to those present."""
    f_parts = [data.faces[data.face_offsets[c] : data.face_offsets[c + 1]] for c in clips.tolist()]
    v_parts = [
        data.voices[data.voice_offsets[c] : data.voice_offsets[c + 1]] for c in clips.tolist()
    ]
    ids = sorted(set(data.identity[clips].tolist()))
    vids = sorted(set(data.video[clips].tolist()))
    id_map = {old: new for new, old in enumerate(ids)}
    vid_map = {old: new for new, old in enumerate(vids)}
    return PairData(
        clip_keys=[data.clip_keys[c] for c in clips.tolist()],
        faces=torch.cat(f_parts),
        face_offsets=torch.tensor([0, *np.cumsum([len(f) for f in f_parts])]),
        voices=torch.cat(v_parts),
        voice_offsets=torch.tensor([0, *np.cumsum([len(v) for v in v_parts])]),
        identity=torch.tensor([id_map[i] for i in data.identity[clips].tolist()]),
        video=torch.tensor([vid_map[v] for v in data.video[clips].tolist()]),
        identities=[data.identities[i] for i in ids],
        videos=[data.videos[v] for v in vids],
    )
