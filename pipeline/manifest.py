"""Index a dataset root into the clip manifest and assign identity splits once.

Layouts (``shared/docs/VOXCELEB.md``):

- ``voxceleb2`` / ``synth``: ``mp4/<id>/<video>/<utt>.mp4`` (and audio-only ``aac/.../*.m4a``);
- ``voxceleb1``: ``wav/<id>/<video>/<utt>.wav`` with 1 fps face crops under
  ``<faces_dir>/<VGGFace1 name>/1.6/<video>/*.jpg`` joined through ``vox1_meta.csv``.

Metadata: VoxCeleb1's (tab-separated; the synthetic corpus writes the same format) or VoxCeleb2's
(comma-separated with trailing spaces in header and values). Splits: identity-disjoint train / val
/ unseen-unheard test drawn from a seed (stratified by gender), plus held-out videos of training
identities as the seen-heard test; or imported from a published split file.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.params import DataParams, ManifestParams


class ManifestError(ValueError):
    """Malformed input; the message names the file and the problem."""


_ID_RE = re.compile(r"^id\d{5}$")
_UTT_RE = re.compile(r"^\d{5}\.(mp4|m4a|wav)$")


# ---------------------------------------------------------------- metadata


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise ManifestError(f"{path}: metadata file not found") from e
    except IsADirectoryError as e:
        raise ManifestError(f"{path}: is a directory, expected a metadata CSV file") from e
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 text ({e})") from e


def read_meta(path: Path | str) -> pd.DataFrame:
    """Read a VoxCeleb1- or VoxCeleb2-style metadata CSV into a normalised frame.

    Returns columns ``identity``, ``name`` (or null), ``gender`` (``m``/``f``), ``nationality``
    (or null) and ``set``. The delimiter is sniffed (tab for VoxCeleb1, comma for VoxCeleb2);
    surrounding spaces in header and values are stripped. Raises :class:`ManifestError` naming
    the file and the problem (missing columns, bad gender, duplicate identities, ...).
    """
    p = Path(path)
    text = _read_text(p).replace("\r\n", "\n").replace("\r", "\n")
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if not lines:
        raise ManifestError(f"{p}: metadata file is empty")
    delim = "\t" if "\t" in lines[0] else ","
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delim))
    header = [h.strip() for h in rows[0]]
    norm = {h.lower().replace("_", " "): i for i, h in enumerate(header)}
    id_col = next((norm[k] for k in ("voxceleb1 id", "voxceleb2 id") if k in norm), None)
    if id_col is None or "gender" not in norm:
        raise ManifestError(
            f"{p}: header {header} lacks an identity column ('VoxCeleb1 ID' or 'VoxCeleb2 ID') "
            "and/or 'Gender'"
        )
    name_col = next((norm[k] for k in ("vggface1 id", "vggface2 id") if k in norm), None)
    nat_col = norm.get("nationality")
    set_col = norm.get("set")
    records = []
    for lineno, row in enumerate(rows[1:], start=2):
        vals = [v.strip() for v in row]
        if len(vals) != len(header):
            raise ManifestError(
                f"{p}: line {lineno} has {len(vals)} fields, header has {len(header)}"
            )
        ident = vals[id_col]
        if not _ID_RE.match(ident):
            raise ManifestError(
                f"{p}: line {lineno}: identity {ident!r} is not of the form idNNNNN"
            )
        gender = vals[norm["gender"]].lower()
        if gender not in ("m", "f"):
            raise ManifestError(
                f"{p}: line {lineno}: gender {vals[norm['gender']]!r} is not 'm' or 'f'"
            )
        records.append(
            {
                "identity": ident,
                "name": vals[name_col] if name_col is not None else None,
                "gender": gender,
                "nationality": vals[nat_col] if nat_col is not None and vals[nat_col] else None,
                "set": vals[set_col] if set_col is not None else None,
            }
        )
    meta = pd.DataFrame.from_records(
        records, columns=["identity", "name", "gender", "nationality", "set"]
    )
    dup = meta["identity"][meta["identity"].duplicated()]
    if len(dup):
        raise ManifestError(f"{p}: identity {dup.iloc[0]!r} appears more than once")
    return meta


# ---------------------------------------------------------------- scanning


@dataclass
class Scan:
    """Clips found under a root, plus what was skipped and why."""

    clips: list[dict[str, object]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)


def _subdirs(path: Path) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return sorted((e for e in it if e.is_dir()), key=lambda e: e.name)


def _files(path: Path) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return sorted((e for e in it if e.is_file()), key=lambda e: e.name)


def _scan_tree(root: Path, top: str, ext: str, kind: str, scan: Scan) -> None:
    """Walk ``root/top/<id>/<video>/<utt>.<ext>`` appending clips (``kind``) to ``scan``."""
    base = root / top
    for ident in _subdirs(base):
        if not _ID_RE.match(ident.name):
            scan.skipped.append((f"{top}/{ident.name}", "folder name is not an identity (idNNNNN)"))
            continue
        for video in _subdirs(Path(ident.path)):
            for f in _files(Path(video.path)):
                rel = f"{top}/{ident.name}/{video.name}/{f.name}"
                if not f.name.endswith(f".{ext}"):
                    continue  # unrelated files (e.g. .txt) are ignored
                if not _UTT_RE.match(f.name):
                    scan.skipped.append((rel, "file name is not an utterance number (NNNNN)"))
                    continue
                size = f.stat().st_size
                if size == 0:
                    scan.skipped.append((rel, "empty file"))
                    continue
                scan.clips.append(
                    {
                        "identity": ident.name,
                        "video_id": video.name,
                        "utterance": f.name.split(".")[0],
                        "media_path": rel,
                        "media_kind": kind,
                        "face_dir": None,
                        "n_face_crops": 0,
                        "size_bytes": size,
                    }
                )


def scan_voxceleb2(root: Path) -> Scan:
    """Clips of a VoxCeleb2-layout root (``mp4/`` videos; ``aac/`` audio where no mp4 exists)."""
    scan = Scan()
    if (root / "mp4").is_dir():
        _scan_tree(root, "mp4", "mp4", "video", scan)
    if (root / "aac").is_dir():
        audio = Scan()
        _scan_tree(root, "aac", "m4a", "audio", audio)
        have = {(c["identity"], c["video_id"], c["utterance"]) for c in scan.clips}
        scan.clips += [
            c for c in audio.clips if (c["identity"], c["video_id"], c["utterance"]) not in have
        ]
        scan.skipped += audio.skipped
    if not (root / "mp4").is_dir() and not (root / "aac").is_dir():
        raise ManifestError(f"{root}: no 'mp4/' or 'aac/' folder: not a VoxCeleb2-layout root")
    return scan


def scan_voxceleb1(root: Path, faces_dir: Path, meta: pd.DataFrame) -> Scan:
    """Clips of a VoxCeleb1 root: ``wav/`` utterances joined with their video's face crops."""
    if not (root / "wav").is_dir():
        raise ManifestError(f"{root}: no 'wav/' folder: not a VoxCeleb1-layout root")
    if not faces_dir.is_dir():
        raise ManifestError(f"{faces_dir}: face-crop folder (data.faces_dir) not found")
    scan = Scan()
    _scan_tree(root, "wav", "wav", "audio", scan)
    names = dict(zip(meta["identity"], meta["name"], strict=True))
    crops: dict[tuple[str, str], int] = {}
    kept = []
    for clip in scan.clips:
        ident, video = str(clip["identity"]), str(clip["video_id"])
        name = names.get(ident)
        if name is None:
            kept.append(clip)  # reported later as "identity not in metadata"
            continue
        key = (ident, video)
        if key not in crops:
            d = faces_dir / name / "1.6" / video
            crops[key] = (
                sum(1 for e in os.scandir(d) if e.name.endswith(".jpg")) if d.is_dir() else 0
            )
        if crops[key] == 0:
            scan.skipped.append((str(clip["media_path"]), "no face crops for this video"))
            continue
        rel_faces = os.path.relpath(faces_dir / name / "1.6" / video, root)
        clip.update(media_kind="audio_crops", face_dir=rel_faces, n_face_crops=crops[key])
        kept.append(clip)
    scan.clips = kept
    return scan


# ---------------------------------------------------------------- splits


def read_split_file(path: Path | str) -> dict[str, str]:
    """A published identity split: identity -> one of ``train``/``val``/``test_unseen``/``seen``.

    ``path`` is either a Learnable-PINs ``identity_splits.txt`` (one ``<identity> <code>`` or
    ``<code> <identity>`` per line; 1 train, 2 val, 3 seen-heard test, 4 unseen-unheard test;
    code 3 returns ``"seen"``: a training identity whose held-out videos form the seen-heard
    test) or a folder with the Wen split's ``vox1_{train,val,test}.csv`` (CRLF; rows whose
    ``Set`` is ``none`` are skipped).
    """
    p = Path(path)
    if p.is_dir():
        out: dict[str, str] = {}
        for part, split in (("train", "train"), ("val", "val"), ("test", "test_unseen")):
            f = p / f"vox1_{part}.csv"
            meta = read_meta(f)
            if meta["set"].isna().all():
                raise ManifestError(f"{f}: no 'Set' column")
            for ident, s in zip(meta["identity"], meta["set"], strict=True):
                if str(s).lower() == "none":
                    continue
                if ident in out:
                    raise ManifestError(f"{f}: identity {ident} is also in the {out[ident]} split")
                out[ident] = split
        return out
    codes = {"1": "train", "2": "val", "3": "seen", "4": "test_unseen"}
    out = {}
    for lineno, line in enumerate(_read_text(p).splitlines(), start=1):
        toks = line.replace(",", " ").split()
        if not toks:
            continue
        if len(toks) != 2:
            raise ManifestError(f"{p}: line {lineno}: expected '<identity> <code>', got {line!r}")
        code, ident = (toks[0], toks[1]) if toks[0] in codes else (toks[1], toks[0])
        if code not in codes or not _ID_RE.match(ident):
            raise ManifestError(
                f"{p}: line {lineno}: expected an identity and a code 1-4, got {line!r}"
            )
        if ident in out:
            raise ManifestError(f"{p}: line {lineno}: identity {ident} listed twice")
        out[ident] = codes[code]
    if not out:
        raise ManifestError(f"{p}: split file lists no identities")
    return out


def draw_identity_splits(
    identities: pd.DataFrame, params: ManifestParams, seed: int
) -> dict[str, str]:
    """Identity-disjoint train / val / test_unseen, stratified by gender, from ``seed``.

    ``identities`` has columns ``identity`` and ``gender``. Every split that should be non-empty
    gets at least one identity per gender present. Returns identity -> split.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    for _, group in identities.sort_values("identity").groupby("gender", dropna=False, sort=True):
        ids = group["identity"].to_numpy()[rng.permutation(len(group))]
        n = len(ids)
        n_train = max(1, round(n * params.train_fraction))
        n_val = round(n * params.val_fraction)
        if n - n_train - n_val < 1 and n >= 2:
            n_train = max(1, n - n_val - 1)
            n_val = n - n_train - 1
        for i, ident in enumerate(ids):
            out[str(ident)] = (
                "train" if i < n_train else "val" if i < n_train + n_val else "test_unseen"
            )
    return out


def hold_out_videos(
    clips: pd.DataFrame, candidates: set[str], per_identity: int, fraction: float, seed: int
) -> set[tuple[str, str]]:
    """(identity, video) pairs held out as seen-heard test: ``per_identity`` videos of a
    ``fraction`` of the candidate identities, always leaving each at least one training video."""
    rng = np.random.default_rng(seed + 1)
    held: set[tuple[str, str]] = set()
    videos = clips[["identity", "video_id"]].drop_duplicates().sort_values(["identity", "video_id"])
    pool = sorted(candidates & set(videos["identity"]))
    chosen = set(rng.permutation(np.array(pool, dtype=object))[: round(len(pool) * fraction)])
    for ident, group in videos.groupby("identity", sort=True):
        if ident not in chosen:
            continue
        vids = group["video_id"].to_numpy()
        k = min(per_identity, len(vids) - 1)
        for v in rng.choice(vids, size=k, replace=False) if k > 0 else []:
            held.add((str(ident), str(v)))
    return held


# ---------------------------------------------------------------- the manifest


@dataclass
class ManifestResult:
    clips: pd.DataFrame  # rows of schema.MANIFEST
    skipped: pd.DataFrame  # rows of schema.MANIFEST_SKIPPED
    report: dict[str, object]


def build_manifest(
    data: DataParams, params: ManifestParams, seed: int, cwd: Path = Path()
) -> ManifestResult:
    """Scan ``data.root``, join metadata, assign splits; see the module docstring."""
    root = (cwd / data.root).resolve()
    if not root.is_dir():
        raise ManifestError(f"{root}: dataset root (data.root) not found or not a folder")
    meta = read_meta(cwd / data.meta)
    if data.layout == "voxceleb1":
        if data.faces_dir is None:
            raise ManifestError(
                "params.yaml: data.faces_dir must name the face-crop folder for voxceleb1"
            )
        scan = scan_voxceleb1(root, root / data.faces_dir, meta)
    else:
        scan = scan_voxceleb2(root)
    clips = pd.DataFrame(
        scan.clips,
        columns=[
            "identity",
            "video_id",
            "utterance",
            "media_path",
            "media_kind",
            "face_dir",
            "n_face_crops",
            "size_bytes",
        ],
    )
    skipped = list(scan.skipped)
    known = set(meta["identity"])
    unknown = ~clips["identity"].isin(known)
    skipped += [(p, "identity not in metadata") for p in clips.loc[unknown, "media_path"]]
    clips = clips[~unknown].merge(
        meta[["identity", "gender", "nationality"]], on="identity", how="left"
    )

    if data.split_file is not None:
        published = read_split_file(cwd / data.split_file)
        listed = clips["identity"].isin(published.keys())
        skipped += [(p, "identity not in split file") for p in clips.loc[~listed, "media_path"]]
        clips = clips[listed].copy()
        id_split = {k: ("train" if v == "seen" else v) for k, v in published.items()}
        seen_candidates = {k for k, v in published.items() if v == "seen"}
        seen_fraction = 1.0  # the file names the seen-heard identities itself
    else:
        present = meta[meta["identity"].isin(set(clips["identity"]))]
        id_split = draw_identity_splits(present, params, seed)
        seen_candidates = {k for k, v in id_split.items() if v == "train"}
        seen_fraction = params.seen_heard_fraction
    clips["split"] = clips["identity"].map(id_split)
    held = hold_out_videos(clips, seen_candidates, params.seen_heard_videos, seen_fraction, seed)
    is_held = [(i, v) in held for i, v in zip(clips["identity"], clips["video_id"], strict=True)]
    clips.loc[np.array(is_held, dtype=bool), "split"] = "test_seen"
    clips["clip_key"] = clips["identity"] + "/" + clips["video_id"] + "/" + clips["utterance"]
    if clips.empty:
        raise ManifestError(f"{root}: no usable clips found ({len(skipped)} skipped)")

    skipped_df = pd.DataFrame(skipped, columns=["path", "reason"])
    per_split = {
        s: {
            "clips": int((g := clips[clips["split"] == s]).shape[0]),
            "identities": int(g["identity"].nunique()),
            "videos": int(g[["identity", "video_id"]].drop_duplicates().shape[0]),
        }
        for s in ("train", "val", "test_unseen", "test_seen")
    }
    report: dict[str, object] = {
        "layout": data.layout,
        "clips": len(clips),
        "identities": int(clips["identity"].nunique()),
        "videos": int(clips[["identity", "video_id"]].drop_duplicates().shape[0]),
        "split_source": "file" if data.split_file is not None else "drawn",
        "splits": per_split,
        "skipped": len(skipped_df),
        "skipped_by_reason": dict(sorted(Counter(r for _, r in skipped).items())),
        "meta_identities_without_clips": len(known - set(clips["identity"])),
    }
    return ManifestResult(clips=clips, skipped=skipped_df, report=report)
