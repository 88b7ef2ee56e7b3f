"""Evaluation trial lists: generated once per split from a seed, stored, reused by every method.

One long :data:`pipeline.schema.TRIALS` table holds every protocol of
the field (1:N matching, verification, retrieval; Nagrani et al. 2018) for each evaluated
split (``test_unseen`` = unseen-unheard, ``test_seen`` = seen-heard). A trial only ever uses clips
of its own split.

``match`` (1:N matching, directions ``v2f`` and ``f2v``, ``spec.n_match`` trials per split,
direction and constraint):

- The probe identity is drawn uniformly among the identities of the constraint's list (so
  identities with many clips do not dominate), then the probe clip uniformly among its clips.
- ``candidates[0]`` is the true candidate: a random clip of the probe's identity from a *different
  video* when the identity has one; else a different clip of the same video; else (the identity
  has a single clip) the probe's own clip, i.e. the other modality of the same recording.
- ``candidates[1:]`` are impostors: ``K - 1`` distinct identities other than the probe's (random
  order), one random clip each. Under a constraint every impostor shares the probe identity's
  attribute value(s): ``G`` gender, ``N`` nationality, ``A`` age_group, ``GNA`` all three. When an
  identity has fewer than ``K - 1`` such partners, its trials take all of them, so a trial has
  between 2 and ``K`` candidates: the number is the list's length. 1:2 accuracy uses the first
  two candidates and the 1:N curve the first N of the trials that have at least N.
- An identity with no partner under a constraint drops out of that constraint's list (probes,
  verification pairs) and is counted in the summary. A null attribute matches nothing, so an
  identity with unknown gender drops out of ``G`` and ``GNA``.

``verify`` (direction ``vf``, constraints as above, ``spec.n_verify`` pairs per split and
constraint, exactly half positive, in random order): ``probe`` is a voice clip and
``candidates == [face clip]``. A positive pair takes the face clip like a true candidate above
(different video when possible); a negative pair's face identity is a random partner of the voice
identity under the constraint. Voice identities are drawn uniformly among the list's identities.

``retrieve`` (constraint ``U``, direction ``all``): one row per clip of the split, in clip_key
order, with empty ``candidates``; the gallery of both directions is every clip of the split.

Determinism: the input is sorted by ``clip_key`` first (row order does not matter), and each
(split, protocol, direction, constraint) group draws from its own
``np.random.default_rng(np.random.SeedSequence([seed, split, protocol, direction, constraint]))``
with the fixed integer codes below, so adding a constraint (an ``age_group`` column) or a split
leaves the other groups' trials unchanged. Bump :data:`GENERATOR_VERSION` whenever the drawing
changes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.schema import TRIALS, read_table, to_table, write_table

GENERATOR_VERSION: int = 1
IMPORTED_SEED: int = -1  # ``seed`` of imported lists
IMPORTED_VERSION: int = 0  # ``generator_version`` of imported lists

REQUIRED_COLUMNS: tuple[str, ...] = (
    "clip_key",
    "identity",
    "video_id",
    "split",
    "gender",
    "nationality",
)

# Stable integer codes for the seed sequence: never renumber, only append.
_SPLIT_CODE = {"train": 0, "val": 1, "test_unseen": 2, "test_seen": 3}
_PROTOCOL_CODE = {"match": 0, "verify": 1}
_DIRECTION_CODE = {"v2f": 0, "f2v": 1, "vf": 2}
_CONSTRAINT_CODE = {"U": 0, "G": 1, "N": 2, "A": 3, "GNA": 4}
_CONSTRAINT_ATTRS: dict[str, tuple[str, ...]] = {
    "U": (),
    "G": ("gender",),
    "N": ("nationality",),
    "A": ("age_group",),
    "GNA": ("gender", "nationality", "age_group"),
}
MATCH_DIRECTIONS: tuple[str, ...] = ("v2f", "f2v")


@dataclass(frozen=True)
class TrialSpec:
    """How many trials to draw, and from which seed.

    ``n_match``: 1:N trials per (split, direction, constraint); ``n_verify``: verification pairs
    per (split, constraint), even (half positive); ``candidates``: K of 1:N (>= 2; 10 in the
    field); ``seed``: a non-negative integer.
    """

    n_match: int
    n_verify: int
    seed: int
    candidates: int = 10

    def __post_init__(self) -> None:
        if self.n_match < 1:
            raise ValueError(f"TrialSpec.n_match must be positive, got {self.n_match}")
        if self.n_verify < 2 or self.n_verify % 2:
            raise ValueError(
                f"TrialSpec.n_verify must be a positive even number (50/50 same/different), "
                f"got {self.n_verify}"
            )
        if self.candidates < 2:
            raise ValueError(f"TrialSpec.candidates must be >= 2, got {self.candidates}")
        if self.seed < 0:
            raise ValueError(f"TrialSpec.seed must be non-negative, got {self.seed}")


def constraints_for(clips: pd.DataFrame) -> tuple[str, ...]:
    """The constraints the input supports: U, G, N, plus A and GNA with an ``age_group`` column."""
    base = ("U", "G", "N")
    return (*base, "A", "GNA") if "age_group" in clips.columns else base


def _rng(
    seed: int, split: str, protocol: str, direction: str, constraint: str
) -> np.random.Generator:
    codes = [
        seed,
        _SPLIT_CODE[split],
        _PROTOCOL_CODE[protocol],
        _DIRECTION_CODE[direction],
        _CONSTRAINT_CODE[constraint],
    ]
    return np.random.default_rng(np.random.SeedSequence(codes))


class _Split:
    """Index of one split's clips: identities (sorted), their clips and videos."""

    def __init__(self, name: str, clips: pd.DataFrame, attrs: tuple[str, ...]) -> None:
        self.name = name
        self.keys: list[str] = clips["clip_key"].tolist()
        ident = clips["identity"].to_numpy()
        self.ids: list[str] = sorted(set(ident.tolist()))
        _, video_code = np.unique(
            (clips["identity"].astype(str) + "\x00" + clips["video_id"].astype(str)).to_numpy(),
            return_inverse=True,
        )
        self.video = video_code.astype(np.int64)
        self.clips_of: list[np.ndarray] = [np.flatnonzero(ident == k) for k in self.ids]
        first = clips.groupby("identity", sort=True).first()
        self.attr: dict[str, list[str | None]] = {
            a: [None if pd.isna(v) else str(v) for v in first.loc[self.ids, a]] for a in attrs
        }
        self.n_videos = int(len(np.unique(self.video)))

    def partners(self, constraint: str) -> list[np.ndarray]:
        """Per identity index: the other identity indices that satisfy ``constraint``."""
        n = len(self.ids)
        attrs = _CONSTRAINT_ATTRS[constraint]
        if not attrs:
            return [np.array([j for j in range(n) if j != i], dtype=np.int64) for i in range(n)]
        keys = [tuple(self.attr[a][i] for a in attrs) for i in range(n)]
        groups: dict[tuple[str | None, ...], list[int]] = {}
        for i, key in enumerate(keys):
            if None not in key:
                groups.setdefault(key, []).append(i)
        out = []
        for i, key in enumerate(keys):
            members = groups.get(key, []) if None not in key else []
            out.append(np.array([j for j in members if j != i], dtype=np.int64))
        return out

    def true_clip(self, ident: int, probe: int, rng: np.random.Generator) -> tuple[int, str]:
        """A clip of ``ident`` paired with ``probe``: other video, else other clip, else itself."""
        own = self.clips_of[ident]
        other_video = own[self.video[own] != self.video[probe]]
        if len(other_video):
            return int(other_video[rng.integers(len(other_video))]), "other_video"
        same_video = own[own != probe]
        if len(same_video):
            return int(same_video[rng.integers(len(same_video))]), "same_video"
        return probe, "own_clip"

    def any_clip(self, ident: int, rng: np.random.Generator) -> int:
        own = self.clips_of[ident]
        return int(own[rng.integers(len(own))])


def _check_input(clips: pd.DataFrame, splits: tuple[str, ...]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in clips.columns]
    if missing:
        raise ValueError(
            f"trial input lacks columns {missing}; has {list(clips.columns)} "
            f"(needs {list(REQUIRED_COLUMNS)}, optionally 'age_group')"
        )
    for c in ("clip_key", "identity", "video_id", "split"):
        if clips[c].isna().any():
            raise ValueError(f"trial input: column {c!r} has nulls")
    dup = clips["clip_key"][clips["clip_key"].duplicated()]
    if len(dup):
        raise ValueError(f"trial input: duplicate clip_key {dup.iloc[0]!r}")
    unknown = [s for s in splits if s not in _SPLIT_CODE]
    if unknown or len(set(splits)) != len(splits) or not splits:
        raise ValueError(f"splits {list(splits)}: expected distinct names from {list(_SPLIT_CODE)}")
    attrs = [a for a in ("gender", "nationality", "age_group") if a in clips.columns]
    varying = clips.groupby("identity")[attrs].nunique(dropna=False)
    bad = varying[(varying > 1).any(axis=1)]
    if len(bad):
        ident = bad.index[0]
        cols = [a for a in attrs if bad.loc[ident, a] > 1]
        raise ValueError(f"trial input: identity {ident!r} has several values of {cols}")
    if "test_unseen" in splits:
        unseen = set(clips.loc[clips["split"] == "test_unseen", "identity"])
        leak = sorted(unseen & set(clips.loc[clips["split"] != "test_unseen", "identity"]))
        if leak:
            raise ValueError(
                f"trial input: test_unseen identities also appear in other splits: {leak[:5]}"
            )
    for s in splits:
        n = clips.loc[clips["split"] == s, "identity"].nunique()
        if n < 2:
            raise ValueError(f"split {s!r} has {n} identities in the trial input; needs >= 2")


def _row(
    split: str,
    protocol: str,
    constraint: str,
    direction: str,
    trial: int,
    probe: str,
    candidates: list[str],
    label: bool | None,
) -> dict[str, Any]:
    return {
        "split": split,
        "protocol": protocol,
        "constraint": constraint,
        "direction": direction,
        "trial": trial,
        "probe": probe,
        "candidates": candidates,
        "label": label,
    }


def _match_rows(
    sp: _Split,
    constraint: str,
    direction: str,
    eligible: np.ndarray,
    partners: list[np.ndarray],
    spec: TrialSpec,
    stats: dict[str, int],
) -> list[dict[str, Any]]:
    rng = _rng(spec.seed, sp.name, "match", direction, constraint)
    rows = []
    for t in range(spec.n_match):
        ident = int(eligible[rng.integers(len(eligible))])
        probe = sp.any_clip(ident, rng)
        true, kind = sp.true_clip(ident, probe, rng)
        stats[f"true_{kind}"] += 1
        pool = partners[ident]
        k = min(spec.candidates - 1, len(pool))
        imp_ids = pool[rng.choice(len(pool), size=k, replace=False)]
        cands = [sp.keys[true]] + [sp.keys[sp.any_clip(int(j), rng)] for j in imp_ids]
        if len(cands) < spec.candidates:
            stats["short"] += 1
        stats["min_candidates"] = min(stats["min_candidates"], len(cands))
        rows.append(_row(sp.name, "match", constraint, direction, t, sp.keys[probe], cands, None))
    return rows


def _verify_rows(
    sp: _Split,
    constraint: str,
    eligible: np.ndarray,
    partners: list[np.ndarray],
    spec: TrialSpec,
) -> list[dict[str, Any]]:
    rng = _rng(spec.seed, sp.name, "verify", "vf", constraint)
    half = spec.n_verify // 2
    labels = rng.permutation(np.repeat([True, False], half))
    rows = []
    for t, same in enumerate(labels.tolist()):
        ident = int(eligible[rng.integers(len(eligible))])
        voice = sp.any_clip(ident, rng)
        if same:
            face, _ = sp.true_clip(ident, voice, rng)
        else:
            pool = partners[ident]
            face = sp.any_clip(int(pool[rng.integers(len(pool))]), rng)
        rows.append(
            _row(sp.name, "verify", constraint, "vf", t, sp.keys[voice], [sp.keys[face]], same)
        )
    return rows


def _finish(rows: list[dict[str, Any]], seed: int, version: int) -> pd.DataFrame:
    columns = ["split", "protocol", "constraint", "direction", "trial", "probe", "candidates"]
    frame = pd.DataFrame(rows, columns=[*columns, "label"])
    frame["seed"] = seed
    frame["generator_version"] = version
    return _normalize(to_table(frame, TRIALS).to_pandas())


def _normalize(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["candidates"] = [[str(c) for c in cands] for cands in out["candidates"]]
    return out


def generate_trials(
    clips: pd.DataFrame,
    spec: TrialSpec,
    splits: tuple[str, ...] = ("test_unseen", "test_seen"),
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Draw every trial list of ``splits`` from ``clips``; returns (TRIALS table, summary).

    ``clips``: one row per evaluable clip (each has a face and a voice embedding) with
    ``clip_key``, ``identity``, ``video_id``, ``split``, ``gender``, ``nationality`` (null
    allowed) and optionally ``age_group``; other columns are ignored. The summary (JSON-able)
    gives per split the identities, clips and videos, the retrieval gallery, and per constraint
    the identities kept and dropped, the match trials per direction (how many have fewer than
    K candidates, the fewest candidates, how the true candidate was found) and verify pairs.
    Raises ValueError for a missing column, a split with fewer than 2 identities, duplicate clip
    keys, an identity with conflicting attributes or test_unseen identities seen elsewhere.
    """
    _check_input(clips, splits)
    constraints = constraints_for(clips)
    attrs = tuple(a for a in ("gender", "nationality", "age_group") if a in clips.columns)
    ordered = clips.sort_values("clip_key", kind="mergesort").reset_index(drop=True)
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "seed": spec.seed,
        "candidates": spec.candidates,
        "n_match": spec.n_match,
        "n_verify": spec.n_verify,
        "splits": {},
    }
    for split in splits:
        part = ordered[ordered["split"] == split].reset_index(drop=True)
        sp = _Split(split, part, attrs)
        per: dict[str, Any] = {
            "identities": len(sp.ids),
            "clips": len(sp.keys),
            "videos": sp.n_videos,
            "retrieve": {"gallery_clips": len(sp.keys), "gallery_identities": len(sp.ids)},
            "constraints": {},
        }
        for i, key in enumerate(sp.keys):
            rows.append(_row(split, "retrieve", "U", "all", i, key, [], None))
        for constraint in constraints:
            partners = sp.partners(constraint)
            eligible = np.array([i for i, p in enumerate(partners) if len(p)], dtype=np.int64)
            entry: dict[str, Any] = {
                "identities": len(eligible),
                "identities_dropped": len(sp.ids) - len(eligible),
                "dropped": [sp.ids[i] for i, p in enumerate(partners) if not len(p)],
                "match": {},
                "verify_trials": 0,
            }
            per["constraints"][constraint] = entry
            if not len(eligible):
                continue
            for direction in MATCH_DIRECTIONS:
                stats = {
                    "true_other_video": 0,
                    "true_same_video": 0,
                    "true_own_clip": 0,
                    "short": 0,
                    "min_candidates": spec.candidates,
                }
                rows += _match_rows(sp, constraint, direction, eligible, partners, spec, stats)
                entry["match"][direction] = {
                    "trials": spec.n_match,
                    "trials_fewer_than_k_candidates": stats["short"],
                    "min_candidates": stats["min_candidates"],
                    "true_from_other_video": stats["true_other_video"],
                    "true_from_same_video": stats["true_same_video"],
                    "true_is_probe_clip": stats["true_own_clip"],
                }
            rows += _verify_rows(sp, constraint, eligible, partners, spec)
            entry["verify_trials"] = spec.n_verify
        summary["splits"][split] = per
    return _finish(rows, spec.seed, GENERATOR_VERSION), summary


def write_trials(path: Path | str, table: pd.DataFrame) -> Path:
    """Validate ``table`` against TRIALS and write it atomically to ``path``."""
    return write_table(table, path, TRIALS)


def read_trials(path: Path | str) -> pd.DataFrame:
    """Read a TRIALS table (``candidates`` as lists of str); ``seed``/``generator_version`` are
    columns on every row."""
    return _normalize(read_table(path, TRIALS))


# ---------------------------------------------------------------- published lists

_IMPORT_COLUMNS = {"match": ("probe", "positive", "negative"), "verify": ("voice", "face", "label")}
_LABELS = {"1": True, "true": True, "same": True, "0": False, "false": False, "different": False}


def import_trials(
    path: Path | str,
    kind: str,
    *,
    direction: str | None = None,
    split: str = "test_unseen",
    constraint: str = "U",
) -> pd.DataFrame:
    """Import a published trial list (CSV, UTF-8, comma-separated, header row) as a TRIALS table.

    - ``kind="match"``: a 1:2 list, header ``probe,positive,negative`` (clip keys), plus an
      optional ``direction`` column (``v2f``/``f2v``) that, when present, overrides the
      ``direction`` argument; one of the two is required.
    - ``kind="verify"``: header ``voice,face,label`` with label ``1``/``0``, ``true``/``false`` or
      ``same``/``different`` (case-insensitive).

    Header order is free; extra columns are ignored; values are stripped; CRLF is accepted. The
    rows get ``split`` and ``constraint`` from the arguments, ``trial`` numbers in file order
    (per direction), ``seed`` = -1 and ``generator_version`` = 0 (not generated here). Raises
    ValueError naming the file and line for a malformed file.
    """
    p = Path(path)
    if kind not in _IMPORT_COLUMNS:
        raise ValueError(f"{p}: unknown trial list kind {kind!r}; expected 'match' or 'verify'")
    if split not in _SPLIT_CODE:
        raise ValueError(f"{p}: unknown split {split!r}")
    if constraint not in _CONSTRAINT_CODE:
        raise ValueError(f"{p}: unknown constraint {constraint!r}")
    if direction is not None and direction not in MATCH_DIRECTIONS:
        raise ValueError(f"{p}: direction must be 'v2f' or 'f2v', got {direction!r}")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError as e:
        raise ValueError(f"{p}: trial list not found") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not UTF-8 text ({e})") from e
    reader = csv.reader(text.splitlines())
    header = [h.strip().lower() for h in next(reader, [])]
    need = list(_IMPORT_COLUMNS[kind])
    if kind == "match" and direction is None:
        need.append("direction")
    missing = [c for c in need if c not in header]
    if missing:
        raise ValueError(f"{p}: line 1: header {header} lacks columns {missing}")
    col = {h: i for i, h in enumerate(header)}
    rows: list[dict[str, Any]] = []
    counters: dict[str, int] = {}
    for values in reader:
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue
        if len(values) < len(header):
            raise ValueError(f"{p}: line {line}: {len(values)} fields, header has {len(header)}")
        rec = {h: values[i].strip() for h, i in col.items()}
        empty = [c for c in need if not rec[c]]
        if empty:
            raise ValueError(f"{p}: line {line}: empty {empty}")
        if kind == "match":
            d = rec["direction"] if rec.get("direction") else direction
            if d not in MATCH_DIRECTIONS:
                raise ValueError(f"{p}: line {line}: direction must be 'v2f' or 'f2v', got {d!r}")
            t = counters.get(d, 0)
            counters[d] = t + 1
            cands = [rec["positive"], rec["negative"]]
            rows.append(_row(split, "match", constraint, d, t, rec["probe"], cands, None))
        else:
            label = _LABELS.get(rec["label"].lower())
            if label is None:
                raise ValueError(
                    f"{p}: line {line}: label {rec['label']!r} is not one of 1/0, true/false, "
                    "same/different"
                )
            t = counters.get("vf", 0)
            counters["vf"] = t + 1
            rows.append(
                _row(split, "verify", constraint, "vf", t, rec["voice"], [rec["face"]], label)
            )
    if not rows:
        raise ValueError(f"{p}: no trials after the header")
    return _finish(rows, IMPORTED_SEED, IMPORTED_VERSION)
