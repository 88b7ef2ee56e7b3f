"""Every on-disk table of the pipeline: its Arrow schema, version, sort key, and safe I/O.

One place owns the contract between stages. Each table is written with its name and version in
the Parquet metadata, rows sorted by its natural key, units in column names, and atomically
(temporary file, then rename). Readers check name and version and fail with the file's path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path
from pipeline.synth.people import FACE_PARAM_COLUMNS, VOICE_PARAM_COLUMNS

_META_NAME = b"voxface.table"
_META_VERSION = b"voxface.version"


@dataclass(frozen=True)
class TableSchema:
    """A named, versioned Arrow schema with the columns that order its rows."""

    name: str
    version: int
    schema: pa.Schema
    sort_by: tuple[str, ...]

    def with_metadata(self) -> pa.Schema:
        return self.schema.with_metadata(
            {_META_NAME: self.name.encode(), _META_VERSION: str(self.version).encode()}
        )


class SchemaError(ValueError):
    """A table on disk or in memory does not match its declared schema."""


SPLITS: tuple[str, ...] = ("train", "val", "test_unseen", "test_seen")

MANIFEST = TableSchema(
    name="manifest",
    version=1,
    schema=pa.schema(
        [
            pa.field("clip_key", pa.string(), nullable=False),  # <identity>/<video_id>/<utterance>
            pa.field("identity", pa.string(), nullable=False),
            pa.field("video_id", pa.string(), nullable=False),
            pa.field("utterance", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),  # one of SPLITS
            pa.field("gender", pa.string()),  # "m" / "f" / null
            pa.field("nationality", pa.string()),
            pa.field("media_path", pa.string(), nullable=False),  # relative to the dataset root
            pa.field(
                "media_kind", pa.string(), nullable=False
            ),  # "video" (mp4 + audio), "audio", "audio_crops" (Vox1)
            pa.field("face_dir", pa.string()),  # VoxCeleb1: folder of 1 fps face crops
            pa.field("n_face_crops", pa.int32(), nullable=False),
            pa.field("size_bytes", pa.int64(), nullable=False),
        ]
    ),
    sort_by=("clip_key",),
)

MANIFEST_SKIPPED = TableSchema(
    name="manifest_skipped",
    version=1,
    schema=pa.schema(
        [
            pa.field("path", pa.string(), nullable=False),
            pa.field("reason", pa.string(), nullable=False),
        ]
    ),
    sort_by=("path",),
)

SYNTH_IDENTITIES = TableSchema(
    name="synth_identities",
    version=2,
    schema=pa.schema(
        [
            pa.field("identity", pa.string(), nullable=False),
            pa.field("name", pa.string(), nullable=False),
            pa.field("gender", pa.string(), nullable=False),
            pa.field("age_years", pa.float64(), nullable=False),
            pa.field("nationality", pa.string(), nullable=False),
            pa.field("build", pa.float64(), nullable=False),
            pa.field("hair_style", pa.string(), nullable=False),
            pa.field("hair_darkness", pa.float64(), nullable=False),
            pa.field("hair_red", pa.float64(), nullable=False),
            pa.field("eye_color", pa.string(), nullable=False),
            pa.field("glasses", pa.bool_(), nullable=False),
            pa.field("makeup", pa.bool_(), nullable=False),
            pa.field("beard", pa.bool_(), nullable=False),
            pa.field("speech_rate", pa.float64(), nullable=False),
            pa.field("tilt_db", pa.float64(), nullable=False),
            *[
                pa.field(c, pa.float64(), nullable=False)
                for c in (*FACE_PARAM_COLUMNS, *VOICE_PARAM_COLUMNS)
            ],
        ]
    ),
    sort_by=("identity",),
)

SYNTH_CLIPS = TableSchema(
    name="synth_clips",
    version=1,
    schema=pa.schema(
        [
            pa.field("path", pa.string(), nullable=False),  # relative to the corpus root
            pa.field("identity", pa.string(), nullable=False),
            pa.field("video_id", pa.string(), nullable=False),
            pa.field("utterance", pa.int32(), nullable=False),
            pa.field("duration_s", pa.float64(), nullable=False),
            pa.field("f0_factor", pa.float64(), nullable=False),
            pa.field("n_frames", pa.int32(), nullable=False),
            pa.field("speech_fraction", pa.float64(), nullable=False),
            pa.field("speech_start_s", pa.list_(pa.float64()), nullable=False),
            pa.field("speech_end_s", pa.list_(pa.float64()), nullable=False),
            pa.field("mouth_open_mean", pa.float64(), nullable=False),
            *[
                pa.field(c, pa.float64(), nullable=False)
                for c in (
                    "light_x",
                    "light_y",
                    "light_z",
                    "light_gain",
                    "warmth",
                    "bg_top_r",
                    "bg_top_g",
                    "bg_top_b",
                    "bg_shade",
                    "cloth_r",
                    "cloth_g",
                    "cloth_b",
                    "zoom",
                    "tilt_rad",
                    "motion_px",
                    "camera_noise",
                    "noise_dbfs",
                    "level_dbfs",
                    "eq_low_db",
                )
            ],
            pa.field("render_seed", pa.int64(), nullable=False),
        ]
    ),
    sort_by=("path",),
)


FACE_FRAMES = TableSchema(
    name="face_frames",
    version=1,
    schema=pa.schema(
        [
            pa.field("clip_key", pa.string(), nullable=False),
            pa.field("frame_index", pa.int32(), nullable=False),  # index in the decoded video
            pa.field("time_s", pa.float64(), nullable=False),
            pa.field("box_px", pa.list_(pa.float32(), 4), nullable=False),  # x1 y1 x2 y2
            pa.field("landmarks_px", pa.list_(pa.float32(), 10), nullable=False),  # 5 (x, y)
            pa.field("prob", pa.float32(), nullable=False),
            pa.field("n_faces", pa.int16(), nullable=False),  # faces MTCNN found in the frame
            pa.field("crop_size_px", pa.int16(), nullable=False),
            pa.field("crop_jpeg", pa.binary(), nullable=False),
        ]
    ),
    sort_by=("clip_key", "frame_index"),
)

VOICE_FEATURES = TableSchema(
    name="voice_features",
    version=1,
    schema=pa.schema(
        [
            pa.field("clip_key", pa.string(), nullable=False),
            pa.field("sample_rate_hz", pa.int32(), nullable=False),
            pa.field("duration_s", pa.float64(), nullable=False),
            pa.field("speech_s", pa.float64(), nullable=False),
            pa.field("segment_start_s", pa.list_(pa.float64()), nullable=False),
            pa.field("segment_end_s", pa.list_(pa.float64()), nullable=False),
            pa.field("front_end", pa.string(), nullable=False),  # e.g. "fbank64"
            pa.field("hop_ms", pa.float32(), nullable=False),
            pa.field("n_frames", pa.int32(), nullable=False),
            pa.field("n_bins", pa.int16(), nullable=False),
            # float16 little-endian, row-major (n_frames, n_bins), speech frames only
            pa.field("features_f16", pa.binary(), nullable=False),
        ]
    ),
    sort_by=("clip_key",),
)


def features_of(row: pd.Series) -> np.ndarray:
    """Decode a VOICE_FEATURES row's ``features_f16`` into (n_frames, n_bins) float32.

    Here, beside the table's schema, rather than with the voice stage that writes it: the modules
    that read voice features (training pairs, embedding) then import neither decoding, VAD nor
    the shard machinery, and DVC does not rerun their stages when those change."""
    arr = np.frombuffer(row["features_f16"], dtype="<f2").astype(np.float32)
    return arr.reshape(int(row["n_frames"]), int(row["n_bins"]))


FAILURES = TableSchema(
    name="failures",
    version=1,
    schema=pa.schema(
        [
            pa.field("clip_key", pa.string(), nullable=False),
            pa.field("media_path", pa.string(), nullable=False),
            pa.field("reason", pa.string(), nullable=False),  # short category, e.g. "no_face"
            pa.field("error_type", pa.string(), nullable=False),
            pa.field("message", pa.string(), nullable=False),
        ]
    ),
    sort_by=("clip_key",),
)

# Evaluation trial lists (pipeline/evaluate/trials.py), one long table for every protocol of
# the field (:mod:`pipeline.evaluate.trials`). Every clip_key refers to a clip of the row's split.
TRIALS = TableSchema(
    name="trials",
    version=1,
    schema=pa.schema(
        [
            pa.field("split", pa.string(), nullable=False),  # "test_unseen" | "test_seen"
            # "match" (1:N, whose N = 2 prefix is 1:2) | "verify" | "retrieve" (gallery)
            pa.field("protocol", pa.string(), nullable=False),
            # "U" | "G" | "N" | "A" | "GNA" (A, GNA only with an age_group column); retrieve: "U"
            pa.field("constraint", pa.string(), nullable=False),
            # match: "v2f" | "f2v"; verify: "vf"; retrieve: "all" (one gallery, both directions)
            pa.field("direction", pa.string(), nullable=False),
            pa.field("trial", pa.int32(), nullable=False),  # 0-based index within its group
            # clip_key of the probe (match: modality per direction; verify: the voice clip;
            # retrieve: the gallery clip)
            pa.field("probe", pa.string(), nullable=False),
            # clip_keys of the other modality. match: true candidate first, then impostors of
            # distinct identities (length 2..K; the 1:N curve uses the first N); verify: the one
            # face clip; retrieve: empty
            pa.field("candidates", pa.list_(pa.string()), nullable=False),
            pa.field("label", pa.bool_()),  # verify: same identity; null for match / retrieve
            pa.field("seed", pa.int64(), nullable=False),  # generator seed; -1: imported list
            # pipeline.evaluate.trials.GENERATOR_VERSION; 0: imported list
            pa.field("generator_version", pa.int32(), nullable=False),
        ]
    ),
    sort_by=("split", "protocol", "constraint", "direction", "trial"),
)


# Per-trial outcomes of one scored model (stage evaluate@<method>-<seed>): what the identity
# bootstrap and the paired comparisons of pipeline/evaluate/stats.py resample. One row per match or
# verify trial of the TRIALS table (same key columns), with the probe's identity.
OUTCOMES = TableSchema(
    name="outcomes",
    version=1,
    schema=pa.schema(
        [
            pa.field("split", pa.string(), nullable=False),
            pa.field("protocol", pa.string(), nullable=False),  # "match" | "verify"
            pa.field("constraint", pa.string(), nullable=False),
            pa.field("direction", pa.string(), nullable=False),
            pa.field("trial", pa.int32(), nullable=False),
            pa.field("identity", pa.string(), nullable=False),  # the probe clip's identity
            # match: 1:2 credit (1 right, 0.5 tie, 0 wrong); verify: the cosine score
            pa.field("value", pa.float64(), nullable=False),
            pa.field("label", pa.bool_()),  # verify: same identity; null for match
        ]
    ),
    sort_by=("split", "protocol", "constraint", "direction", "trial"),
)


def to_table(frame: pd.DataFrame, spec: TableSchema) -> pa.Table:
    """Conform a frame to ``spec``: exact columns, cast types, sorted rows, schema metadata."""
    names = spec.schema.names
    missing = [c for c in names if c not in frame.columns]
    extra = [c for c in frame.columns if c not in names]
    if missing or extra:
        raise SchemaError(
            f"table {spec.name!r}: missing columns {missing}, unexpected columns {extra}"
        )
    for field in spec.schema:
        if not field.nullable and frame[field.name].isna().any():
            raise SchemaError(f"table {spec.name!r}: column {field.name!r} has nulls")
    ordered = frame[names].sort_values(list(spec.sort_by), kind="mergesort").reset_index(drop=True)
    try:
        table = pa.Table.from_pandas(ordered, schema=spec.schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as e:
        raise SchemaError(f"table {spec.name!r}: {e}") from e
    return table.replace_schema_metadata(spec.with_metadata().metadata)


def write_table(frame: pd.DataFrame, path: Path | str, spec: TableSchema) -> Path:
    """Validate and write ``frame`` as ``spec`` to ``path`` atomically; returns the path."""
    table = to_table(frame, spec)
    target = Path(path)
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return target


def merge_tables(parts: list[Path], path: Path | str, spec: TableSchema) -> Path:
    """Write the rows of the tables ``parts`` (each a ``spec`` table) as one table at ``path``:
    the bytes :func:`write_table` gives for their rows written at once (rows are sorted)."""
    frames = [read_table(p, spec) for p in parts]
    rows = [f for f in frames if len(f)] or frames[:1]
    return write_table(pd.concat(rows, ignore_index=True), path, spec)


def read_table(path: Path | str, spec: TableSchema) -> pd.DataFrame:
    """Read a table written by :func:`write_table`, checking its name and version."""
    p = Path(path)
    try:
        table = pq.read_table(p)
    except FileNotFoundError as e:
        raise SchemaError(f"{p}: not found") from e
    except (pa.ArrowInvalid, OSError) as e:
        raise SchemaError(f"{p}: not a readable Parquet file: {e}") from e
    meta = table.schema.metadata or {}
    name = meta.get(_META_NAME, b"").decode()
    version = meta.get(_META_VERSION, b"").decode()
    if name != spec.name or version != str(spec.version):
        raise SchemaError(
            f"{p}: holds table {name or '?'!r} v{version or '?'}, "
            f"expected {spec.name!r} v{spec.version}"
        )
    return table.to_pandas()
