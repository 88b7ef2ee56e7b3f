"""Index a dataset root into the clip manifest and assign identity splits once.

Layouts (VoxCeleb1: Nagrani et al. 2017; VoxCeleb2: Chung et al. 2018):

- ``voxceleb2`` / ``synth``: ``mp4/<id>/<video>/<utt>.mp4`` (and audio-only ``aac/.../*.m4a``);
- ``voxceleb1``: ``wav/<id>/<video>/<utt>.wav`` with 1 fps face crops under
  ``<faces_dir>/<VGGFace1 name>/1.6/<video>/*.jpg`` joined through ``vox1_meta.csv``;
- ``generic``: any dataset (LRS3, CREMA-D, HDTF, GRID, a lab's own recordings). ``data.meta`` is a
  clip list, one row per clip (:func:`read_clip_list`): the media path (a video of any container
  FFmpeg reads, or an audio file plus a folder of face images), the identity, and optionally the
  video id, the utterance name, gender, nationality and age.

Every file inside the layout's media trees (or, for ``generic``, under the root) that does not
become a clip is a row of ``skipped.parquet`` with its reason (another container, a name that is
not an utterance number, an empty file, not listed in the clip list, ...).

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

#: Containers the generic layout indexes (whatever FFmpeg, through decord, decodes).
VIDEO_EXTS: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".mpg", ".mpeg", ".ts", ".3gp"}
)
AUDIO_EXTS: frozenset[str] = frozenset({".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus"})
IMAGE_EXTS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png"})


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


def _misplaced(base: Path, top: str, depth: int, scan: Scan) -> None:
    """Files at depth ``depth`` (0: ``top/``, 1: ``top/<id>/``) are not clips: skipped rows."""
    for f in _files(base):
        rel = f"{top}/{f.name}" if depth == 0 else f"{top}/{base.name}/{f.name}"
        scan.skipped.append((rel, f"file outside the {top}/<id>/<video>/ folders: not a clip"))


def _scan_tree(root: Path, top: str, ext: str, kind: str, scan: Scan) -> None:
    """Walk ``root/top/<id>/<video>/<utt>.<ext>`` appending clips (``kind``) to ``scan``; every
    other file of the tree becomes a skipped row with its reason."""
    base = root / top
    _misplaced(base, top, 0, scan)
    for ident in _subdirs(base):
        if not _ID_RE.match(ident.name):
            scan.skipped.append((f"{top}/{ident.name}", "folder name is not an identity (idNNNNN)"))
            continue
        _misplaced(Path(ident.path), top, 1, scan)
        for video in _subdirs(Path(ident.path)):
            for sub in _subdirs(Path(video.path)):
                for dirpath, dirnames, filenames in os.walk(sub.path):
                    dirnames.sort()
                    for name in sorted(filenames):
                        rel = os.path.relpath(os.path.join(dirpath, name), root)
                        scan.skipped.append(
                            (rel, f"file below the {top}/<id>/<video>/ folders: not a clip")
                        )
            for f in _files(Path(video.path)):
                rel = f"{top}/{ident.name}/{video.name}/{f.name}"
                if not f.name.endswith(f".{ext}"):
                    found = os.path.splitext(f.name)[1] or "(no extension)"
                    scan.skipped.append(
                        (
                            rel,
                            f"container {found} is not the layout's .{ext} under {top}/: "
                            "list such files in a generic-layout clip list (data.layout: generic)",
                        )
                    )
                    continue
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
        for c in audio.clips:
            if (c["identity"], c["video_id"], c["utterance"]) not in have:
                scan.clips.append(c)
            else:
                scan.skipped.append(
                    (str(c["media_path"]), "audio of a clip whose video is indexed (mp4/)")
                )
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


# ---------------------------------------------------------------- the generic layout

#: Columns of a generic clip list; ``path`` and ``identity`` are required.
CLIP_LIST_COLUMNS: tuple[str, ...] = (
    "path",
    "identity",
    "video_id",
    "utterance",
    "face_path",
    "gender",
    "nationality",
    "age",
)
_GENDER = {"m": "m", "male": "m", "man": "m", "f": "f", "female": "f", "woman": "f", "": None}
_NAME_RE = re.compile(r"^[^/\\\x00]+$")


def read_clip_list(path: Path | str) -> pd.DataFrame:
    """Read a generic-layout clip list (CSV, comma-separated, a header row).

    Columns (:data:`CLIP_LIST_COLUMNS`): ``path`` (the media file, relative to ``data.root``) and
    ``identity`` are required; ``video_id`` (default: the file's name without extension, i.e.
    every file its own recording), ``utterance`` (default: the same), ``face_path`` (for an audio
    file: a folder of face images, relative to ``data.root``), ``gender`` (m / f / male / female /
    empty), ``nationality`` and ``age`` (years) are optional; other columns are ignored. Returns
    one row per clip with every column (missing values null). Raises :class:`ManifestError`
    naming the file and line (a missing column, an empty path or identity, a name with ``/``, an
    unknown gender, the same clip twice, an identity whose attributes differ between rows).
    """
    p = Path(path)
    text = _read_text(p).replace("\r\n", "\n").replace("\r", "\n")
    reader = csv.reader(io.StringIO(text))
    # (line number in the file, row): blank lines are dropped but still count for the numbers.
    numbered = [(reader.line_num, r) for r in reader if any(v.strip() for v in r)]
    if not numbered:
        raise ManifestError(f"{p}: clip list is empty")
    rows = [r for _, r in numbered]
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in ("path", "identity") if c not in header]
    if missing:
        raise ManifestError(f"{p}: header {header} lacks the required column(s) {missing}")
    col = {c: header.index(c) for c in CLIP_LIST_COLUMNS if c in header}
    records: list[dict[str, object]] = []
    lines: list[int] = []  # the file line of each record
    seen: dict[str, int] = {}
    for lineno, row in numbered[1:]:
        vals = [v.strip() for v in row]
        if len(vals) != len(header):
            raise ManifestError(
                f"{p}: line {lineno} has {len(vals)} fields, header has {len(header)}"
            )
        rec: dict[str, object] = {
            c: (vals[i] or None) if c in col else None
            for c, i in ((c, col.get(c, -1)) for c in CLIP_LIST_COLUMNS)
        }
        if not rec["path"] or not rec["identity"]:
            raise ManifestError(f"{p}: line {lineno}: empty path or identity")
        stem = os.path.splitext(os.path.basename(str(rec["path"])))[0]
        rec["video_id"] = rec["video_id"] or stem
        rec["utterance"] = rec["utterance"] or stem
        for c in ("identity", "video_id", "utterance"):
            if not _NAME_RE.match(str(rec[c])):
                raise ManifestError(f"{p}: line {lineno}: {c} {rec[c]!r} must not contain '/'")
        g = str(rec["gender"] or "").lower()
        if g not in _GENDER:
            raise ManifestError(
                f"{p}: line {lineno}: gender {rec['gender']!r} is not m / f / male / female / empty"
            )
        rec["gender"] = _GENDER[g]
        if rec["age"] is not None:
            try:
                rec["age"] = float(str(rec["age"]))
            except ValueError:
                raise ManifestError(
                    f"{p}: line {lineno}: age {rec['age']!r} is not a number of years"
                ) from None
        key = f"{rec['identity']}/{rec['video_id']}/{rec['utterance']}"
        if key in seen:
            raise ManifestError(
                f"{p}: line {lineno}: clip {key} is also on line {seen[key]} (give the rows "
                "distinct video_id or utterance values)"
            )
        seen[key] = lineno
        records.append(rec)
        lines.append(lineno)
    frame = pd.DataFrame.from_records(records, columns=list(CLIP_LIST_COLUMNS))
    for attr in ("gender", "nationality", "age"):
        varying = frame.groupby("identity")[attr].nunique(dropna=True)
        if (varying > 1).any():
            ident = varying[varying > 1].index[0]
            values = frame.loc[(frame["identity"] == ident) & frame[attr].notna(), attr]
            first, other = values.index[0], values.index[values != values.iloc[0]][0]
            raise ManifestError(
                f"{p}: identity {ident!r} has several values of {attr} "
                f"({records[first][attr]!r} on line {lines[first]}, {records[other][attr]!r} on "
                f"line {lines[other]})"
            )
    return frame


def generic_meta(clip_list: pd.DataFrame) -> pd.DataFrame:
    """Per-identity metadata of a clip list, in :func:`read_meta`'s columns."""
    first = clip_list.groupby("identity", sort=True)[["gender", "nationality"]].first()
    return pd.DataFrame(
        {
            "identity": first.index.astype(str),
            "name": None,
            "gender": first["gender"].to_numpy(dtype=object),
            "nationality": first["nationality"].to_numpy(dtype=object),
            "set": None,
        }
    ).replace({np.nan: None})


def _rel(root: Path, path: str) -> str:
    return os.path.normpath(path if not os.path.isabs(path) else os.path.relpath(path, root))


def scan_generic(root: Path, clip_list: pd.DataFrame, list_path: Path) -> Scan:
    """Clips of a generic-layout root: every listed file that exists and is a video, or an audio
    file (with its face-image folder when ``face_path`` is given). Every file under ``root`` that
    is not a clip is a skipped row with its reason."""
    scan = Scan()
    used: set[str] = set()
    face_dirs: set[str] = set()
    for rec in clip_list.itertuples(index=False):
        rel = _rel(root, str(rec.path))
        used.add(rel)
        f = root / rel
        ext = os.path.splitext(rel)[1].lower()
        if not f.is_file():
            scan.skipped.append((rel, f"listed in {list_path.name} but not found"))
            continue
        size = f.stat().st_size
        if size == 0:
            scan.skipped.append((rel, "empty file"))
            continue
        face_dir, n_crops, kind = None, 0, ""
        if ext in VIDEO_EXTS:
            kind = "video"
        elif ext in AUDIO_EXTS:
            kind = "audio"
            if rec.face_path is not None:
                face_dir = _rel(root, str(rec.face_path))
                d = root / face_dir
                n_crops = (
                    sum(1 for e in os.scandir(d) if os.path.splitext(e.name)[1].lower()
                        in IMAGE_EXTS) if d.is_dir() else 0
                )  # fmt: skip
                if n_crops == 0:
                    scan.skipped.append((rel, f"face_path {face_dir}: no face images (jpg/png)"))
                    continue
                kind = "audio_crops"
                face_dirs.add(face_dir)
        else:
            scan.skipped.append(
                (rel, f"unsupported file type {ext or '(no extension)'}: not a video or audio")
            )
            continue
        scan.clips.append(
            {
                "identity": str(rec.identity),
                "video_id": str(rec.video_id),
                "utterance": str(rec.utterance),
                "media_path": rel,
                "media_kind": kind,
                "face_dir": face_dir,
                "n_face_crops": n_crops,
                "size_bytes": size,
            }
        )
    list_rel = _rel(root, str(list_path.resolve()))
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir != "." and any(
            str(d) in face_dirs for d in (Path(rel_dir), *Path(rel_dir).parents)
        ):
            continue  # a face-image folder of a listed clip
        for name in sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel not in used and rel != list_rel:
                scan.skipped.append((rel, f"not listed in the clip list {list_path.name}"))
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
    clip_list: pd.DataFrame | None = None
    if data.layout == "generic":
        clip_list = read_clip_list(cwd / data.meta)
        meta = generic_meta(clip_list)
    else:
        meta = read_meta(cwd / data.meta)
    if clip_list is not None:
        scan = scan_generic(root, clip_list, cwd / data.meta)
    elif data.layout == "voxceleb1":
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
